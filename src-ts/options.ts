import { homedir, platform } from 'node:os'
import { join } from 'node:path'
import type { EntryTimes } from './backends/store'
import { now } from './clock'

export { now }

/** A duration: milliseconds, or a string such as `'500ms'`, `'90s'`, `'10m'`, `'1h'`, `'2d'`. */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h' | 'd'}`

/** How values are encoded for the disk and shared stores. */
export interface Serializer {
  encode(value: unknown): Uint8Array
  decode(bytes: Uint8Array): unknown
}

/** Per-call options of `memoized.with(...)`. */
export interface CallOptions {
  /** Entries older than this are recomputed for this call. */
  maxAge?: Duration
  /** Recompute and overwrite, ignoring any cached value. */
  refresh?: boolean
  /** Call the function directly; read and write nothing. */
  bypass?: boolean
}

/** Options of {@link memoize}. */
export interface MemoizeOptions<A extends unknown[] = unknown[]> {
  /**
   * Where entries live: `'memory'` (this thread, or every worker thread with `shared: true`),
   * `'disk'` (RocksDB; survives restarts; shared by processes), `'redis'` or `'sql'` (a server
   * shared by processes and machines; every call returns a Promise).
   * @default 'memory'
   */
  backend?: 'memory' | 'disk' | 'redis' | 'sql'
  /**
   * `redis`: `redis://[user:password@]host:port[/db]`, `rediss://` for TLS, or several node URLs
   * of a Redis Cluster. `sql`: `postgres://…`, `mysql://…` (MariaDB too) or `sqlite://path`.
   * @default redis: `CACHETTE_REDIS_URL` or `redis://127.0.0.1:6379`; sql: required
   */
  url?: string | readonly string[]
  /** `redis`: connect to `url` as a Redis Cluster (implied by several URLs). @default false */
  cluster?: boolean
  /** `redis`: prefix of every key. @default 'cachette:' */
  prefix?: string
  /** `sql`: table name (a plain identifier); locks live in `<table>_locks`. @default 'cachette' */
  table?: string
  /**
   * `redis`/`sql`: length of a calculation lock's lease. The computing process renews it every
   * third of this while it computes; if that process dies, waiters take over once it expires.
   * @default 5000
   */
  lease?: Duration
  /**
   * `redis`/`sql`: the longest wait for one operation on the server — connecting, a command or
   * query, taking a pooled connection — before the call goes on without the cache (computes,
   * uncached, with `onBackendError: 'fallback'`) or rejects with `ERR_BACKEND_UNAVAILABLE`
   * (`'throw'`). After 5 failures in a row (timeouts, refused or broken connections) the server
   * is skipped at once for 1 s (doubling up to 30 s while it stays down), then tried again.
   * A call waits for at most two operations before its computation, so the default keeps a call
   * on a stalled server within about a second of its computation.
   * @default 500
   * @example memoize(fn, { backend: 'redis', backendTimeout: '250ms' })
   */
  backendTimeout?: Duration
  /**
   * `redis` (one server) and `sql` (PostgreSQL): read hits over a connection of the calling JS
   * thread, one per server and thread, instead of through the core's shared connections.
   * `false` keeps every thread on the core's connections (fewer connections, slower hits).
   * @default true
   */
  directReads?: boolean
  /**
   * Disk directory. Created 0700 if missing.
   * @default the OS cache dir + `/cachette` (`$XDG_CACHE_HOME`, `~/Library/Caches`, `%LOCALAPPDATA%`)
   */
  path?: string
  /**
   * Key prefix on `disk` and with `shared: true`, where functions with the same namespace share
   * entries (a plain memory cache belongs to its function). Required there for anonymous functions.
   * @default the function's name
   */
  namespace?: string
  /** Entries older than this are stale (recomputed, or served once with `staleWhileRevalidate`). @default no expiry */
  ttl?: Duration
  /**
   * Serve a stale entry at once and refresh it in the background: `true` (forever) or the grace
   * window after `ttl` during which a stale value may still be served.
   * @default false
   */
  staleWhileRevalidate?: boolean | Duration
  /**
   * How long a caller waits for another caller's computation of the same key (another worker
   * thread or process) before computing itself.
   * @default 30000
   */
  lockTimeout?: Duration
  /** Most entries kept; least recently used go first (memory backends; bound `disk` with `ttl`). @default unbounded */
  maxEntries?: number
  /** Most bytes of encoded values kept (memory backends; plain memory encodes each stored value to measure it). @default unbounded */
  maxBytes?: number
  /** Values larger than this (encoded) are returned but not stored. @default unbounded */
  maxValueBytes?: number
  /**
   * Value encoding for the disk and shared stores. The default round-trips Date, Map, Set,
   * BigInt, typed arrays, Buffers and cycles.
   * @default 'msgpack'
   */
  serializer?: 'msgpack' | 'v8' | 'json' | Serializer
  /** Derives the cache key from the arguments; its result is keyed by value. */
  key?: (...args: A) => unknown
  /** Store `undefined` and `null` results. @default true */
  cacheUndefined?: boolean
  /** Memoized functions whose `clear()` also clears this one. */
  dependsOn?: ReadonlyArray<{ clear(): unknown; readonly dependents?: Set<{ clear(): unknown }> }>
  /**
   * When the store fails: `'fallback'` computes, returns and reports (`stats().errors`, one
   * process warning); `'throw'` throws a `CachetteError`.
   * @default 'fallback'
   */
  onBackendError?: 'fallback' | 'throw'
  /** Memory backend: one cache for every worker thread of the process, held off the V8 heap. @default false */
  shared?: boolean
  /**
   * Disk: when `flush()` resolves, writes survive a `kill -9` (`'process'`) or a power loss (`'sync'`).
   * @default 'process'
   */
  durability?: 'process' | 'sync'
  /**
   * `disk`, `redis` and `sql`: a secret (a string or bytes, at least 32 bytes) with which every
   * entry written carries a keyed BLAKE3 MAC over its namespace, key, times and value. An entry
   * whose MAC is missing or wrong (forged or altered by another writer of the server or
   * directory who lacks the secret, copied from another key, or written without it) reads as a
   * miss, is counted in `stats().errors` and is overwritten by the next computed value. It does
   * not encrypt: values stay readable to whoever can read the store. Every process using a
   * namespace needs the same secret.
   * @default none (entries carry only a checksum)
   * @example
   * ```ts
   * memoize(fn, { backend: 'redis', integrityKey: process.env.CACHE_MAC_KEY }) // e.g. crypto.randomBytes(32).toString('base64')
   * ```
   */
  integrityKey?: string | Uint8Array
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/**
 * Parses a {@link Duration} into milliseconds.
 * @throws TypeError with the option's name when the value is not a non-negative duration.
 */
export function toMs(value: unknown, name: string): number {
  if (typeof value === 'number') {
    if (Number.isFinite(value) && value >= 0) return value
  } else if (typeof value === 'string') {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value.trim())
    if (m) return Number(m[1]) * UNITS[m[2]]
  }
  throw new TypeError(`${name} must be a non-negative number of ms or a string like '90s', '10m', '1h'`)
}

