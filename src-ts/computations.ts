import { types } from 'node:util'
import { ClaimState } from './backends/store'
import type { Claim, Found, Store } from './backends/store'
import { CachetteError, closedError, fromNative } from './errors'
import { encodeKeyLength } from './key'
import { entryTimes, now } from './options'
import type { ResolvedOptions } from './options'
import type { AnyFn, Stats } from './types'
import { isPromiseLike, warnOnce } from './types'

/*
 * What every path of a memoized function shares — its counters, its locks and computations in
 * flight, reporting store failures, storing a result — and the async path (async functions, and
 * every call on an async store). engine.ts adds the call itself and the sync path.
 */

/** The counters of `stats()`, before `size` is added. */
export type Counters = Omit<Stats, 'size'>

export const newCounters = (): Counters => ({ hits: 0, misses: 0, staleHits: 0, computations: 0, waits: 0, errors: 0 })

/** The times handed to a store that `ignoresTimes`. */
const NO_TIMES = Object.freeze({ staleAt: -1, expires: -1, now: 0 })

/** A computation in flight in this thread: callers of its key share `p` until it settles. */
interface Running {
  p: Promise<unknown> | null
  settled: boolean
}

/** A lock this function holds now (`clearLocks()` and `close()` release it). */
export interface Held<K> {
  k: K
  claim: Claim
}

export abstract class Computations<K> {
  readonly stats = newCounters()
  store: Store<K> | null = null
  closed = false
  /** Whether the store answers synchronously (method answers keep this shape after close()). */
  readonly sync: boolean
  protected asyncFn: boolean
  protected readonly keyFn: ((...args: unknown[]) => unknown) | undefined
  /** Computations of this thread by key id, for stores that do not hold pending Promises. */
  protected readonly inflight = new Map<string, Running>()
  /** Keys of sync functions being refreshed in the background. */
  protected readonly refreshing = new Set<string>()
  /** Bumped by clearLocks() and close(): computations started before no longer own their lock. */
  protected generation = 0
  protected readonly held = new Map<string, Held<K>>()
  /** Locks of sync computations in progress (nested, so a stack; its entries reused). */
  protected readonly heldSync: Held<K>[] = []
  protected heldSyncTop = 0
  /** A write-behind failure was warned about. */
  private warnedWrites = false

  /** Opens the store; one that cannot be opened is reported, and every call then computes. */
  constructor(
    protected readonly fn: AnyFn,
    readonly o: ResolvedOptions,
    open: () => Store<K>,
  ) {
    this.asyncFn = types.isAsyncFunction(fn)
    this.keyFn = o.key as ((...args: unknown[]) => unknown) | undefined
    try {
      this.store = open()
    } catch (e) {
      if (e instanceof TypeError) throw e
      this.backendFailure(e)
    }
    this.sync = this.store?.sync ?? true
    if (this.store !== null) this.store.onWriteFailures = (n, err) => this.writeBehindFailures(n, err)
  }

  /**
   * `n` writes failed after the calls that made them returned (write-behind, e.g. on a full
   * disk): counted, and warned about once with `'fallback'`; `flush()` rejects for them.
   */
  private writeBehindFailures(n: number, err: CachetteError): void {
    this.stats.errors += n
    if (this.o.onBackendError === 'throw' || this.warnedWrites) return
    this.warnedWrites = true
    warnOnce(
      `cachette: ${this.o.namespace}: ${err.message} (${err.code}); calls go on, uncached until writes succeed again`,
    )
  }

  /** Reports a store failure: thrown with `onBackendError: 'throw'`, else counted and warned once. */
  backendFailure(e: unknown): void {
    this.stats.errors++
    const err = fromNative(e)
    if (this.o.onBackendError === 'throw') throw err
    warnOnce(`cachette: ${this.o.namespace}: ${err.message} (${err.code}); computing without the cache`)
  }

  /** A failed write: an unencodable value, or the store's own failure. */
  protected writeFailure(e: unknown): void {
    if (!(e instanceof CachetteError && e.code === 'ERR_UNSERIALIZABLE_RESULT')) return this.backendFailure(e)
    this.stats.errors++
    if (this.o.onBackendError === 'throw') throw e
    warnOnce(e.message)
  }

  /** The arguments a key is made of (the `key` option's result, when there is one). */
  keyArgs(a: ArrayLike<unknown>): ArrayLike<unknown> {
    return this.keyFn === undefined ? a : [this.keyFn(...Array.from(a))]
  }

  /** Refuses unkeyable arguments when there is no store to key them. */
  checkKey(a: ArrayLike<unknown>): void {
    encodeKeyLength(this.keyArgs(a))
  }

