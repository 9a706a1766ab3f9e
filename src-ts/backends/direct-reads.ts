import { readFileSync } from 'node:fs'
import { rootCertificates } from 'node:tls'
import { threadId } from 'node:worker_threads'
import type { Direct } from '../native'
import { now } from '../clock'
import { CachetteError } from '../errors'

/*
 * Direct reads: the hit path of the `redis` and `sql` (PostgreSQL) stores, read over a connection
 * of this JS thread, made by `ioredis` or `pg` when the application has them installed (optional
 * peer dependencies), instead of through the core's I/O thread. A hit then costs what the
 * client's own GET or SELECT costs, plus the core's check of the entry and the decoding.
 *
 * A lane never decides anything: whenever it cannot answer (no client library, not connected
 * yet, the connection lost or refused, an error) a read answers `undefined` and the store asks
 * the core, which reports failures as every other operation does. A read the server leaves
 * unanswered for `backendTimeout` fails instead (asking the core would double the wait): the
 * lane drops its connection and stays off for a while (1 s, doubling up to 30 s while its
 * server stays silent), so meanwhile reads go through the core, whose breaker fails them at
 * once while the server is known down.
 */

/** A read's answer: the bytes stored, `null` when absent, `undefined` when the core must be asked. */
export type Answer = Buffer | null | undefined

/** How this thread reads one namespace's entries itself. */
export interface DirectReads {
  /** The stored bytes of the key whose digest starts `io`, or `undefined`: ask the core. */
  read(io: Buffer): Promise<Answer> | undefined
  close(): void
}

/** How long after a lost connection a lane stays off. */
const RETRY_MS = 1000
/** The longest a lane stays off after reads its server left unanswered. */
const SILENT_RETRY_MAX_MS = 30_000
/** How long after a refused login, database or certificate a lane stays off. */
const REFUSED_RETRY_MS = 30_000
/** The name a lane's connection shows on the server (Redis `CLIENT LIST`, PostgreSQL `application_name`). */
export const CLIENT_NAME = `cachette-direct-${process.pid}-${threadId}`

/** A URL with its password replaced, as the core shows servers in errors. */
export function redact(url: string): string {
  const i = url.indexOf('://')
  const at = url.lastIndexOf('@')
  if (i < 0 || at < 0) return url
  const auth = url.slice(i + 3, at)
  const colon = auth.indexOf(':')
  return colon < 0 ? url : `${url.slice(0, i + 3)}${auth.slice(0, colon)}:***${url.slice(at)}`
}

/** An optional peer dependency, or null when the application does not have it. */
function optional<T>(name: string): T | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(name) as T
  } catch {
    return null
  }
}

/** The CAs a TLS lane trusts: Node's, plus the file `SSL_CERT_FILE` names, as the core does. */
function trusted(): string[] | undefined {
  const file = process.env.SSL_CERT_FILE
  if (file === undefined || file === '') return undefined
  try {
    return [...rootCertificates, readFileSync(file, 'utf8')]
  } catch {
    return undefined
  }
}

interface Socketish {
  ref(): void
  unref(): void
}

/**
 * One connection of this thread to one server, shared by every namespace on it. Its socket holds
 * the event loop only while a read is pending, so an idle process exits.
 */
abstract class Lane {
  users = 0
  private retryAt = 0
  /** How long the lane stays off after its next unanswered read. */
  private silentRest = RETRY_MS
  /** Bumped by each unanswered read: requests sent before it fail rather than ask the core. */
  private silences = 0
  /** The reads in flight, oldest first. */
  private readonly inflight = new Set<InFlight>()
  private watchdog: ReturnType<typeof setInterval> | null = null

  constructor(
    /** The server as errors show it (no password). */
    private readonly shown: string,
    /** How long a read waits for its answer (`backendTimeout`). */
    protected readonly timeoutMs: number,
  ) {}

  protected abstract socket(): Socketish | undefined
  /** Connected and logged in. */
  protected abstract get ready(): boolean
  /** Starts connecting (if not already). */
  protected abstract connect(): void
  /** Drops the connection (the next read after the lane's rest connects anew). */
  protected abstract disconnect(): void
  abstract close(): void

