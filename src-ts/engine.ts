import { types } from 'node:util'
import { ClaimState } from './backends/store'
import type { Claim, Found, Store } from './backends/store'
import { CachetteError, closedError, fromNative } from './errors'
import { encodeKeyLength } from './key'
import { entryTimes, now } from './options'
import type { ResolvedOptions } from './options'
import type { AnyFn, ResolvedCallOptions, Stats } from './types'
import { isPromiseLike, warnOnce } from './types'

/*
 * Memoization above the store interface (backends/store.ts), the same for every backend: which
 * caller computes and which waits (single flight in this thread; the store's lock across threads,
 * processes and machines), stale-while-revalidate, errors (the function's pass through unchanged
 * and are never stored; the store's are reported as `onBackendError` says), and the counters.
 * A sync store with a sync function stays sync end to end; everything else takes `run`.
 */

/** The counters of `stats()`, before `size` is added. */
export type Counters = Omit<Stats, 'size'>

export const newCounters = (): Counters => ({ hits: 0, misses: 0, staleHits: 0, computations: 0, waits: 0, errors: 0 })

/** A computation in flight in this thread: callers of its key share `p` until it settles. */
interface Running {
  p: Promise<unknown> | null
  settled: boolean
}

/**
 * Keys this thread computes synchronously right now, innermost last, for every memoized function:
 * a digest includes the namespace, so functions sharing one meet here, and a nested call of such
 * a key must not wait for the lock its own thread holds. Each depth keeps its key's copy from one
 * call to the next.
 */
const computing: { s: Store<unknown> | null; k: unknown }[] = []
let computingDepth = 0

/** Whether this thread is computing `k` of a store of `s`'s kind. */
function isComputing<K>(s: Store<K>, k: K): boolean {
  for (let i = 0; i < computingDepth; i++) {
    const c = computing[i]
    if (c.s !== null && c.s.constructor === s.constructor && s.same(c.k as K, k)) return true
  }
  return false
}

/** A lock this function holds now (`clearLocks()` and `close()` release it). */
interface Held<K> {
  k: K
  claim: Claim
}

export class Engine<K> {
  readonly stats = newCounters()
  store: Store<K> | null = null
  closed = false
  /** Whether the store answers synchronously (method answers keep this shape after close()). */
  readonly sync: boolean
  private asyncFn: boolean
  private readonly keyFn: ((...args: unknown[]) => unknown) | undefined
  /** Computations of this thread by key id, for stores that do not hold pending Promises. */
  private readonly inflight = new Map<string, Running>()
  /** Keys of sync functions being refreshed in the background. */
  private readonly refreshing = new Set<string>()
  /** Bumped by clearLocks() and close(): computations started before no longer own their lock. */
  private generation = 0
  private readonly held = new Map<string, Held<K>>()
  /** Locks of sync computations in progress (nested, so a stack; its entries reused). */
  private readonly heldSync: Held<K>[] = []
  private heldSyncTop = 0

  /** Opens the store; one that cannot be opened is reported, and every call then computes. */
  constructor(
    private readonly fn: AnyFn,
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
  }

  /** Reports a store failure: thrown with `onBackendError: 'throw'`, else counted and warned once. */
  backendFailure(e: unknown): void {
    this.stats.errors++
    const err = fromNative(e)
    if (this.o.onBackendError === 'throw') throw err
    warnOnce(`cachette: ${this.o.namespace}: ${err.message} (${err.code}); computing without the cache`)
  }