function positiveInt(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw new TypeError(`${name} must be a positive integer if specified`)
  }
  return value
}

/** The default disk directory of this platform. */
export function defaultCacheDir(): string {
  const env = process.env
  if (platform() === 'win32') return join(env.LOCALAPPDATA || join(homedir(), 'AppData', 'Local'), 'cachette')
  if (platform() === 'darwin') return join(homedir(), 'Library', 'Caches', 'cachette')
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'cachette')
}

/** Options after validation, with defaults applied. */
export interface ResolvedOptions {
  backend: 'memory' | 'disk' | 'redis' | 'sql'
  urls: string[]
  cluster: boolean
  /** Redis key prefix, or the SQL table. */
  prefix: string
  lease: number
  /** Longest wait for one operation on a `redis` or `sql` server, ms. */
  backendTimeout: number
  directReads: boolean
  path: string
  namespace: string
  ttl: number
  grace: number
  lockTimeout: number
  maxEntries: number | undefined
  maxBytes: number | undefined
  maxValueBytes: number | undefined
  serializer: 'msgpack' | 'v8' | 'json' | Serializer
  key: ((...args: never[]) => unknown) | undefined
  cacheUndefined: boolean
  onBackendError: 'fallback' | 'throw'
  shared: boolean
  durability: 'process' | 'sync'
  /** The `integrityKey` secret as bytes. */
  integrityKey: Buffer | undefined
}

