import { ClaimState } from './backends/store'
import type { Claim, Found, Store } from './backends/store'
import { Computations } from './computations'
import { closedError } from './errors'
import { now } from './options'
import type { ResolvedCallOptions } from './types'
import { isPromiseLike } from './types'

export { newCounters } from './computations'
export type { Counters } from './computations'

/*
 * Memoization above the store interface (backends/store.ts), the same for every backend: which
 * caller computes and which waits (single flight in this thread; the store's lock across threads,
 * processes and machines), stale-while-revalidate, errors (the function's pass through unchanged
 * and are never stored; the store's are reported as `onBackendError` says), and the counters.
 * A sync store with a sync function stays sync end to end; everything else takes the async
 * path of computations.ts.
 */

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

export class Engine<K> extends Computations<K> {
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
  protected callSync(self: unknown, a: ArrayLike<unknown>, co: ResolvedCallOptions | undefined): unknown {
    if (this.closed) throw closedError(this.o.namespace)
    if (co?.bypass) {
      const r = this.fn.apply(self, a as unknown[])
      return this.sync ? r : Promise.resolve(r)
    }
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
    if (
      co === undefined &&
      s.readOrLock !== undefined &&
      !this.asyncFn &&
      computingDepth === 0 &&
      this.inflight.size === 0
    ) {
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
      // (A computation in flight is shared whatever maxAge says: it is younger than any entry.)
      if (found !== undefined && !found.pending && co?.maxAge !== undefined && now() - found.created > co.maxAge) {
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
  protected callAsyncStore(
    self: unknown,
    a: ArrayLike<unknown>,
    k: K,
    co: ResolvedCallOptions | undefined,
  ): Promise<unknown> {
    const id = this.store!.id(k)
    const force = co?.refresh === true
    const running = this.inflight.get(id)
    if (running !== undefined && !force) {
      this.stats.waits++
      return running.p!
    }
    return this.track(id, () => this.run(self, a, k, id, force, co?.maxAge, false))
  }

  /**
   * A miss of a sync function on a sync store, under the key's lock (`claim`: the one
   * `readOrLock` took or waited for). A nested call of a key this thread is computing computes
   * without the lock: waiting would block the thread on itself.
   */
  protected computeSync(self: unknown, a: ArrayLike<unknown>, k: K, force: boolean, claim?: Claim): unknown {
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
      if (this.heldSyncTop > heldAt) this.heldSyncTop = heldAt
      stats.errors++
      s.abandon?.(kept)
      if (locked && gen === this.generation) void this.release(s, kept, claim, err)
      throw err
    } finally {
      // Lowered only: a clearLocks() inside the computation may have emptied the stack.
      if (this.heldSyncTop > heldAt) this.heldSyncTop = heldAt
      computingDepth = depth
    }
    if (isPromiseLike(v)) {
      this.asyncFn = true
      return this.finishAsync(s, s.keep(kept), v, locked ? claim : undefined, gen, force)
    }
    if (!locked || gen === this.generation) void this.keep(s, kept, v, false, locked ? claim : undefined, force)
    return v
  }

  /** A sync computation returned a Promise: it finishes in the background, shared meanwhile. */
  protected finishAsync(
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