  /** What a hit answers: a Promise when the function returns them. */
  answer(f: Found): unknown {
    return f.wasPromise || this.asyncFn ? Promise.resolve(f.value) : f.value
  }

  /** Releases a lock; a failure is counted and warned about, never thrown (an error may be passing through). */
  release(s: Store<K>, k: K, claim: Claim, error: unknown): void | Promise<void> {
    const quiet = (e: unknown) => {
      this.stats.errors++
      const err = fromNative(e)
      warnOnce(`cachette: ${this.o.namespace}: ${err.message} (${err.code})`)
    }
    try {
      const r = s.release(k, claim, error)
      if (isPromiseLike(r)) return Promise.resolve(r).catch(quiet)
    } catch (e) {
      quiet(e)
    }
  }

  /**
   * Stores a result, releasing `claim`'s lock. A value that must not be stored only releases it;
   * on a refresh (`replace`) it also removes the entry it was to replace.
   */
  keep(
    s: Store<K>,
    k: K,
    value: unknown,
    wasPromise: boolean,
    claim: Claim | undefined,
    replace = false,
  ): void | Promise<void> {
    if (value == null && !this.o.cacheUndefined) {
      if (replace) this.guard(() => s.delete(k))
      else s.abandon?.(k) // nothing was stored: what the miss made ready for it goes
      return claim === undefined ? undefined : this.release(s, k, claim, undefined)
    }
    try {
      const r = s.write(k, value, wasPromise, s.ignoresTimes === true ? NO_TIMES : entryTimes(this.o), claim)
      if (isPromiseLike(r)) return Promise.resolve(r).catch((e: unknown) => this.writeFailure(e))
    } catch (e) {
      this.writeFailure(e)
    }
  }

  /** Runs a store operation whose failure is reported, not passed on. */
  protected guard(f: () => unknown): void {
    try {
      const r = f()
      if (isPromiseLike(r))
        Promise.resolve(r)
          .catch((e: unknown) => this.backendFailure(e))
          .catch(() => undefined)
    } catch (e) {
      this.backendFailure(e)
    }
  }

  /** Ends a computation's hold on its lock: whether it still owns it. */
  protected settle(id: string, owns: boolean, gen: number): boolean {
    if (!owns || gen !== this.generation) return false
    this.held.delete(id)
    return true
  }
  /** A value read for a call: fresh, or stale (answered, and refreshed in the background). */
  protected hit(self: unknown, a: ArrayLike<unknown>, k: K, f: Found, background: boolean, shape: boolean): unknown {
    const value = shape ? this.answer(f) : f.value
    if (f.fresh) this.stats.hits++
    else {
      this.stats.staleHits++
      if (!background) this.revalidate(self, a, k)
    }
    return value
  }

  /**
   * A Promise for a store that holds pending values (memory): stored at once, so later callers
   * get it, and stamped again once it settles; a rejection removes it. A background refresh
   * replaces the stale entry only once it settles.
   */
  protected holdPending(s: Store<K>, k: K, p: PromiseLike<unknown>, background: boolean): Promise<unknown> {
    const o = this.o
    if (!background) void s.write(k, p, true, entryTimes(o), undefined, true)
    p.then(
      (v) => {
        if (v == null && !o.cacheUndefined) {
          if (background) this.guard(() => s.delete(k))
          else s.forget!(k, p)
        } else if (background) void s.write(k, p, true, entryTimes(o), undefined, false, v)
        else s.settle!(k, p, v, entryTimes(o))
      },
      () => {
        this.stats.errors++
        s.forget!(k, p)
      },
    )
    return p as Promise<unknown>
  }

  /** Starts a computation that callers of `id` share while it runs. */
  protected track(id: string, start: () => Promise<unknown>): Promise<unknown> {
    const running: Running = { p: null, settled: false }
    const p = start().finally(() => {
      running.settled = true
      if (this.inflight.get(id) === running) this.inflight.delete(id)
    })
    running.p = p
    if (!running.settled) this.inflight.set(id, running)
    return p
  }

  /**
   * Computes, then stores the value (releasing `claim`'s lock, if the lock is still ours) or, on a
   * rejection, releases the lock with the error. Without a claim (the wait ended without a value)
   * the value is stored unlocked; without `k` (the store failed) it is not stored.
   */
  protected async compute(
    self: unknown,
    a: ArrayLike<unknown>,
    k: K | undefined,
    force: boolean,
    claim?: Claim,
    id = '',
  ): Promise<unknown> {
    const s = this.store
    const gen = this.generation
    if (claim !== undefined) this.held.set(id, { k: k!, claim })
    this.stats.computations++
    let v: unknown
    try {
      v = await this.fn.apply(self, a as unknown[])
    } catch (err) {
      this.stats.errors++
      // Awaited: a call made after this rejection finds the lock released and computes again.
      if (claim !== undefined && this.settle(id, true, gen)) await this.release(s!, k!, claim, err)
      throw err
    }
    if (k === undefined || s === null) return v
    // clearLocks() or close() took the lock away meanwhile: the value is returned, not stored.
    if (claim === undefined || this.settle(id, true, gen)) await this.keep(s, k, v, true, claim, force)
    return v
  }

