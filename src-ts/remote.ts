import { CachetteError, closedError, fromNative, unserializableError } from './errors'
import { encodeKey } from './key'
import { PgReader } from './direct-pg'
import { RedisReader } from './direct-redis'
import { IO_BYTES, IO_CREATED, IO_FRESHNESS, IO_START, openRemote } from './native'
import type { Acquire, Direct, Failure, Found, Remote } from './native'
import { entryTimes } from './options'
import type { ResolvedOptions } from './options'
import { codecFor, decodeError, decodePayload, encodeError, encodePayload, UNREADABLE } from './serializer'
import type { AnyFn, Implementation, ResolvedCallOptions } from './types'
import { isPromiseLike, warnOnce } from './types'

/*
 * The `redis` and `sql` backends. Every call returns a Promise. A call hashes its key, and one
 * native operation (one Lua script on Redis) returns the value or takes the key's lease; a
 * caller that finds another process computing waits inside the core (woken by pub/sub on Redis,
 * polling on SQL) and never blocks the event loop. The lease is renewed from Rust while the
 * function runs; the value is committed only while the lease is still ours. A hit on a single
 * Redis server or on PostgreSQL is read over this thread's own connection (direct.ts).
 */

/**
 * The bytes of the digest (at the start of `io`) a key is named by, on the server as in this
 * thread's sharing of calls: 128 bits, as the core's `key_part`.
 */
const KEY_BYTES = 16

/** A call in flight in one thread: callers of its key share `p` until it settles. */
interface Running {
  /** The key it is shared under (`inflight`). */
  id: string
  p: Promise<unknown> | null
  settled: boolean
}

/** A reader of entries on this thread's own connection, when the server allows one. */
function openReader(d: Direct | null): RedisReader | PgReader | null {
  if (d === null) return null
  return d.kind === 'redis' ? RedisReader.open(d) : d.kind === 'postgres' ? PgReader.open(d) : null
}

/** What the native side resolved: the value, or a failure to report. */
function isFailure(x: unknown): x is Failure {
  return x !== null && typeof x === 'object' && 'code' in x
}

