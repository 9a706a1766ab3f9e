/*
 * The one file that imports the generated binding. Everything native goes through here.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const binding = require('../index.js') as typeof import('../index')

import type { Acquire, Direct, Failure, Found, NativeRemote } from '../index'

export type { NativeStore, LockResult, Failure, Acquire, Found, Direct } from '../index'
const LONE_SURROGATE = /\p{Cs}/u

/**
 * A namespace as the core takes it: its WTF-8 bytes, UTF-8 with each lone surrogate kept as its
 * own three bytes, so that no two JS strings name one namespace (`'\uD800'` is not `'\uFFFD'`,
 * which a UTF-8 conversion would make it). A well-formed name gives its plain UTF-8.
 */
export function namespaceBytes(namespace: string): Buffer {
  if (!LONE_SURROGATE.test(namespace)) return Buffer.from(namespace, 'utf8')
  const out: number[] = []
  for (let i = 0; i < namespace.length; i++) {
    const c = namespace.codePointAt(i)!
    if (c > 0xffff) i++
    if (c < 0x80) out.push(c)
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63))
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63))
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63))
  }
  return Buffer.from(out)
}

/** Opens the disk cache directory `path` for `namespace`; with `integrityKey`, its entries are signed and checked with it. */
export const openDisk = (path: string, namespace: string, integrityKey?: Buffer) =>
  binding.openDisk(path, namespaceBytes(namespace), integrityKey)
/** Stops the native stores' clock at `ms` (a test), or gives it the system's time again (-1). */
export const setNativeTestTime = binding.setTestTime

/** Whether what an asynchronous native operation resolved is its failure. */
export function isFailure(x: unknown): x is Failure {
  return x !== null && typeof x === 'object' && 'code' in x
}
/** Opens the process-wide memory store of `namespace`, shared by every worker thread. */
export const openShared = (namespace: string, maxEntries?: number, maxBytes?: number) =>
  binding.openShared(namespaceBytes(namespace), maxEntries, maxBytes)
/**
 * The hot path of a store, called with its `handle()`: plain Node-API functions (see
 * crates/cachette-node/src/raw.rs), which the generated declarations do not list.
 */
interface HotPath {
  /**
   * Hashes the first `keyLength` bytes of `key` into `io` and reads its entry: the payload
   * length (copied into `scratch` when it fits), or -1.
   */
  storeGet(handle: number, key: Uint8Array, keyLength: number, io: Buffer, scratch: Buffer): number
  /** Like `storeGet`, for the digest already in `io`. */
  storeGetHashed(handle: number, io: Buffer, scratch: Buffer): number
  /** `storeGet`, and on a miss `lockAndRead`, in one call. */
  storeReadOrLock(
    handle: number,
    key: Uint8Array,
    keyLength: number,
    io: Buffer,
    scratch: Buffer,
    owner: number,
    timeoutMs: number,
  ): number
  /**
   * Stores `payload` for the digest in `io`. Returns how many of the handle's earlier writes
   * failed after they were queued (a full disk) since it last said: usually 0.
   */
  storePut(handle: number, io: Buffer, payload: Uint8Array, staleAtMs: number, expiresMs: number, nowMs: number): number
  /** Stores `payload` and releases the lock `owner` holds on the digest in `io`; returns as `storePut`. */
  storePutAndRelease(
    handle: number,
    io: Buffer,
    payload: Uint8Array,
    staleAtMs: number,
    expiresMs: number,
    nowMs: number,
    owner: number,
  ): number
  /** Hashes the encoded arguments `key` into the digest bytes of `io` (a remote namespace's handle). */
  remoteHash(handle: number, key: Uint8Array, io: Buffer): void
  /**
   * Checks `bytes`, read directly for the digest in `io`: where the payload ends (its start,
   * freshness and creation time are then in `io`), or -1 when they are no live entry of this key.
   */
  remoteOpen(handle: number, io: Buffer, bytes: Buffer): number
}
const hot = binding as unknown as HotPath
export const storeGet = hot.storeGet
export const storeGetHashed = hot.storeGetHashed
export const storeReadOrLock = hot.storeReadOrLock
export const storePut = hot.storePut
export const storePutAndRelease = hot.storePutAndRelease
/** The layout of the `io` buffer shared with native calls, as the binding defines it (see its docs). */
export const { IO_BYTES, IO_FRESHNESS, IO_WAITED, IO_START, IO_CREATED } = binding
/** How a claim of a calculation lock ended, as native calls report it. */
export { ClaimState } from '../index'