  /**
   * The async path, of async functions and async stores: `k` is kept for the call. On a sync
   * store the caller has read already; `background`: a stale entry's refresh.
   */
  protected async run(
    self: unknown,
    a: ArrayLike<unknown>,
    k: K,
    id: string,
    force: boolean,
    maxAge: number | undefined,
    background: boolean,
  ): Promise<unknown> {
    const s = this.store!
    if (!force && !s.sync) {
      let found: Found | undefined
      try {
        found = await s.read(k)
      } catch (e) {
        // A read close() cut short is no store failure: the call ends as every call after close().
        if (this.closed) throw closedError(this.o.namespace)
        this.backendFailure(e)
        return this.compute(self, a, undefined, false)
      }
      if (this.closed) throw closedError(this.o.namespace)
      const old = found !== undefined && maxAge !== undefined && now() - found.created > maxAge
      if (found !== undefined && !old) return this.hit(self, a, k, found, background, false)
      if (old) force = true // too old for this call: overwrite it
    }
    let claim: Claim
    try {
      claim = await (s.sync ? s.lockAsync!(k, force) : s.lock(k, force))
    } catch (e) {
      // close() ended the wait: an async store's call ends as every call after close(); a sync
      // store's computes, storing nothing (its store is gone), as a call that began before close().
      if (this.closed && !s.sync) throw closedError(this.o.namespace)
      if (this.closed) return this.compute(self, a, undefined, false)
      this.backendFailure(e)
      return this.compute(self, a, undefined, false)
    }
    switch (claim.state) {
      case ClaimState.Value: {
        const f = claim.found!
        if (maxAge !== undefined && now() - f.created > maxAge)
          return this.run(self, a, k, id, true, undefined, background)
        if (!f.fresh) return this.hit(self, a, k, f, background, false)
        this.stats.waits++
        return f.value
      }
      case ClaimState.Acquired:
        // A miss of an async store (a sync store counted it when its read missed).
        if (!background && !s.sync) this.stats.misses++
        return this.compute(self, a, k, force, claim, id)
      case ClaimState.Failed:
        this.stats.waits++
        throw claim.error
      case ClaimState.Unlocked:
        return this.compute(self, a, k, force)
      default:
        // lockTimeout passed, or the holder finished without a value: compute here, unlocked.
        this.stats.waits++
        return this.compute(self, a, k, force)
    }
  }

  /** Refreshes a stale entry in the background, once at a time per key in this thread. */
  protected revalidate(self: unknown, a: ArrayLike<unknown>, k: K): void {
    const s = this.store!
    const id = s.id(k)
    const rid = id + ':refresh'
    // (A call on an async store is itself in flight under `id` while it answers a stale value.)
    if (this.inflight.has(rid) || this.refreshing.has(id) || (s.sync && this.inflight.has(id))) return
    const kept = s.keep(k)
    const copy = Array.from(a)
    if (this.asyncFn || !s.sync) {
      this.track(rid, () =>
        s.holdsPending ? this.refreshPending(self, copy, kept) : this.run(self, copy, kept, id, true, undefined, true),
      ).catch(() => {
        // Counted in stats.errors; the stale value is served until it expires.
      })
      return
    }
    // A sync function stays sync: refresh it on a later turn of the event loop.
    this.refreshing.add(id)
    setImmediate(() => {
      try {
        this.computeSync(self, copy, kept, true)
      } catch {
        // Counted in stats.errors; the stale value is served until it expires.
      } finally {
        this.refreshing.delete(id)
      }
    })
  }

  /** The background refresh of an async function's entry on a store that holds pending Promises. */
  protected refreshPending(self: unknown, a: ArrayLike<unknown>, k: K): Promise<unknown> {
    this.stats.computations++
    let r: unknown
    try {
      r = this.fn.apply(self, a as unknown[])
    } catch (err) {
      this.stats.errors++
      return Promise.reject(err)
    }
    if (!isPromiseLike(r)) {
      void this.keep(this.store!, k, r, false, undefined, true)
      return Promise.resolve(r)
    }
    return this.holdPending(this.store!, k, r, true)
  }

  /** A sync function's miss on a sync store (engine.ts): the sync path of a refresh. */
  protected abstract computeSync(self: unknown, a: ArrayLike<unknown>, k: K, force: boolean, claim?: Claim): unknown
}