export function remoteImplementation<F extends AnyFn>(fn: F, o: ResolvedOptions): Implementation<F> {
  const codec = codecFor(o.serializer)
  const keyFn = o.key as ((...args: unknown[]) => unknown) | undefined
  const { lockTimeout, lease, maxValueBytes, cacheUndefined, onBackendError } = o
  const stats = { hits: 0, misses: 0, staleHits: 0, computations: 0, waits: 0, errors: 0 }
  /** Computations of this thread, by key digest: callers of one key share them. */
  const inflight = new Map<string, Running>()
  /** Leases held now; `clearLocks()` releases them and their commits are then refused. */
  const held = new Set<number>()
  let closed = false
  let store: Remote | null = null

  /** Reports a store failure: rethrown with `onBackendError: 'throw'`, else warned once. */
  function backendFailure(e: unknown): void {
    stats.errors++
    const err = e instanceof CachetteError ? e : fromNative(e)
    if (onBackendError === 'throw') throw err
    warnOnce(`cachette: ${o.namespace}: ${err.message} (${err.code}); computing without the cache`)
  }

  try {
    store = openRemote(o.urls, o.cluster, o.prefix, o.namespace)
  } catch (e) {
    // An invalid URL is the caller's mistake: say so at memoize() time.
    const err = fromNative(e)
    if (err.code === 'ERR_INVALID_OPTION') throw new TypeError(err.message, { cause: e })
    backendFailure(err)
  }
  const reader = store === null || !o.directReads ? null : openReader(store.directRead())

  /** Awaits a native operation; a failure is reported and resolves as `undefined`. */
  async function native<T>(p: Promise<T | Failure>): Promise<T | undefined> {
    const r = await p
    if (isFailure(r)) {
      backendFailure(r)
      return undefined
    }
    return r
  }

  function hash(args: ArrayLike<unknown>): Buffer | undefined {
    const kb = encodeKey(keyFn === undefined ? args : [keyFn(...Array.from(args))])
    if (store === null) return undefined
    const io = Buffer.allocUnsafe(IO_BYTES)
    store.hash(kb, io)
    return io
  }

  /** What `bytes`, read directly for the digest in `io`, hold: an entry, or null (a miss). */
  function opened(s: Remote, io: Buffer, bytes: Buffer | null): Found | null {
    if (bytes === null) return null
    const end = s.open(io, bytes)
    if (end < 0) return null
    const payload = bytes.subarray(io.readUInt32LE(IO_START), end)
    return { payload, fresh: io[IO_FRESHNESS] === 0, created: io.readDoubleLE(IO_CREATED) }
  }

  /** The entry of the digest in `io`: read on this thread's connection when it can, else by the core. */
  async function get(s: Remote, io: Buffer, hex: string): Promise<Found | null | undefined> {
    const direct = reader?.read(io, hex)
    if (direct === undefined) return native<Found | null>(s.get(io))
    const bytes = await direct
    if (closed) throw closedError(o.namespace)
    return bytes === undefined ? native<Found | null>(s.get(io)) : opened(s, io, bytes)
  }

  function decode(payload: Buffer): { value: unknown; ok: boolean } {
    const value = decodePayload(codec, payload, payload.length)
    return { value, ok: value !== UNREADABLE }
  }

  /** The payload to store for `value`, or undefined when it must not be stored. */
  function payloadOf(value: unknown): Buffer | undefined {
    if (value == null && !cacheUndefined) return undefined
    let payload: Buffer
    try {
      payload = encodePayload(codec, value, true)
    } catch (e) {
      stats.errors++
      const err = unserializableError(o.namespace, e)
      if (onBackendError === 'throw') throw err
      warnOnce(err.message)
      return undefined
    }
    return maxValueBytes !== undefined && payload.length > maxValueBytes ? undefined : payload
  }

  /** Computes holding the lease `id`, then commits (fenced) or aborts with the error. */
  async function computeLeased(self: unknown, args: ArrayLike<unknown>, id: number): Promise<unknown> {
    const s = store!
    held.add(id)
    stats.computations++
    let value: unknown
    try {
      value = await fn.apply(self, args as unknown[])
    } catch (err) {
      stats.errors++
      held.delete(id)
      // Waiters in other processes get this error; nothing is stored. Awaited, so that a call
      // made after this rejection finds the lease released and computes again.
      try {
        if ((await s.abort(id, encodeError(err) ?? null, lease)) !== null) stats.errors++
      } catch {
        // Closed meanwhile: close() released the lease.
      }
      throw err
    }
    if (!held.delete(id)) return value // clearLocks() or close() released the lease meanwhile
    let payload: Buffer | undefined
    try {
      payload = payloadOf(value)
    } catch (e) {
      await native(s.abort(id, null, lease))
      throw e
    }
    if (payload === undefined) await native(s.abort(id, null, lease))
    else await native(s.commit(id, payload, ...entryTimes(o)))
    return value
  }

  /** Computes without a lease (the store failed, or `lockTimeout` passed) and stores if it can. */
  async function computeUnleased(self: unknown, args: ArrayLike<unknown>, io: Buffer | undefined): Promise<unknown> {
    stats.computations++
    const value = await fn.apply(self, args as unknown[])
    if (io !== undefined && store !== null) {
      const payload = payloadOf(value)
      if (payload !== undefined) await native(store.put(io, payload, ...entryTimes(o)))
    }
    return value
  }

  async function run(
    self: unknown,
    args: ArrayLike<unknown>,
    io: Buffer,
    hex: string,
    force: boolean,
    maxAge: number | undefined,
    background: boolean,
    running: Running,
  ): Promise<unknown> {
    // Every path awaits inside the try: the key is shared until the whole call settles.
    try {
      const s = store!
      if (!force) {
        // The hit path: one plain read (on this thread's own connection when there is one). Only a
        // miss goes on to the get-or-lock script.
        const found = await get(s, io, hex)
        if (found === undefined) return await computeUnleased(self, args, undefined)
        if (found !== null && (maxAge === undefined || Date.now() - found.created <= maxAge)) {
          const { value, ok } = decode(found.payload)
          if (ok) {
            if (found.fresh) stats.hits++
            else {
              stats.staleHits++
              if (!background) revalidate(self, args, io)
            }
            return value
          }
        }
        if (found !== null) force = true // too old for this call, or unreadable: overwrite it
      }
      let r = await native<Acquire>(s.acquire(io, lease, lockTimeout, force))
      if (r === undefined) return await computeUnleased(self, args, undefined)
      if (r.state === 0 && maxAge !== undefined && Date.now() - (r.created ?? 0) > maxAge) {
        // Too old for this call: compute anew and overwrite.
        r = await native<Acquire>(s.acquire(io, lease, lockTimeout, true))
        if (r === undefined) return await computeUnleased(self, args, undefined)
      }
      switch (r.state) {
        case 0: {
          const { value, ok } = decode(r.payload!)
          if (!ok) break
          if (r.fresh) stats.hits++
          else {
            stats.staleHits++
            if (!background) revalidate(self, args, io)
          }
          return value
        }
        case 1:
          if (!background) stats.misses++
          return await computeLeased(self, args, r.lease!)
        case 2:
          stats.waits++
          throw decodeError(r.error!)
        default:
          // lockTimeout passed: compute here, without the lease.
          stats.waits++
          return await computeUnleased(self, args, io)
      }
      // A value that no longer decodes: recompute and overwrite it.
      r = await native<Acquire>(s.acquire(io, lease, lockTimeout, true))
      if (r === undefined) return await computeUnleased(self, args, undefined)
      if (r.state === 1) return await computeLeased(self, args, r.lease!)
      if (r.state === 2) throw decodeError(r.error!)
      return await computeUnleased(self, args, io)
    } finally {
      running.settled = true
      if (inflight.get(running.id) === running) inflight.delete(running.id)
    }
  }

  /** Refreshes a stale entry in the background, once at a time per key in this thread. */
  function revalidate(self: unknown, args: ArrayLike<unknown>, io: Buffer): void {
    const hex = io.toString('hex', 0, KEY_BYTES)
    const id = hex + ':refresh'
    if (inflight.has(id)) return
    track(id, (running) => run(self, Array.from(args), io, hex, true, undefined, true, running)).catch(() => {
      // Counted in stats.errors; the stale value is served until it expires.
    })
  }

  /** Starts a call that callers of `id` share while it runs. */
  function track(id: string, start: (running: Running) => Promise<unknown>): Promise<unknown> {
    const running: Running = { id, p: null, settled: false }
    const p = start(running)
    running.p = p
    if (!running.settled) inflight.set(id, running)
    return p
  }

  function begin(self: unknown, args: ArrayLike<unknown>, co: ResolvedCallOptions | undefined): Promise<unknown> {
    if (closed) throw closedError(o.namespace)
    if (co?.bypass) return Promise.resolve(fn.apply(self, args as unknown[]))
    const io = hash(args)
    if (io === undefined) {
      stats.misses++
      return computeUnleased(self, args, undefined)
    }
    const hex = io.toString('hex', 0, KEY_BYTES)
    const force = co?.refresh === true
    const running = inflight.get(hex)
    if (running !== undefined && !force) {
      stats.waits++
      return running.p!
    }
    return track(hex, (r) => run(self, args, io, hex, force, co?.maxAge, false, r))
  }

  function call(self: unknown, args: ArrayLike<unknown>, co: ResolvedCallOptions | undefined): ReturnType<F> {
    try {
      return begin(self, args, co) as ReturnType<F>
    } catch (e) {
      // Every failure of a call is a rejection, as from an async function.
      return Promise.reject(e) as ReturnType<F>
    }
  }

  async function lookup(args: unknown[]): Promise<Found | undefined> {
    if (closed) throw closedError(o.namespace)
    const io = hash(args)
    if (io === undefined) return undefined
    return (await get(store!, io, io.toString('hex', 0, KEY_BYTES))) ?? undefined
  }

  function ensureOpen(): Remote | null {
    if (closed) throw closedError(o.namespace)
    return store
  }

  return {
    call,
    stats,
    methods: {
      async clearOwn() {
        const s = ensureOpen()
        if (s !== null) await native(s.clear())
      },
      async size() {
        const s = ensureOpen()
        return (s !== null && (await native<number>(s.size()))) || 0
      },
      async delete(...args: unknown[]) {
        ensureOpen()
        const io = hash(args)
        return io !== undefined && (await native<boolean>(store!.delete(io))) === true
      },
      async has(...args: unknown[]) {
        const f = await lookup(args)
        return f !== undefined && decode(f.payload).ok
      },
      async peek(...args: unknown[]) {
        const f = await lookup(args)
        if (f === undefined) return undefined
        const { value, ok } = decode(f.payload)
        return ok ? value : undefined
      },
      async set(args: unknown[], value: unknown) {
        ensureOpen()
        const io = hash(args)
        if (io === undefined) return
        const v: unknown = isPromiseLike(value) ? await value : value
        const payload = payloadOf(v)
        if (payload !== undefined) await native(store!.put(io, payload, ...entryTimes(o)))
      },
      async clearLocks() {
        const s = ensureOpen()
        held.clear()
        inflight.clear()
        if (s !== null) await native(s.clearLocks())
      },
      flush: () => Promise.resolve(),
      async close() {
        if (closed) return
        closed = true
        held.clear()
        reader?.close()
        store?.close()
        store = null
      },
    },
  } as unknown as Implementation<F>
}
