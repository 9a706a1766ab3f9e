import { fromNative, unserializableError } from '../errors'
import { encodeKey } from '../key'
import { IO_BYTES, IO_CREATED, IO_FRESHNESS, IO_START, isFailure, openRemote } from '../native'
import type { Acquire, Failure, Found as NativeFound, Remote } from '../native'
import type { ResolvedOptions } from '../options'
import { codecFor, decodeError, decodePayload, encodeError, encodePayload, UNREADABLE } from '../serializer'
import type { Codec } from '../serializer'
import { directReads } from './direct-reads'
import type { DirectReads } from './direct-reads'
import { ClaimState } from './store'
import type { Claim, EntryTimes, Found, Store } from './store'

/*
 * The `redis` and `sql` stores: a namespace on a server shared by processes and machines, behind
 * the core's lease protocol (docs/locks.md). Every method answers with a Promise. A miss takes
 * the key's lease in one atomic step on the server, or waits for its holder inside the core
 * (woken by pub/sub on Redis, polling on SQL) without blocking the event loop; the lease is
 * renewed from Rust while the function runs, and a commit is written only while it is still
 * held. A hit on one Redis server or on PostgreSQL may be read over this thread's own
 * connection (direct-reads.ts); the core checks what it read like any other entry.
 */

/** The digest bytes that name a key in this thread's sharing of calls. */
const KEY_BYTES = 16

/** What a native request resolved, or its failure thrown. */
async function settled<T>(p: Promise<T | Failure>): Promise<T> {
  const r = await p
  if (isFailure(r)) throw fromNative(r)
  return r as T
}

/** A `redis` or `sql` store for one memoized function. */
export class RemoteBackend implements Store<Buffer> {
  readonly sync = false
  readonly holdsPending = false
  private readonly codec: Codec
  private readonly reads: DirectReads | null

  constructor(
    private readonly remote: Remote,
    private readonly o: ResolvedOptions,
  ) {
    this.codec = codecFor(o.serializer)
    this.reads = o.directReads ? directReads(remote.directRead(), o.backendTimeout) : null
  }

  key(args: ArrayLike<unknown>): Buffer {
    const io = Buffer.allocUnsafe(IO_BYTES)
    this.remote.hash(encodeKey(args), io)
    return io
  }

  keep(k: Buffer): Buffer {
    return k // every key is a buffer of its own
  }

  id(k: Buffer): string {
    return k.latin1Slice(0, KEY_BYTES)
  }

  same(a: Buffer, b: Buffer): boolean {
    return a.compare(b, 0, KEY_BYTES, 0, KEY_BYTES) === 0
  }

  /** The value of an entry's payload, or undefined when this codec cannot read it. */
  private decoded(payload: Buffer, fresh: boolean, created: number): Found | undefined {
    const value = decodePayload(this.codec, payload, payload.length)
    return value === UNREADABLE ? undefined : { value, fresh, created, wasPromise: true }
  }

  /** The entry in `bytes`, read directly for `k`, once the core has checked it. */
  private opened(k: Buffer, bytes: Buffer): Found | undefined {
    const end = this.remote.open(k, bytes)
    if (end < 0) return undefined
    return this.decoded(
      bytes.subarray(k.readUInt32LE(IO_START), end),
      k[IO_FRESHNESS] === 0,
      k.readDoubleLE(IO_CREATED),
    )
  }

  async read(k: Buffer): Promise<Found | undefined> {
    const direct = this.reads?.read(k)
    let bytes: Buffer | null | undefined
    if (direct !== undefined) {
      try {
        bytes = await direct
      } catch (e) {
        // Unanswered: the server's breaker counts it as one of the core's own failures.
        this.remote.unavailable(`no answer within ${this.o.backendTimeout} ms (backendTimeout)`)
        throw e
      }
    }
    if (bytes === null) return undefined
    if (bytes !== undefined) return this.opened(k, bytes)
    const f = await settled<NativeFound | null>(this.remote.get(k))
    return f === null ? undefined : this.decoded(f.payload, f.fresh, f.created)
  }

  async lock(k: Buffer, force: boolean): Promise<Claim> {
    const { lease, lockTimeout } = this.o
    let a = await settled<Acquire>(this.remote.acquire(k, lease, lockTimeout, force))
    if (a.state === ClaimState.Value) {
      const found = this.decoded(a.payload!, a.fresh!, a.created!)
      if (found !== undefined) return { state: ClaimState.Value, found }
      // A value that no longer decodes: take the lease to overwrite it.
      a = await settled<Acquire>(this.remote.acquire(k, lease, lockTimeout, true))
    }
    if (a.state === ClaimState.Acquired) return { state: ClaimState.Acquired, lease: a.lease! }
    if (a.state === ClaimState.Failed) return { state: ClaimState.Failed, error: decodeError(a.error!) }
    return { state: ClaimState.TimedOut }
  }

  async write(k: Buffer, value: unknown, wasPromise: boolean, t: EntryTimes, claim: Claim | undefined): Promise<void> {
    const { staleAt, expires, now } = t
    let payload: Buffer
    try {
      payload = encodePayload(this.codec, value, wasPromise)
    } catch (e) {
      if (claim !== undefined) await this.release(k, claim, undefined)
      throw unserializableError(this.o.namespace, e)
    }
    const max = this.o.maxValueBytes
    if (max !== undefined && payload.length > max) {
      if (claim !== undefined) await this.release(k, claim, undefined)
      return
    }
    // A commit refused (the lease was taken over, or cleared) writes nothing: a newer value stands.
    if (claim !== undefined) await settled(this.remote.commit(claim.lease!, payload, staleAt, expires, now))
    else await settled(this.remote.put(k, payload, staleAt, expires, now))
  }

  async release(_k: Buffer, claim: Claim, error: unknown): Promise<void> {
    const e = error === undefined ? null : (encodeError(error) ?? null)
    await settled(this.remote.abort(claim.lease!, e, this.o.lease))
  }

  async delete(k: Buffer): Promise<boolean> {
    return (await settled<boolean>(this.remote.delete(k))) === true
  }

  async clear(): Promise<void> {
    await settled(this.remote.clear())
  }

  async size(): Promise<number> {
    return settled<number>(this.remote.size())
  }

  async clearLocks(): Promise<void> {
    await settled(this.remote.clearLocks())
  }

  /** Remote writes are acknowledged by the server before a call resolves. */
  flush(): Promise<void> {
    return Promise.resolve()
  }

  integrityFailures(): number {
    return this.remote.takeIntegrityFailures()
  }

  async close(): Promise<void> {
    this.reads?.close()
    this.remote.close()
  }
}

/**
 * Opens `o.namespace` on the server of `o.urls`. A URL the core cannot use is the caller's
 * mistake: a `TypeError` at `memoize()` time.
 */
export function remoteStore(o: ResolvedOptions): RemoteBackend {
  let remote: Remote
  try {
    remote = openRemote(o.urls, o.cluster, o.prefix, o.namespace, o.backendTimeout, o.integrityKey)
  } catch (e) {
    const err = fromNative(e)
    if (err.code === 'ERR_INVALID_OPTION') throw new TypeError(err.message, { cause: e })
    throw err
  }
  return new RemoteBackend(remote, o)
}