const KNOWN = new Set([
  'backend',
  'path',
  'namespace',
  'ttl',
  'staleWhileRevalidate',
  'lockTimeout',
  'maxEntries',
  'maxBytes',
  'maxValueBytes',
  'serializer',
  'key',
  'cacheUndefined',
  'dependsOn',
  'onBackendError',
  'shared',
  'durability',
  'url',
  'cluster',
  'prefix',
  'table',
  'lease',
  'backendTimeout',
  'directReads',
  'integrityKey',
])

/** Bytes an `integrityKey` needs at least (the core refuses shorter ones too). */
const MIN_INTEGRITY_KEY_BYTES = 32

function resolveIntegrityKey(backend: ResolvedOptions['backend'], shared: boolean, key: unknown): Buffer | undefined {
  if (key === undefined) return undefined
  if (backend === 'memory' || shared) {
    throw new TypeError("integrityKey applies to backends 'disk', 'redis' and 'sql'")
  }
  const bytes =
    typeof key === 'string'
      ? Buffer.from(key, 'utf8')
      : key instanceof Uint8Array
        ? Buffer.from(key.buffer, key.byteOffset, key.byteLength)
        : undefined
  if (bytes === undefined || bytes.length < MIN_INTEGRITY_KEY_BYTES) {
    throw new TypeError(
      `integrityKey must be a string or Uint8Array of at least ${MIN_INTEGRITY_KEY_BYTES} bytes (a random secret, such as crypto.randomBytes(32))`,
    )
  }
  return Buffer.from(bytes)
}

const TABLE = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/**
 * The default `backendTimeout`, ms: a call's path holds at most two operations on the server
 * before its computation (a read, then the lease), so a stalled server costs a call about a
 * second at most; a live server answers in well under a millisecond to a few ms.
 */
export const DEFAULT_BACKEND_TIMEOUT = 500