  /** Whether the connection can take a request now; if not, connects (once its rest is over). */
  protected available(): boolean {
    if (this.ready) return true
    if (now() >= this.retryAt) this.connect()
    return false
  }

  /**
   * Runs `send` on a ready connection: its answer; `undefined` (ask the core) while there is no
   * connection or when it fails; a rejection when the server leaves it unanswered for `timeoutMs`.
   */
  protected request<T>(send: () => Promise<T>): Promise<T | undefined> | undefined {
    if (!this.available()) return undefined
    if (this.inflight.size === 0) this.socket()?.ref()
    const silences = this.silences
    return new Promise<T | undefined>((resolve, reject) => {
      const r: InFlight = { due: performance.now() + this.timeoutMs, fail: () => end() && reject(this.silenceError()) }
      const end = (): boolean => {
        if (!this.inflight.delete(r)) return false
        if (this.inflight.size === 0) this.socket()?.unref()
        return true
      }
      this.inflight.add(r)
      this.watch()
      send().then(
        (a) => {
          if (!end()) return
          this.silentRest = RETRY_MS
          resolve(a)
        },
        () => {
          // Cut short by a silence seen meanwhile: this read waited as long, it fails too.
          if (end()) return this.silences === silences ? resolve(undefined) : reject(this.silenceError())
        },
      )
    })
  }

  /**
   * Fails the reads unanswered for `timeoutMs`: one timer per lane, ticking every eighth of it
   * while reads are in flight (a timer per read would cost every hit one), stopped after a tick
   * with none. A read thus fails between `timeoutMs` and an eighth more.
   */
  private watch(): void {
    if (this.watchdog !== null) return
    const w = setInterval(
      () => {
        if (this.inflight.size === 0) {
          clearInterval(w)
          this.watchdog = null
          return
        }
        const t = performance.now()
        const late: InFlight[] = []
        for (const r of this.inflight) {
          if (r.due > t) break
          late.push(r)
        }
        if (late.length === 0) return
        this.silent()
        for (const r of late) r.fail()
      },
      Math.max(1, this.timeoutMs / 8),
    )
    w.unref()
    this.watchdog = w
  }

  /** A read went unanswered: drop the connection and stay off, longer each time in a row. */
  private silent(): void {
    this.silences++
    this.retryAt = now() + this.silentRest
    this.silentRest = Math.min(this.silentRest * 2, SILENT_RETRY_MAX_MS)
    this.disconnect()
  }

  private silenceError(): CachetteError {
    return new CachetteError(
      'ERR_BACKEND_UNAVAILABLE',
      `cache server ${this.shown} is unavailable: no answer within ${this.timeoutMs} ms (backendTimeout)`,
    )
  }

  /** The connection went: stay off for a while (longer when the server refused us). */
  protected rest(refused: boolean): void {
    this.retryAt = Math.max(this.retryAt, now() + (refused ? REFUSED_RETRY_MS : RETRY_MS))
  }

  protected idle(): void {
    if (this.inflight.size === 0) this.socket()?.unref()
  }
}

/** A read of a lane in flight: when it is due, and how it fails then. */
interface InFlight {
  due: number
  fail(): void
}

/** What a lane uses of ioredis (typed here: the library is an optional peer dependency). */
interface RedisClient {
  status: string
  connect(): Promise<void>
  getBuffer(key: string): Promise<Buffer | null>
  mgetBuffer(keys: string[]): Promise<(Buffer | null)[]>
  disconnect(): void
  on(event: string, listener: (e: Error) => void): void
}
type IORedis = new (url: string, options: object) => RedisClient

/**
 * A lane to one Redis server. The reads of one turn of the event loop (callers in flight
 * together) go as one `MGET`: one command to write and one reply to parse instead of one each.
 */
class RedisLane extends Lane {
  private readonly client: RedisClient
  private keys: string[] = []
  private answers: { resolve(a: Answer): void; reject(e: unknown): void }[] = []