/** This thread's owner id: its calculation locks are released if the thread dies. */
export const OWNER: number = binding.registerOwner()

/*
 * Requests to the Redis and SQL stores: each gets an id and a promise here; the core reports
 * every completion of this thread through one callback. The event loop is held open only while
 * requests are pending, so an idle process exits at once.
 */
const pending = new Map<number, (result: unknown) => void>()
let nextRequest = 1
let listening = false

function complete([id, result]: [number, unknown]): void {
  const resolve = pending.get(id)
  pending.delete(id)
  if (pending.size === 0) binding.remoteRef(false)
  resolve?.(result)
}

function request<T>(send: (id: number) => void): Promise<T | Failure> {
  if (!listening) {
    binding.remoteCompletions(complete)
    listening = true
  }
  const id = nextRequest
  nextRequest = nextRequest === 0x7fffffff ? 1 : nextRequest + 1
  const p = new Promise<T | Failure>((resolve) => pending.set(id, resolve as (result: unknown) => void))
  if (pending.size === 1) binding.remoteRef(true)
  try {
    send(id)
  } catch (e) {
    pending.delete(id)
    if (pending.size === 0) binding.remoteRef(false)
    throw e
  }
  return p
}

/** One namespace on a Redis server or an SQL database; every operation resolves a value or a `Failure`. */
export class Remote {
  /** The namespace's handle for the hit path's free functions. */
  private readonly h: number
  constructor(private readonly n: NativeRemote) {
    this.h = n.handle()
  }
  hash(key: Uint8Array, io: Buffer): void {
    hot.remoteHash(this.h, key, io)
  }
  get(io: Buffer) {
    return request<Found | null>((id) => binding.remoteGet(this.h, id, io))
  }
  /** A direct read the server left unanswered: its breaker counts it (see direct-reads.ts). */
  unavailable(reason: string): void {
    this.n.unavailable(reason)
  }
  /** How this thread may read entries itself (see direct.ts), or null. */
  directRead(): Direct | null {
    return this.n.directRead()
  }
  /**
   * Checks `bytes`, read directly for the digest in `io`: where the payload ends (its start,
   * freshness and creation time are in `io`), or -1 when they are no live entry of this key.
   */
  open(io: Buffer, bytes: Buffer): number {
    return hot.remoteOpen(this.h, io, bytes)
  }
  acquire(io: Buffer, leaseMs: number, timeoutMs: number, force: boolean) {
    return request<Acquire>((id) => this.n.acquire(id, io, leaseMs, timeoutMs, force))
  }
  commit(lease: number, payload: Buffer, staleAt: number, expires: number, now: number) {
    return request<boolean>((id) => this.n.commit(id, lease, payload, staleAt, expires, now))
  }
  abort(lease: number, error: Buffer | null, leaseMs: number) {
    return request<null>((id) => this.n.abort(id, lease, error, leaseMs))
  }
  put(io: Buffer, payload: Buffer, staleAt: number, expires: number, now: number) {
    return request<null>((id) => this.n.put(id, io, payload, staleAt, expires, now))
  }
  delete(io: Buffer) {
    return request<boolean>((id) => this.n.delete(id, io))
  }
  clear() {
    return request<null>((id) => this.n.clear(id))
  }
  clearLocks() {
    return request<number>((id) => this.n.clearLocks(id))
  }
  size() {
    return request<number>((id) => this.n.size(id))
  }
  /** Reads that found an entry failing its integrity check since the last call. */
  takeIntegrityFailures(): number {
    return this.n.takeIntegrityFailures()
  }
  close(): void {
    this.n.close()
  }
}

/**
 * Opens `namespace` on the server of `urls` (several: a Redis Cluster); `prefix` is the key prefix
 * or table; `backendTimeoutMs` bounds each operation on the server; with `integrityKey`, entries
 * are signed and checked with it.
 */
export function openRemote(
  urls: string[],
  cluster: boolean,
  prefix: string,
  namespace: string,
  backendTimeoutMs: number,
  integrityKey?: Buffer,
): Remote {
  return new Remote(
    binding.openRemote(urls, cluster, prefix, namespaceBytes(namespace), backendTimeoutMs, integrityKey),
  )
}