function resolveServer(backend: 'redis' | 'sql', opts: MemoizeOptions<never[]>) {
  const raw =
    opts.url ?? (backend === 'redis' ? (process.env.CACHETTE_REDIS_URL ?? 'redis://127.0.0.1:6379') : undefined)
  if (raw === undefined) throw new TypeError("backend 'sql' needs a url: postgres://…, mysql://… or sqlite://path")
  const urls = typeof raw === 'string' ? [raw] : Array.isArray(raw) ? [...(raw as string[])] : []
  if (urls.length === 0 || urls.some((u) => typeof u !== 'string' || !u.includes('://'))) {
    throw new TypeError('url must be a URL string (or, for a Redis Cluster, an array of them)')
  }
  const schemes =
    backend === 'redis'
      ? ['redis', 'rediss', 'valkey', 'valkeys']
      : ['postgres', 'postgresql', 'mysql', 'mariadb', 'sqlite']
  for (const u of urls) {
    const scheme = u.slice(0, u.indexOf('://')).toLowerCase()
    if (!schemes.includes(scheme)) {
      throw new TypeError(`url of backend '${backend}' must start with ${schemes.map((x) => x + '://').join(', ')}`)
    }
  }
  if (backend === 'sql' && urls.length > 1) throw new TypeError("backend 'sql' takes one url")
  if (opts.cluster !== undefined && typeof opts.cluster !== 'boolean')
    throw new TypeError('cluster must be a boolean if specified')
  if (backend === 'sql' && (opts.cluster !== undefined || opts.prefix !== undefined)) {
    throw new TypeError("cluster and prefix apply to backend 'redis'; backend 'sql' takes a table")
  }
  if (backend === 'redis' && opts.table !== undefined) throw new TypeError("table applies to backend 'sql'")
  let prefix: string
  if (backend === 'redis') {
    prefix = opts.prefix ?? 'cachette:'
    if (typeof prefix !== 'string' || /[{}]/.test(prefix)) {
      throw new TypeError('prefix must be a string without { or } (they mark Redis Cluster hash tags)')
    }
    // Keys are the prefix's UTF-8 bytes: a lone surrogate would become U+FFFD, and two prefixes
    // differing only there would share keys.
    if (LONE_SURROGATE.test(prefix)) {
      throw new TypeError('prefix must be well-formed Unicode (a lone surrogate cannot be written to Redis)')
    }
  } else {
    prefix = opts.table ?? 'cachette'
    if (typeof prefix !== 'string' || !TABLE.test(prefix)) {
      throw new TypeError('table must be a plain SQL identifier: a letter or _, then letters, digits or _ (at most 48)')
    }
  }
  const lease = opts.lease === undefined ? 5000 : toMs(opts.lease, 'lease')
  if (lease < 100) throw new TypeError('lease must be at least 100 ms')
  const backendTimeout =
    opts.backendTimeout === undefined ? DEFAULT_BACKEND_TIMEOUT : toMs(opts.backendTimeout, 'backendTimeout')
  if (backendTimeout < 1) throw new TypeError('backendTimeout must be at least 1 ms')
  if (opts.directReads !== undefined && typeof opts.directReads !== 'boolean')
    throw new TypeError('directReads must be a boolean if specified')
  const directReads = opts.directReads !== false
  return { urls, cluster: opts.cluster === true || urls.length > 1, prefix, lease, backendTimeout, directReads }
}

/**
 * Validates options once, at `memoize()` time, so misuse throws there and not at the first call.
 * @throws TypeError naming the option and what it must be.
 */