  constructor(Redis: IORedis, url: string, timeoutMs: number) {
    super(redact(url), timeoutMs)
    const tls = /^(rediss|valkeys):/i.test(url)
    this.client = new Redis(url.replace(/^valkey/i, 'redis'), {
      lazyConnect: true,
      // The lane batches a turn's reads into one MGET itself: each is written at once.
      enableAutoPipelining: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      // Reads are bounded by the lane itself (`request`); connecting happens off the call path.
      connectTimeout: timeoutMs,
      connectionName: CLIENT_NAME,
      disableClientInfo: true,
      // Reconnecting is the next read's business (`connect`), so no timer holds the event loop.
      retryStrategy: () => null,
      ...(tls ? { tls: { ca: trusted() } } : {}),
    })
    this.client.on('error', (e: Error) =>
      this.rest(/NOAUTH|WRONGPASS|NOPERM|ERR AUTH|DB index|certificate|CERT/i.test(e.message)),
    )
    this.client.on('ready', () => this.idle())
  }

  protected socket(): Socketish | undefined {
    return (this.client as unknown as { stream?: Socketish }).stream
  }

  protected get ready(): boolean {
    return this.client.status === 'ready'
  }

  protected connect(): void {
    const s = this.client.status
    if (s === 'wait' || s === 'end' || s === 'close') this.client.connect().catch(() => undefined)
  }

  protected disconnect(): void {
    this.client.disconnect()
  }

  get(key: string): Promise<Answer> | undefined {
    if (!this.available()) return undefined
    if (this.keys.length === 0) queueMicrotask(() => this.send())
    this.keys.push(key)
    return new Promise<Answer>((resolve, reject) => this.answers.push({ resolve, reject }))
  }

  /** Sends the reads gathered so far: a GET for one, an MGET for several. */
  private send(): void {
    const { keys, answers } = this
    this.keys = []
    this.answers = []
    const sent = this.request(() =>
      keys.length === 1 ? this.client.getBuffer(keys[0]).then((b) => [b]) : this.client.mgetBuffer(keys),
    ) as Promise<(Buffer | null)[] | undefined> | undefined
    if (sent === undefined) return answers.forEach((a) => a.resolve(undefined))
    sent.then(
      (values) => answers.forEach((a, i) => a.resolve(values === undefined ? undefined : (values[i] ?? null))),
      (e: unknown) => answers.forEach((a) => a.reject(e)),
    )
  }

  close(): void {
    this.client.disconnect()
  }
}

/** What a lane uses of pg (typed here: the library is an optional peer dependency). */
interface PgClient {
  connect(): Promise<void>
  query(q: { name: string; text: string; values: unknown[]; rowMode: 'array' }): Promise<{
    rows: unknown[][]
  }>
  end(): Promise<void>
  on(event: string, listener: (e?: Error) => void): void
}
interface Pg {
  Client: new (config: object) => PgClient
}

/** How a PostgreSQL URL's `sslmode` maps onto pg: null when the lane leaves the URL to the core. */
function pgTls(u: URL): { ssl: false | { rejectUnauthorized: false; ca?: string[] }; fallback: boolean } | null {
  const mode = u.searchParams.get('sslmode') ?? process.env.PGSSLMODE ?? 'prefer'
  for (const k of u.searchParams.keys()) if (k !== 'sslmode') return null
  if (mode === 'disable') return { ssl: false, fallback: false }
  // As libpq's prefer and require: encrypted, the certificate not checked (verify-* stays with the core).
  const ssl = { rejectUnauthorized: false as const, ca: trusted() }
  if (mode === 'allow' || mode === 'prefer') return { ssl, fallback: true }
  if (mode === 'require') return { ssl, fallback: false }
  return null
}

class PgLane extends Lane {
  private client: PgClient | null = null
  /** The last query sent: pg runs one at a time, so each waits for the one before. */
  private last: Promise<unknown> = Promise.resolve()
  private up = false
  private plain = false

  constructor(
    private readonly pg: Pg,
    private readonly url: string,
    private readonly tls: { ssl: false | object; fallback: boolean },
    timeoutMs: number,
  ) {
    super(redact(url), timeoutMs)
  }

  protected socket(): Socketish | undefined {
    return (this.client as unknown as { connection?: { stream?: Socketish } } | null)?.connection?.stream
  }

