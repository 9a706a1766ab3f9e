import { CachetteError, fromNative, unserializableError } from '../errors'
import { encodeKeyLength, keyBuffer } from '../key'
import {
  IO_BYTES,
  IO_CREATED,
  IO_FRESHNESS,
  IO_WAITED,
  isFailure,
  openDisk,
  openShared,
  OWNER,
  storeGet,
  storeGetHashed,
  storePut,
  storePutAndRelease,
  storeReadOrLock,
} from '../native'
import type { Failure, LockResult, NativeStore } from '../native'
import type { ResolvedOptions } from '../options'
import {
  codecFor,
  decodeError,
  decodePayload,
  encodeError,
  encodeTransient,
  payloadWasPromise,
  UNREADABLE,
} from '../serializer'
import type { Codec } from '../serializer'
import { ClaimState } from './store'
import type { Claim, EntryTimes, Found, Store } from './store'

/*
 * The `disk` and `shared: true` stores: entries live in the Rust core (RocksDB, or a sharded map
 * shared by every worker thread), encoded. A key is its digest in a 48-byte `io` buffer shared
 * with native calls; one native call hashes the encoded arguments and reads the entry, or (a sync
 * miss) also takes the key's lock, which excludes other threads and, on disk, other processes.
 */

/** Payloads up to this size are copied into one reused buffer instead of a new one per read. */
const SCRATCH_BYTES = 64 * 1024
const scratch = Buffer.allocUnsafe(SCRATCH_BYTES)

/** The digest bytes that name a key in this thread (as a short one-byte string: cheap to make and hash). */
const KEY_BYTES = 16

/**
 * Stores of this thread. Writes are write-behind, so on a normal exit (end of the event loop,
 * `process.exit()`) everything queued is applied before the process goes: a short script's
 * results are on disk without an explicit `flush()`. (`kill -9` skips this; `flush()` is the
 * guarantee.)
 */
const openStores = new Set<NativeStore>()
process.on('exit', () => {
  for (const s of openStores) {
    try {
      s.flushSync(false)
    } catch {
      // Exiting anyway; the store reports write errors through flush() while running.
    }
  }
})

const ACQUIRED: Claim = Object.freeze({ state: ClaimState.Acquired })
const TIMED_OUT: Claim = Object.freeze({ state: ClaimState.TimedOut })
const SETTLED: Claim = Object.freeze({ state: ClaimState.Settled })

/** A `disk` or `shared: true` store for one memoized function. */
export class NativeBackend implements Store<Buffer> {
  readonly sync = true
  readonly holdsPending = false
  lastFound: Found | undefined
  onWriteFailures?: (count: number, error: CachetteError) => void
  /** The store's own key buffer; `key()` leaves the arguments encoded, hashed by the next use. */
  private readonly io = Buffer.alloc(IO_BYTES)
  /** Length of the arguments `key()` encoded into `keyBuffer()` and not hashed yet (0: hashed). */
  private unhashed = 0
  private readonly h: number
  /** Read results, reused: the engine reads them before the next call. */
  private readonly found: Found = { value: undefined, fresh: true, created: 0, wasPromise: false }
  /** Keys kept per nesting depth of sync computations (see `keep`). */
  private readonly slots: Buffer[] = []
  private readonly codec: Codec

  constructor(
    private readonly native: NativeStore,
    private readonly o: ResolvedOptions,
  ) {
    this.codec = codecFor(o.serializer)
    this.h = native.handle()
    openStores.add(native)
  }

  key(args: ArrayLike<unknown>): Buffer {
    this.unhashed = encodeKeyLength(args)
    return this.io
  }

  /** Hashes what `key()` encoded, if `k` is the store's own buffer and that was not done yet. */
  private hashed(k: Buffer): Buffer {
    if (k === this.io && this.unhashed !== 0) {
      this.native.hash(keyBuffer().subarray(0, this.unhashed), k)
      this.unhashed = 0
    }
    return k
  }

  keep(k: Buffer, slot?: number): Buffer {
    this.hashed(k)
    if (slot === undefined) return Buffer.from(k)
    const b = this.slots[slot] ?? (this.slots[slot] = Buffer.allocUnsafe(IO_BYTES))
    b.set(k)
    return b
  }

  id(k: Buffer): string {
    return this.hashed(k).latin1Slice(0, KEY_BYTES)
  }

  same(a: Buffer, b: Buffer): boolean {
    for (let j = 0; j < KEY_BYTES; j++) if (a[j] !== b[j]) return false
    return true
  }

  /** Decodes what a native read of `k` left in `scratch` (`n` bytes), or fetches a payload too large for it. */
  private decoded(n: number, k: Buffer): Found | undefined {
    if (n < 0) return undefined
    let value: unknown
    let wasPromise: boolean
    if (n <= SCRATCH_BYTES) {
      value = decodePayload(this.codec, scratch, n)
      wasPromise = payloadWasPromise(scratch)
    } else {
      const payload = this.native.getBuffer(k)
      if (!payload) return undefined
      value = decodePayload(this.codec, payload, payload.length)
      wasPromise = payloadWasPromise(payload)
    }
    if (value === UNREADABLE) return undefined
    const f = this.found
    f.value = value
    f.wasPromise = wasPromise
    f.fresh = k[IO_FRESHNESS] === 0
    f.created = k.readDoubleLE(IO_CREATED)
    return f
  }