  /** A failed write: an unencodable value, or the store's own failure. */
  private writeFailure(e: unknown): void {
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
  keep(s: Store<K>, k: K, value: unknown, wasPromise: boolean, claim: Claim | undefined, replace = false): void | Promise<void> {
    if (value == null && !this.o.cacheUndefined) {
      if (replace) this.guard(() => s.delete(k))
      return claim === undefined ? undefined : this.release(s, k, claim, undefined)
    }
    try {
      const r = s.write(k, value, wasPromise, entryTimes(this.o), claim)
      if (isPromiseLike(r)) return Promise.resolve(r).catch((e: unknown) => this.writeFailure(e))
    } catch (e) {
      this.writeFailure(e)
    }
  }

  /** Runs a store operation whose failure is reported, not passed on. */
  private guard(f: () => unknown): void {
    try {
      const r = f()
      if (isPromiseLike(r)) Promise.resolve(r).catch((e: unknown) => this.backendFailure(e)).catch(() => undefined)
    } catch (e) {
      this.backendFailure(e)
    }
  }

  /** Ends a computation's hold on its lock: whether it still owns it. */
  private settle(id: string, owns: boolean, gen: number): boolean {
    if (!owns || gen !== this.generation) return false
    this.held.delete(id)
    return true
  }

  call(self: unknown, a: ArrayLike<unknown>, co: ResolvedCallOptions | undefined): unknown {
    if (!this.sync) {
      // Every failure of a call on an async store is a rejection, as from an async function.
      try {
        return this.callSync(self, a, co)
      } catch (e) {
        return Promise.reject(e)
      }
    }
    return this.callSync(self, a, co)
  }

  /** A call, answered synchronously on a sync store. */
  private callSync(self: unknown, a: ArrayLike<unknown>, co: ResolvedCallOptions | undefined): unknown {
    if (this.closed) throw closedError(this.o.namespace)
    if (co?.bypass) return this.fn.apply(self, a as unknown[])
    const s = this.store
    if (s === null) {
      this.checkKey(a)
      this.stats.misses++
      this.stats.computations++
      return this.fn.apply(self, a as unknown[])
    }
    const k = s.key(this.keyArgs(a))
    if (!s.sync) return this.callAsyncStore(self, a, k, co)
    let force = co?.refresh === true
    let found: Found | undefined
    if (co === undefined && s.readOrLock !== undefined && !this.asyncFn && computingDepth === 0 && this.inflight.size === 0) {
      // A sync function with nothing of its own in progress reads, and on a miss takes the lock, in one step.
      let claim: Claim | undefined
      try {
        claim = s.readOrLock(k)
      } catch (e) {
        this.backendFailure(e)
        return this.fn.apply(self, a as unknown[])
      }
      if (claim !== undefined) {
        this.stats.misses++
        return this.computeSync(self, a, k, false, claim)
      }
      found = s.lastFound
    } else if (!force) {
      try {
        found = s.read(k) as Found | undefined
      } catch (e) {
        this.backendFailure(e)
        return this.fn.apply(self, a as unknown[])
      }
      if (found !== undefined && co?.maxAge !== undefined && now() - found.created > co.maxAge) {
        found = undefined // too old for this call: compute anew and overwrite
        force = true
      }
    }
    if (found !== undefined) {
      if (!found.pending) return this.hit(self, a, k, found, false, true)
      // A computation in flight, held by the store: share it unless it ran past lockTimeout.
      if (now() - found.created <= this.o.lockTimeout) {
        this.stats.waits++
        return found.value
      }
    }
    if (!s.holdsPending) {
      const id = s.id(k)
      const running = this.inflight.get(id)
      if (running !== undefined && !force) {
        this.stats.waits++
        return running.p
      }
      this.stats.misses++
      if (this.asyncFn) return this.track(id, () => this.run(self, a, s.keep(k), id, force, undefined, false))
      return this.computeSync(self, a, k, force)
    }
    this.stats.misses++
    return this.computeSync(self, a, k, force)
  }

  /** A call on an async store: every outcome, errors included, is a Promise. */
  private callAsyncStore(self: unknown, a: ArrayLike<unknown>, k: K, co: ResolvedCallOptions | undefined): Promise<unknown> {
    const id = this.store!.id(k)
    const force = co?.refresh === true
    const running = this.inflight.get(id)
    if (running !== undefined && !force) {
      this.stats.waits++
      return running.p!
    }
    return this.track(id, () => this.run(self, a, k, id, force, co?.maxAge, false))
  }

  /** A value read for a call: fresh, or stale (answered, and refreshed in the background). */
  private hit(self: unknown, a: ArrayLike<unknown>, k: K, f: Found, background: boolean, shape: boolean): unknown {
    const value = shape ? this.answer(f) : f.value
    if (f.fresh) this.stats.hits++
    else {
      this.stats.staleHits++
      if (!background) this.revalidate(self, a, k)
    }
    return value
  }

  /**
   * A miss of a sync function on a sync store, under the key's lock (`claim`: the one
   * `readOrLock` took or waited for). A nested call of a key this thread is computing computes
   * without the lock: waiting would block the thread on itself.
   */
  private computeSync(self: unknown, a: ArrayLike<unknown>, k: K, force: boolean, claim?: Claim): unknown {
    const s = this.store!
    const stats = this.stats
    if (claim === undefined) {
      if (computingDepth > 0 && isComputing(s, k)) return this.fn.apply(self, a as unknown[])
      try {
        claim = s.lock(k, force) as Claim
      } catch (e) {
        this.backendFailure(e)
        return this.fn.apply(self, a as unknown[])
      }
    }
    const state = claim.state
    if (state === ClaimState.Value) {
      stats.waits++
      if (claim.found !== undefined) return this.answer(claim.found)
    } else if (state === ClaimState.Failed) {
      stats.waits++
      throw claim.error
    } else if (state === ClaimState.Settled || state === ClaimState.TimedOut) stats.waits++
    const locked = state === ClaimState.Acquired
    stats.computations++
    // The function may call this memoized function again, which reuses the store's key: this
    // depth keeps its own copy, marked as computing until it is stored.
    const depth = computingDepth
    const kept = s.keep(k, depth)
    const c = computing[depth] ?? (computing[depth] = { s: null, k: null })
    c.s = s as Store<unknown>
    c.k = kept
    computingDepth = depth + 1
    const gen = this.generation
    const heldAt = this.heldSyncTop
    if (locked) {
      const h = this.heldSync[heldAt] ?? (this.heldSync[heldAt] = { k: kept, claim })
      h.k = kept
      h.claim = claim
      this.heldSyncTop = heldAt + 1
    }
    let v: unknown
    try {
      v = this.fn.apply(self, a as unknown[])
    } catch (err) {
      computingDepth = depth
      this.heldSyncTop = heldAt
      stats.errors++
      s.abandon?.(kept)
      if (locked && gen === this.generation) this.release(s, kept, claim, err)
      throw err
    } finally {
      this.heldSyncTop = heldAt
      computingDepth = depth
    }
    if (isPromiseLike(v)) {
      this.asyncFn = true
      return this.finishAsync(s, s.keep(kept), v, locked ? claim : undefined, gen, force)
    }
    if (!locked || gen === this.generation) this.keep(s, kept, v, false, locked ? claim : undefined, force)
    return v
  }

  /** A sync computation returned a Promise: it finishes in the background, shared meanwhile. */
  private finishAsync(
    s: Store<K>,
    k: K,
    p: PromiseLike<unknown>,
    claim: Claim | undefined,
    gen: number,
    force: boolean,
  ): Promise<unknown> {
    if (s.holdsPending) return this.holdPending(s, k, p, false)
    const id = s.id(k)
    const owns = claim !== undefined && gen === this.generation
    if (owns) this.held.set(id, { k, claim })
    return this.track(id, async () => {
      let x: unknown
      try {
        x = await p
      } catch (err) {
        this.stats.errors++
        if (this.settle(id, owns, gen)) await this.release(s, k, claim!, err)
        throw err
      }
      if (this.settle(id, owns, gen)) await this.keep(s, k, x, true, claim, force)
      else if (claim === undefined) await this.keep(s, k, x, true, undefined, force)
      return x
    })
  }

  /**
   * A Promise for a store that holds pending values (memory): stored at once, so later callers
   * get it, and stamped again once it settles; a rejection removes it. A background refresh
   * replaces the stale entry only once it settles.
   */
  private holdPending(s: Store<K>, k: K, p: PromiseLike<unknown>, background: boolean): Promise<unknown> {
    const o = this.o
    if (!background) s.write(k, p, true, entryTimes(o), undefined, true)
    p.then(
      (v) => {
        if (v == null && !o.cacheUndefined) {
          if (background) this.guard(() => s.delete(k))
          else s.forget!(k, p)
        } else if (background) s.write(k, p, true, entryTimes(o), undefined, false, v)
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
  private track(id: string, start: () => Promise<unknown>): Promise<unknown> {
    const running: Running = { p: null, settled: false }
    const p = start().finally(() => {
      running.settled = true
      if (this.inflight.get(id) === running) this.inflight.delete(id)
    })
    running.p = p
    if (!running.settled) this.inflight.set(id, running)
    return p
  }

  /** Computes without the lock (the store failed, or the wait ended without a value), storing if `k` is given. */
  private async computeUnlocked(self: unknown, a: ArrayLike<unknown>, k: K | undefined, force = false): Promise<unknown> {
    this.stats.computations++
    let v: unknown
    try {
      v = await this.fn.apply(self, a as unknown[])
    } catch (err) {
      this.stats.errors++
      throw err
    }
    if (k !== undefined && this.store !== null) await this.keep(this.store, k, v, true, undefined, force)
    return v
  }

  /** Computes holding `claim`'s lock, then stores (if the lock is still ours) or releases it with the error. */
  private async computeLocked(
    self: unknown,
    a: ArrayLike<unknown>,
    k: K,
    id: string,
    claim: Claim,
    force: boolean,
  ): Promise<unknown> {
    const s = this.store!
    const gen = this.generation
    this.held.set(id, { k, claim })
    this.stats.computations++
    let v: unknown
    try {
      v = await this.fn.apply(self, a as unknown[])
    } catch (err) {
      this.stats.errors++
      // Awaited: a call made after this rejection finds the lock released and computes again.
      if (this.settle(id, true, gen)) await this.release(s, k, claim, err)
      throw err
    }
    // clearLocks() or close() took the lock away meanwhile: the value is returned, not stored.
    if (this.settle(id, true, gen)) await this.keep(s, k, v, true, claim, force)
    return v
  }

  /**
   * The async path, of async functions and async stores: `k` is kept for the call. On a sync
   * store the caller has read already; `background`: a stale entry's refresh.
   */
  private async run(
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
        this.backendFailure(e)
        return this.computeUnlocked(self, a, undefined)
      }
      if (this.closed) throw closedError(this.o.namespace)
      const old = found !== undefined && maxAge !== undefined && now() - found.created > maxAge
      if (found !== undefined && !old) return this.hit(self, a, k, found, background, false)
      if (old) force = true // too old for this call: overwrite it
      else if (!background) this.stats.misses++
    }
    let claim: Claim
    try {
      claim = await (s.sync ? s.lockAsync!(k, force) : s.lock(k, force))
    } catch (e) {
      this.backendFailure(e)
      return this.computeUnlocked(self, a, undefined)
    }
    switch (claim.state) {
      case ClaimState.Value: {
        const f = claim.found!
        if (maxAge !== undefined && now() - f.created > maxAge) return this.run(self, a, k, id, true, undefined, background)
        if (!f.fresh) return this.hit(self, a, k, f, background, false)
        this.stats.waits++
        return f.value
      }
      case ClaimState.Acquired:
        return this.computeLocked(self, a, k, id, claim, force)
      case ClaimState.Failed:
        this.stats.waits++
        throw claim.error
      case ClaimState.Unlocked:
        return this.computeUnlocked(self, a, k, force)
      default:
        // lockTimeout passed, or the holder finished without a value: compute here, unlocked.
        this.stats.waits++
        return this.computeUnlocked(self, a, k, force)
    }
  }

  /** Refreshes a stale entry in the background, once at a time per key in this thread. */
  private revalidate(self: unknown, a: ArrayLike<unknown>, k: K): void {
    const s = this.store!
    const id = s.id(k)
    const rid = id + ':refresh'
    // (A call on an async store is itself in flight under `id` while it answers a stale value.)
    if (this.inflight.has(rid) || this.refreshing.has(id) || (s.sync && this.inflight.has(id))) return
    const kept = s.keep(k)
    const copy = Array.from(a)
    if (this.asyncFn || !s.sync) {
      this.track(rid, () => (s.holdsPending ? this.refreshPending(self, copy, kept) : this.run(self, copy, kept, id, true, undefined, true))).catch(
        () => {
          // Counted in stats.errors; the stale value is served until it expires.
        },
      )
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
  private refreshPending(self: unknown, a: ArrayLike<unknown>, k: K): Promise<unknown> {
    this.stats.computations++
    let r: unknown
    try {
      r = this.fn.apply(self, a as unknown[])
    } catch (err) {
      this.stats.errors++
      return Promise.reject(err)
    }
    if (!isPromiseLike(r)) {
      this.keep(this.store!, k, r, false, undefined, true)
      return Promise.resolve(r)
    }
    return this.holdPending(this.store!, k, r, true)
  }

  /** Releases every lock this function holds and forgets its computations in flight. */
  releaseHeld(): void {
    this.generation++
    const all = [...this.held.values(), ...this.heldSync.slice(0, this.heldSyncTop)]
    this.held.clear()
    this.heldSyncTop = 0
    this.inflight.clear()
    const s = this.store
    if (s !== null) for (const h of all) void this.release(s, h.k, h.claim, undefined)
  }
}