  protected get ready(): boolean {
    return this.up
  }

  protected connect(): void {
    if (this.client !== null) return
    const u = new URL(this.url)
    u.search = ''
    let c: PgClient
    try {
      c = new this.pg.Client({
        connectionString: u.toString(),
        ssl: this.plain ? false : this.tls.ssl,
        application_name: CLIENT_NAME,
        // Reads are bounded by the lane itself (`request`), from when they are asked (pg runs
        // them one at a time); connecting happens off the call path.
        connectionTimeoutMillis: this.timeoutMs,
      })
    } catch {
      return this.rest(true) // a URL pg cannot take: the core reads it
    }
    this.client = c
    const lost = (e?: Error) => {
      if (this.client !== c) return
      this.client = null
      this.up = false
      c.end().catch(() => undefined)
      const noTls = e !== undefined && /does not support SSL/i.test(e.message)
      if (noTls && this.tls.fallback && !this.plain) {
        this.plain = true // libpq's prefer: a server without TLS is read in the clear
        return
      }
      this.rest(e !== undefined && /password|authentication|does not exist|SSL|certificate/i.test(e.message))
    }
    c.on('error', (e?: Error) => lost(e))
    c.on('end', () => lost())
    c.connect().then(
      () => {
        if (this.client !== c) return
        this.up = true
        this.idle()
      },
      (e: Error) => lost(e),
    )
  }

  get(name: string, text: string, ns: Buffer, key: Buffer): Promise<Answer> | undefined {
    return this.request(() => {
      const c = this.client!
      const q = this.last.then(() => c.query({ name, text, values: [ns, key], rowMode: 'array' }))
      this.last = q.catch(() => undefined)
      return q.then((r) => (r.rows.length === 0 ? null : (r.rows[0][0] as Buffer)))
    })
  }

  protected disconnect(): void {
    this.close()
  }

  close(): void {
    const c = this.client
    this.client = null
    this.up = false
    this.last = Promise.resolve()
    c?.end().catch(() => undefined)
  }
}

/** This thread's lanes, by server, shared by the namespaces that read through them. */
const lanes = new Map<string, Lane>()

function laneFor<L extends Lane>(id: string, make: () => L | null): L | null {
  let lane = lanes.get(id) as L | undefined
  if (lane === undefined) {
    const made = make()
    if (made === null) return null
    lanes.set(id, (lane = made))
  }
  lane.users++
  return lane
}

function releaser(id: string, lane: Lane): () => void {
  let released = false
  return () => {
    if (released) return
    released = true
    if (--lane.users > 0) return
    lanes.delete(id)
    lane.close()
  }
}

/** Statement names by query text: one prepared statement per table and connection. */
const statements = new Map<string, string>()

/**
 * How this thread may read `d`'s entries itself, or null (the core reads them all); a read waits
 * at most `timeoutMs` for its answer.
 */
export function directReads(d: Direct | null, timeoutMs: number): DirectReads | null {
  if (d === null) return null
  let u: URL
  try {
    u = new URL(d.url)
  } catch {
    return null
  }
  if (u.hash !== '') return null
  const id = `${d.kind} ${timeoutMs} ${d.url}`
  if (d.kind === 'redis') {
    if (u.search !== '') return null
    const Redis = optional<{ default: IORedis }>('ioredis')
    const lane = Redis && laneFor(id, () => new RedisLane(Redis.default, d.url, timeoutMs))
    if (!lane) return null
    const prefix = d.keyPrefix!
    return { read: (io) => lane.get(prefix + io.toString('hex', 0, 16)), close: releaser(id, lane) }
  }
  if (d.kind === 'postgres') {
    const pg = optional<Pg>('pg')
    const tls = pgTls(u)
    const lane = pg && tls && laneFor(id, () => new PgLane(pg, d.url, tls, timeoutMs))
    if (!lane) return null
    const text = d.query!
    let name = statements.get(text)
    if (name === undefined) statements.set(text, (name = `cachette_get_${statements.size}`))
    const ns = d.ns!
    return { read: (io) => lane.get(name, text, ns, io.subarray(0, 16)), close: releaser(id, lane) }
  }
  return null
}
