/*
 * The store interface: what every backend offers `memoize()` (and, later, the key-value Cache
 * and user-written stores). The engine above it (engine.ts) owns every decision — single flight,
 * stale-while-revalidate, which errors pass through, what is counted — and a store only keeps
 * entries and locks. The contract is written out in docs/stores.md.
 */

/** What a read found. Sync stores may reuse one object: read it before the next call of the store. */
export interface Found {
  /** The value, decoded. */
  value: unknown
  /** Not stale yet (past its ttl but within `staleWhileRevalidate` reads as not fresh). */
  fresh: boolean
  /** When it was stored, in ms since the epoch. */
  created: number
  /** The function returned a Promise for it: a hit answers with a Promise too. */
  wasPromise: boolean
  /** A Promise still pending, held by a store that `holdsPending`: callers share it. */
  pending?: boolean
}

/** How a claim of a key's calculation lock ended: the native binding's codes, defined once in Rust. */
import type { Counters } from '../computations'
import type { CachetteError } from '../errors'
import { ClaimState } from '../native'
import type { AnyFn } from '../types'
export { ClaimState }

/** A claim of a key's calculation lock. */
export interface Claim {
  state: ClaimState
  found?: Found
  error?: unknown
  /** The store's handle of the lock it holds (a lease on Redis and SQL). */
  lease?: number
}

/**
 * When an entry turns stale and expires (ms since the epoch, -1 for never), and when it was made.
 * The engine reuses one object: a store reads it during `write()`, and keeps no reference.
 */
export interface EntryTimes {
  staleAt: number
  expires: number
  now: number
}

/**
 * A backend's entries and calculation locks, for one memoized function (or one namespace).
 *
 * `K` is the store's key: what `key()` makes of an argument list. A sync store answers every
 * method but `flush` and `close` with a plain value; an async store (`sync: false`, Redis and SQL)
 * with a Promise. Store failures are thrown (or rejected) as they are; the engine reports them.
 */
export interface Store<K> {
  /** Whether the methods answer synchronously. */
  readonly sync: boolean
  /** `write()` reads no `times` (a store without expiry): the engine then computes none. */
  readonly ignoresTimes?: boolean
  /**
   * Whether the store itself holds a pending Promise written with `write(…, pending)` and hands it
   * out as a `Found` (memory does, so `peek()` sees it); otherwise the engine shares computations
   * in flight itself.
   */
  readonly holdsPending: boolean
  /**
   * The key of an argument list. It may be a reused object, valid until the next `key()`.
   * `lookup`: the key is only read or deleted (`has`, `peek`, `delete`), never written, so the
   * store need not make room for an entry.
   * @throws CachetteError `ERR_UNKEYABLE_ARGUMENT`
   */
  key(args: ArrayLike<unknown>, lookup?: boolean): K
  /** A copy of `k` that stays valid; `slot` (a nesting depth) lets the store reuse storage per slot. */
  keep(k: K, slot?: number): K
  /** A string naming the key in this thread (for sharing computations). */
  id(k: K): string
  /** Whether two keys are one. */
  same(a: K, b: K): boolean
  /**
   * The entry of `k`, or undefined (absent, expired, unreadable). `peek`: for `has()` and
   * `peek()`, which leave an LRU order as it is.
   */
  read(k: K, peek?: boolean): Found | undefined | Promise<Found | undefined>
  /**
   * Sync stores: `read`, and on a miss `lock`, in one step. `undefined` when the read found the
   * entry (in `lastFound`; undefined there when it could not be read), else the claim.
   */
  readOrLock?(k: K): Claim | undefined
  /** What the last `readOrLock` read. */
  readonly lastFound?: Found | undefined
  /** Claims the key's calculation lock, waiting for another caller's computation (blocking on a sync store). */
  lock(k: K, force: boolean): Claim | Promise<Claim>
  /** Sync stores: `lock` without blocking the thread (for async functions). */
  lockAsync?(k: K, force: boolean): Promise<Claim>
  /**
   * Stores a result (releasing `claim`'s lock when given).
   *
   * A store that `holdsPending` is also given a function's Promise itself: `pending` true when it
   * starts (callers share it), then again with `pending` false and its `resolved` value once it
   * settles (to stamp its times and measure it).
   * @throws CachetteError `ERR_UNSERIALIZABLE_RESULT` when the value cannot be encoded (the lock is released).
   */
  write(
    k: K,
    value: unknown,
    wasPromise: boolean,
    times: EntryTimes,
    claim: Claim | undefined,
    pending?: boolean,
    resolved?: unknown,
  ): void | Promise<void>
  /** A store that `holdsPending`: the Promise `p` written pending settled with `resolved`; nothing if the entry no longer holds it. */
  settle?(k: K, p: PromiseLike<unknown>, resolved: unknown, times: EntryTimes): void
  /** A store that `holdsPending`: removes the entry of `k` if it still holds the Promise `p`. */
  forget?(k: K, p: PromiseLike<unknown>): void
  /** A computation of `k` failed: a store may drop what it made ready for the value. */
  abandon?(k: K): void
  /** Releases `claim` without a value; `error` reaches the callers waiting for it. */
  release(k: K, claim: Claim, error: unknown): void | Promise<void>
  /** Removes the entry; whether there was one. */
  delete(k: K): boolean | Promise<boolean>
  /** Removes every entry (of the namespace, on a shared store). */
  clear(): void | Promise<void>
  /** Entries held. */
  size(): number | Promise<number>
  /** Removes the locks the store keeps beyond this thread's claims (leases on the server). */
  clearLocks(): void | Promise<void>
  /**
   * Set by the engine: a write-behind store calls it with the number of its writes that failed
   * after `write()` returned (a full disk), and why. They are counted in `stats().errors`.
   */
  onWriteFailures?: (count: number, error: CachetteError) => void
  /** Resolves once every write so far is durable; rejects if one since the previous flush was not stored. */
  flush(): Promise<void>
  /** Flushes and releases the store; the engine makes later calls throw `ERR_CLOSED`. */
  close(): Promise<void>
  /**
   * A store in this thread may answer some hits before the engine runs: the memoized function
   * itself, calling `call` for everything it does not answer (memory stores only).
   */
  fastPath?(
    call: (self: unknown, args: ArrayLike<unknown>, co: undefined) => unknown,
    stats: Counters,
  ): AnyFn | undefined
  /** Start recording creation times (a `with({ maxAge })` view exists): stores that skip them otherwise. */
  trackAge?(): void
}
