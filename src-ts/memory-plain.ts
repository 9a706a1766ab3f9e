import { closedError } from './errors'
import { attached, detachments, findObject, prune, rootOf, UNDECIDED } from './key-trie'
import type { Node } from './key-trie'
import { INT_LIMIT, KeyRouter } from './key-router'
import type { Container } from './key-router'
import type { ResolvedOptions } from './options'
import type { AnyFn, Implementation, ResolvedCallOptions } from './types'
import { isPromiseLike } from './types'

/*
 * The `memory` backend when nothing expires and nothing is bounded (no ttl, maxEntries,
 * maxBytes or maxValueBytes): values sit directly in their containers, with no entry object
 * around them, so a hit is one lookup and a miss one store. Non-negative integer keys index an
 * array; other lone primitives key a Map; plain objects and arrays walk the key trie; anything
 * else is keyed by its canonical encoding. (memory.ts handles the expiring and bounded cases.)
 */

/** Stands for a cached `undefined` (an absent slot reads as `undefined`). */
const UNDEF = Object.freeze({ cachette: 'undefined' })

export function plainImplementation<F extends AnyFn>(fn: F, o: ResolvedOptions): Implementation<F> {
  const keyFn = o.key as ((...args: unknown[]) => unknown) | undefined
  const { lockTimeout, cacheUndefined } = o
  const stats = { hits: 0, misses: 0, staleHits: 0, computations: 0, waits: 0, errors: 0 }
  const router = new KeyRouter(true)
  const prim = router.prim
  let count = 0
  /** Pending promises: when each started, and where it is stored. */
  const pending = new Map<unknown, { started: number; c: Container; k: unknown }>()
  /**
   * Creation times for `with({ maxAge })`, recorded once such a view exists (misses stay cheap
   * until then): integer keys in an array, the rest per container. An entry stored before has
   * an unknown age, bounded by the time of the first store since the last clear.
   */
  let tracking = false
  let firstWrite = 0
  let intsAt: number[] = []
  let timesOf = new WeakMap<Container, Map<unknown, number>>()
  let closed = false

  function keyFor(args: ArrayLike<unknown>, make: boolean): void {
    router.route(keyFn === undefined ? args : [keyFn(...Array.from(args))], make)
  }

  const read = (c: Container, k: unknown): unknown => (Array.isArray(c) ? c[k as number] : c.get(k))

  function write(c: Container, k: unknown, v: unknown): void {
    if (read(c, k) === undefined) count++
    if (firstWrite === 0) firstWrite = Date.now()
    if (Array.isArray(c)) {
      c[k as number] = v
      if (tracking) intsAt[k as number] = Date.now()
    } else {
      c.set(k, v)
      if (tracking) {
        let times = timesOf.get(c)
        if (times === undefined) timesOf.set(c, (times = new Map()))
        times.set(k, Date.now())
      }
    }
  }

  function erase(c: Container, k: unknown): boolean {
    const v = read(c, k)
    if (v === undefined) return false
    count--
    pending.delete(v)
    if (Array.isArray(c)) delete c[k as number]
    else {
      if (router.isTrie(c)) prune(c as Node, k)
      else c.delete(k)
      timesOf.get(c)?.delete(k)
    }
    return true
  }

  /** Stores a result (a pending promise is shared until it settles; a rejection is dropped). */
  function keep(c: Container, k: unknown, r: unknown): void {
    if (isPromiseLike(r)) {
      write(c, k, r)
      pending.set(r, { started: Date.now(), c, k })
      r.then(
        // After a clear() the promise is no longer pending here: its old slot must not be touched.
        (v) => {
          if (pending.delete(r) && v == null && !cacheUndefined && read(c, k) === r) erase(c, k)
        },
        () => {
          stats.errors++
          if (pending.delete(r) && read(c, k) === r) erase(c, k)
        },
      )
    } else if (r != null || cacheUndefined) write(c, k, r === undefined ? UNDEF : r)
  }

  function compute(self: unknown, args: ArrayLike<unknown>, c: Container, k: unknown): unknown {
    if (closed) throw closedError(o.namespace)
    stats.computations++
    const before = detachments
    const root = router.root
    let r: unknown
    try {
      r = fn.apply(self, args as unknown[])
    } catch (err) {
      stats.errors++
      // The miss walked its trie path into being: take it away again if nothing else uses it.
      if (router.isTrie(c) && read(c, k) === undefined) prune(c as Node, k)
      throw err
    }
    if ((before !== detachments || root !== router.root) && router.isTrie(c) && !attached(c as Node, router.root)) {
      // The function ran this memoized function again, and a call that failed inside pruned the
      // path; or it cleared the cache, whose entries are then no place for this result.
      if (rootOf(c as Node) !== router.root) return r
      keyFor(args, true)
      c = router.target()
      k = router.key
    }
    store(c, k, r)
    return r
  }

  /** `keep`, then drops the trie path of a result that was not stored (null, undefined). */
  function store(c: Container, k: unknown, r: unknown): void {
    keep(c, k, r)
    if (r == null && !cacheUndefined && router.isTrie(c) && read(c, k) === undefined) prune(c as Node, k)
  }

  /**
   * `compute` for one integer argument (the `fast` path's miss): stores into the array directly,
   * so this path stays monomorphic whatever containers other keys use.
   */
  function computeInt(self: unknown, a: number): unknown {
    if (closed) throw closedError(o.namespace)
    stats.computations++
    let r: unknown
    try {
      r = fn.call(self, a)
    } catch (err) {
      stats.errors++
      throw err
    }
    const ints = router.ints as unknown[]
    if (isPromiseLike(r)) keep(ints, a, r)
    else if (r != null || cacheUndefined) {
      if (ints[a] === undefined) count++
      if (firstWrite === 0) firstWrite = Date.now()
      ints[a] = r === undefined ? UNDEF : r
      if (tracking) intsAt[a] = Date.now()
    }
    return r
  }

  function tooOld(c: Container, k: unknown, maxAge: number): boolean {
    const t = (Array.isArray(c) ? intsAt[k as number] : timesOf.get(c)?.get(k)) ?? firstWrite
    return Date.now() - t > maxAge
  }

  function call(self: unknown, args: ArrayLike<unknown>, co: ResolvedCallOptions | undefined): ReturnType<F> {
    if (closed) throw closedError(o.namespace)
    if (co?.bypass) return fn.apply(self, args as unknown[])
    // A miss stores under this key: walking it into being now spares a second walk.
    keyFor(args, true)
    const c = router.container
    const v = c === null ? undefined : read(c, router.key)
    if (v !== undefined && co?.refresh !== true && (co?.maxAge === undefined || !tooOld(c!, router.key, co.maxAge))) {
      const p = pending.size === 0 ? undefined : pending.get(v)
      if (p === undefined) {
        stats.hits++
        return (v === UNDEF ? undefined : v) as ReturnType<F>
      }
      if (Date.now() - p.started <= lockTimeout) {
        stats.waits++
        return v as ReturnType<F>
      }
    }
    stats.misses++
    return compute(self, args, router.target(), router.key) as ReturnType<F>
  }

  // The hot path: one number or string argument, no key function.
  const fast =
    keyFn === undefined
      ? (function (this: unknown, a?: unknown) {
          if (arguments.length === 1) {
            if (typeof a === 'number') {
              if (a >>> 0 === a && a < INT_LIMIT && (a !== 0 || 1 / a > 0)) {
                const ints = router.ints as unknown[]
                const v = ints[a]
                if (v !== undefined && pending.size === 0) {
                  stats.hits++
                  return v === UNDEF ? undefined : v
                }
                if (v === undefined) {
                  stats.misses++
                  return computeInt(this, a)
                }
              }
            } else if (typeof a === 'string') {
              const v = prim.get(a)
              if (v !== undefined && pending.size === 0) {
                stats.hits++
                return v === UNDEF ? undefined : v
              }
              if (v === undefined) {
                stats.misses++
                return compute(this, [a], prim, a)
              }
            } else if (typeof a === 'object' && a !== null && pending.size === 0) {
              const proto = Object.getPrototypeOf(a)
              if (proto === Object.prototype || proto === null) {
                const v = findObject(router.root, a as Record<string, unknown>)
                if (v !== UNDECIDED) {
                  stats.hits++
                  return v === UNDEF ? undefined : v
                }
              }
            }
          }
          // eslint-disable-next-line prefer-rest-params -- no array allocation on the hot path
          return call(this, arguments, undefined)
        } as unknown as F)
      : undefined

  function lookup(args: ArrayLike<unknown>): unknown {
    keyFor(args, false)
    return router.container === null ? undefined : read(router.container, router.key)
  }

  function clearOwn(): void {
    router.reset()
    pending.clear()
    intsAt = []
    timesOf = new WeakMap()
    firstWrite = 0
    count = 0
  }

  return {
    call,
    fast,
    stats,
    methods: {
      clearOwn,
      size: () => count,
      delete(...args) {
        keyFor(args, false)
        return router.container !== null && erase(router.container, router.key)
      },
      has: (...args) => lookup(args) !== undefined,
      peek(...args) {
        const v = lookup(args)
        return (v === UNDEF ? undefined : v) as ReturnType<F> | undefined
      },
      set(args, value) {
        keyFor(args, true)
        store(router.target(), router.key, value)
      },
      clearLocks() {
        for (const [, p] of [...pending]) erase(p.c, p.k)
      },
      trackAge() {
        tracking = true
      },
      flush: () => Promise.resolve(),
      close() {
        closed = true
        clearOwn()
        return Promise.resolve()
      },
    },
  }
}