export function resolveOptions(fnName: string, opts: MemoizeOptions<never[]>): ResolvedOptions {
  if (opts === null || typeof opts !== 'object') throw new TypeError('options must be an object if specified')
  for (const k of Object.keys(opts)) {
    if (!KNOWN.has(k)) {
      const later = ['tags'].includes(k)
      throw new TypeError(`unknown option '${k}'${later ? ' (not available in this version)' : ''}`)
    }
  }
  const backend = opts.backend ?? 'memory'
  if (backend !== 'memory' && backend !== 'disk' && backend !== 'redis' && backend !== 'sql') {
    throw new TypeError(`backend must be 'memory', 'disk', 'redis' or 'sql' (got ${JSON.stringify(backend)})`)
  }
  const remote = backend === 'redis' || backend === 'sql'
  const server = remote
    ? resolveServer(backend, opts)
    : { urls: [], cluster: false, prefix: '', lease: 5000, backendTimeout: DEFAULT_BACKEND_TIMEOUT, directReads: false }
  if (!remote) {
    for (const k of ['url', 'cluster', 'prefix', 'table', 'lease', 'backendTimeout', 'directReads'] as const) {
      if (opts[k] !== undefined) throw new TypeError(`${k} applies to backends 'redis' and 'sql'`)
    }
  }
  if (opts.shared !== undefined && typeof opts.shared !== 'boolean')
    throw new TypeError('shared must be a boolean if specified')
  const shared = opts.shared === true
  if (shared && backend !== 'memory') throw new TypeError("shared applies to backend 'memory' only")
  if (opts.namespace !== undefined && (typeof opts.namespace !== 'string' || opts.namespace.length === 0)) {
    throw new TypeError('namespace must be a non-empty string if specified')
  }
  const namespace = opts.namespace ?? fnName
  if (!namespace && (backend !== 'memory' || shared)) {
    throw new TypeError(
      `an anonymous function on ${shared ? 'a shared memory cache' : `backend '${backend}'`} needs a namespace option: entries of unnamed functions would collide`,
    )
  }
  if (opts.path !== undefined && (typeof opts.path !== 'string' || opts.path.length === 0)) {
    throw new TypeError('path must be a non-empty string if specified')
  }
  if (backend !== 'memory' && (opts.maxEntries !== undefined || opts.maxBytes !== undefined)) {
    throw new TypeError(`maxEntries and maxBytes bound the memory backend; bound backend '${backend}' with a ttl`)
  }
  const ttl = opts.ttl === undefined ? Infinity : toMs(opts.ttl, 'ttl')
  if (ttl === 0) throw new TypeError('ttl must be greater than 0 if specified')
  const swr = opts.staleWhileRevalidate
  let grace = 0
  if (swr === true) grace = Infinity
  else if (swr !== undefined && swr !== false) grace = toMs(swr, 'staleWhileRevalidate')
  if (grace > 0 && ttl === Infinity)
    throw new TypeError('staleWhileRevalidate needs a ttl: entries without one never go stale')
  const serializer = opts.serializer ?? 'msgpack'
  if (
    !['msgpack', 'v8', 'json'].includes(serializer as string) &&
    !(
      typeof serializer === 'object' &&
      typeof serializer.encode === 'function' &&
      typeof serializer.decode === 'function'
    )
  ) {
    throw new TypeError("serializer must be 'msgpack', 'v8', 'json' or an object with encode and decode functions")
  }
  if (opts.key !== undefined && typeof opts.key !== 'function')
    throw new TypeError('key must be a function if specified')
  if (opts.cacheUndefined !== undefined && typeof opts.cacheUndefined !== 'boolean') {
    throw new TypeError('cacheUndefined must be a boolean if specified')
  }
  const onBackendError = opts.onBackendError ?? 'fallback'
  if (onBackendError !== 'fallback' && onBackendError !== 'throw') {
    throw new TypeError("onBackendError must be 'fallback' or 'throw'")
  }
  const durability = opts.durability ?? 'process'
  if (durability !== 'process' && durability !== 'sync') throw new TypeError("durability must be 'process' or 'sync'")
  if (opts.dependsOn !== undefined) {
    if (!Array.isArray(opts.dependsOn) || opts.dependsOn.some((d) => typeof d?.clear !== 'function')) {
      throw new TypeError('dependsOn must be an array of memoized functions')
    }
  }
  return {
    backend,
    ...server,
    path: opts.path ?? defaultCacheDir(),
    namespace,
    ttl,
    grace,
    lockTimeout: opts.lockTimeout === undefined ? 30_000 : toMs(opts.lockTimeout, 'lockTimeout'),
    maxEntries: positiveInt(opts.maxEntries, 'maxEntries'),
    maxBytes: positiveInt(opts.maxBytes, 'maxBytes'),
    maxValueBytes: positiveInt(opts.maxValueBytes, 'maxValueBytes'),
    serializer,
    key: opts.key,
    cacheUndefined: opts.cacheUndefined ?? true,
    onBackendError,
    shared,
    durability,
    integrityKey: resolveIntegrityKey(backend, shared, opts.integrityKey),
  }
}

/** The one object {@link entryTimes} fills (a write runs on every miss: no allocation). */
const times: EntryTimes = { staleAt: -1, expires: -1, now: 0 }

/**
 * Times of an entry stored now, as stores take them: stale and expiry times in ms since the
 * epoch (-1 for never), and now. A reused object: valid until the next call.
 */
export function entryTimes(o: Pick<ResolvedOptions, 'ttl' | 'grace'>): EntryTimes {
  const t = now()
  times.staleAt = staleAtOf(o, t)
  times.expires = expiresOf(o, t)
  times.now = t
  return times
}

/** When an entry stored at `now` turns stale (ms since the epoch), or -1 for never. */
const staleAtOf = (o: Pick<ResolvedOptions, 'ttl'>, now: number): number => (o.ttl === Infinity ? -1 : now + o.ttl)

/** When an entry stored at `now` expires (ms since the epoch), or -1 for never. */
const expiresOf = (o: Pick<ResolvedOptions, 'ttl' | 'grace'>, now: number): number =>
  o.ttl === Infinity || o.grace === Infinity ? -1 : now + o.ttl + o.grace