  read(k: Buffer): Found | undefined {
    if (k === this.io && this.unhashed !== 0) {
      const n = this.unhashed
      this.unhashed = 0
      return this.decoded(storeGet(this.h, keyBuffer(), n, k, scratch), k)
    }
    return this.decoded(storeGetHashed(this.h, k, scratch), k)
  }

  readOrLock(k: Buffer): Claim | undefined {
    const n = this.unhashed
    this.unhashed = 0
    const r = storeReadOrLock(this.h, keyBuffer(), n, k, scratch, OWNER, this.o.lockTimeout)
    if (r >= 0 && k[IO_WAITED] === 0) {
      this.lastFound = this.decoded(r, k)
      return undefined
    }
    return this.claimOf(r, k)
  }

  /** The claim a native lock call's result code stands for. */
  private claimOf(r: number, k: Buffer): Claim {
    if (r >= 0) {
      const found = this.decoded(r, k)
      return found === undefined ? SETTLED : { state: ClaimState.Value, found }
    }
    if (r === ClaimState.Acquired) return ACQUIRED
    if (r === ClaimState.TimedOut) return TIMED_OUT
    if (r === ClaimState.Failed)
      return { state: ClaimState.Failed, error: decodeError(this.native.takeError() ?? Buffer.alloc(0)) }
    return SETTLED
  }

  lock(k: Buffer, force: boolean): Claim {
    this.hashed(k)
    if (!force) return this.claimOf(this.native.lockAndRead(k, scratch, OWNER, this.o.lockTimeout), k)
    // refresh(): take the lock, but do not accept the value that is there.
    return this.claimOfLock(this.native.lock(k, OWNER, this.o.lockTimeout), k, true)
  }

  async lockAsync(k: Buffer, force: boolean): Promise<Claim> {
    const lr = (await this.native.lockAsync(this.hashed(k), OWNER, this.o.lockTimeout)) as LockResult | Failure
    if (isFailure(lr)) throw lr
    return this.claimOfLock(lr, k, force)
  }

  /** A claim from a plain lock: the value is read again unless `force` (another caller may have stored it). */
  private claimOfLock(lr: LockResult, k: Buffer, force: boolean): Claim {
    if (lr.state === ClaimState.TimedOut) return TIMED_OUT
    if (lr.state === ClaimState.Failed) return { state: ClaimState.Failed, error: decodeError(lr.error!) }
    if (lr.state === ClaimState.Settled) {
      const found = this.decoded(storeGetHashed(this.h, k, scratch), k)
      return found === undefined ? SETTLED : { state: ClaimState.Value, found: { ...found } }
    }
    if (force) return ACQUIRED
    const found = this.decoded(storeGetHashed(this.h, k, scratch), k)
    if (found === undefined || !found.fresh) return ACQUIRED
    this.native.release(k, OWNER, null)
    return { state: ClaimState.Value, found: { ...found } }
  }

  write(k: Buffer, value: unknown, wasPromise: boolean, t: EntryTimes, claim: Claim | undefined): void {
    this.hashed(k)
    let payload: Buffer
    try {
      payload = encodeTransient(this.codec, value, wasPromise)
    } catch (e) {
      if (claim !== undefined) this.native.release(k, OWNER, null)
      throw unserializableError(this.o.namespace, e)
    }
    const max = this.o.maxValueBytes
    if (max !== undefined && payload.length > max) {
      if (claim !== undefined) this.native.release(k, OWNER, null)
      return
    }
    const failed =
      claim !== undefined
        ? storePutAndRelease(this.h, k, payload, t.staleAt, t.expires, t.now, OWNER)
        : storePut(this.h, k, payload, t.staleAt, t.expires, t.now)
    if (failed > 0) this.reportFailures(failed)
  }

  /** Hands the engine `n` writes that failed after they were queued, with the store's reason. */
  private reportFailures(n: number): void {
    if (n === 0) return
    const reason = this.native.lastWriteError() ?? 'unknown reason'
    this.onWriteFailures?.(n, new CachetteError('ERR_BACKEND_IO', `queued writes were not stored: ${reason}`))
  }

  release(k: Buffer, _claim: Claim, error: unknown): void {
    this.native.release(this.hashed(k), OWNER, error === undefined ? null : (encodeError(error) ?? null))
  }

  delete(k: Buffer): boolean {
    return this.native.delete(this.hashed(k))
  }

  clear(): void {
    this.native.clear()
  }

  size(): number {
    const n = this.native.size()
    this.reportFailures(this.native.takeFailures())
    return n
  }

  clearLocks(): void {
    // Every lock this function holds is one of its claims: the engine releases those.
  }

  async flush(): Promise<void> {
    const f = (await this.native.flush(this.o.durability === 'sync')) as Failure | null
    this.reportFailures(this.native.takeFailures())
    if (f) throw fromNative(f)
  }

  async close(): Promise<void> {
    openStores.delete(this.native)
    this.native.close()
  }
}

/** Opens the disk directory of `o.path` for `o.namespace`. */
export const diskStore = (o: ResolvedOptions): NativeBackend => new NativeBackend(openDisk(o.path, o.namespace), o)

/** Opens the process-wide memory store of `o.namespace`, shared by every worker thread. */
export const sharedStore = (o: ResolvedOptions): NativeBackend =>
  new NativeBackend(openShared(o.namespace, o.maxEntries, o.maxBytes), o)
