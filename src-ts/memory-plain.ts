import { closedError } from './errors'
import { encodeKeyString } from './key'
import { lastToken, prune, UNSUPPORTED, walk } from './key-trie'
import type { Node } from './key-trie'
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
/** Integer keys below this index an array. */
const INT_LIMIT = 1 << 24

type Container = unknown[] | Map<unknown, unknown>

export function plainImplementation<F extends AnyFn>(fn: F, o: ResolvedOptions): Implementation<F> {
  const keyFn = o.key as ((...args: unknown[]) => unknown) | undefined
  const { lockTimeout, cacheUndefined } = o
  const stats = { hits: 0, misses: 0, staleHits: 0, computations: 0, waits: 0, errors: 0 }
  let ints: unknown[] = []
  const prim = new Map<unknown, unknown>()
  const enc = new Map<unknown, unknown>()
  let root: Node = new Map()
  let count = 0
  /** Pending promises: when each started, and where it is stored. */
  const pending = new Map<unknown, { started: number; c: Container; k: unknown }>()
  /** Creation times, for `with({ maxAge })`: integer keys in an array, the rest per container. */
  let intsAt: number[] = []
  let timesOf = new WeakMap<Container, Map<unknown, number>>()
  let closed = false

  let curC: Container | null = prim
  let curK: unknown
  let curSrc: ArrayLike<unknown> = []

  function keyFor(args: ArrayLike<unknown>, make: boolean): void {
    const src = keyFn === undefined ? args : [keyFn(...Array.from(args))]
    if (src.length === 1) {
      const a = src[0]
      const t = typeof a
      if (t === 'number' && (a as number) >>> 0 === a && (a as number) < INT_LIMIT && (a !== 0 || 1 / a > 0)) {
        curC = ints
        curK = a
        return
      }
      if (t === 'string' || t === 'boolean' || t === 'undefined' || t === 'bigint' || a === null || (t === 'number' && (a !== 0 || 1 / (a as number) > 0))) {
        curC = prim
        curK = a
        return
      }
    }
    const found = walk(root, src, make)
    if (found === UNSUPPORTED) {
      curC = enc
      curK = encodeKeyString(src)
    } else {
      curC = (found as Node | undefined) ?? null
      curK = lastToken
      curSrc = src
    }
  }

  function target(): Container {
    if (curC === null) {
      curC = walk(root, curSrc, true) as Node
      curK = lastToken
    }
    return curC
  }

  const read = (c: Container, k: unknown): unknown => (c === ints ? ints[k as number] : (c as Map<unknown, unknown>).get(k))

  function write(c: Container, k: unknown, v: unknown): void {
    if (read(c, k) === undefined) count++
    if (c === ints) ints[k as number] = v
    else (c as Map<unknown, unknown>).set(k, v)
    if (c === ints) intsAt[k as number] = Date.now()
    else {
      let times = timesOf.get(c)
      if (times === undefined) timesOf.set(c, (times = new Map()))
      times.set(k, Date.now())
    }
  }

  function erase(c: Container, k: unknown): boolean {
    const v = read(c, k)
    if (v === undefined) return false
    count--
    pending.delete(v)
    if (c === ints) delete ints[k as number]
    else if (c !== prim && c !== enc) prune(c as Node, k)
    else (c as Map<unknown, unknown>).delete(k)
    if (c !== ints) timesOf.get(c)?.delete(k)
    return true
  }

  /** Stores a result (a pending promise is shared until it settles; a rejection is dropped). */
  function keep(c: Container, k: unknown, r: unknown): void {
    if (isPromiseLike(r)) {
      write(c, k, r)
      pending.set(r, { started: Date.now(), c, k })
      r.then(
        (v) => {
          pending.delete(r)
          if (v == null && !cacheUndefined && read(c, k) === r) erase(c, k)
        },
        () => {
          pending.delete(r)
          stats.errors++
          if (read(c, k) === r) erase(c, k)
        },
      )
    } else if (r != null || cacheUndefined) write(c, k, r === undefined ? UNDEF : r)
  }

  function compute(self: unknown, args: ArrayLike<unknown>, c: Container, k: unknown): unknown {
    if (closed) throw closedError(o.namespace)
    stats.computations++
    let r: unknown
    try {
      r = fn.apply(self, args as unknown[])
    } catch (err) {
      stats.errors++
      throw err
    }
    keep(c, k, r)
    return r
  }

  function tooOld(c: Container, k: unknown, maxAge: number): boolean {
    const t = c === ints ? intsAt[k as number] : timesOf.get(c)?.get(k)
    return t === undefined || Date.now() - t > maxAge
  }

  function call(self: unknown, args: ArrayLike<unknown>, co: ResolvedCallOptions | undefined): ReturnType<F> {
    if (closed) throw closedError(o.namespace)
    if (co?.bypass) return fn.apply(self, args as unknown[])
    keyFor(args, false)
    const v = curC === null ? undefined : read(curC, curK)
    if (v !== undefined && co?.refresh !== true && (co?.maxAge === undefined || !tooOld(curC!, curK, co.maxAge))) {
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
    const c = target()
    return compute(self, args, c, curK) as ReturnType<F>
  }

  // The hot path: one number or string argument, no key function.
  const fast =
    keyFn === undefined
      ? (function (this: unknown, a?: unknown) {
          if (arguments.length === 1) {
            if (typeof a === 'number') {
              if (a >>> 0 === a && a < INT_LIMIT && (a !== 0 || 1 / a > 0)) {
                const v = ints[a]
                if (v !== undefined && pending.size === 0) {
                  stats.hits++
                  return v === UNDEF ? undefined : v
                }
                if (v === undefined) {
                  stats.misses++
                  return compute(this, [a], ints, a)
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
            }
          }
          // eslint-disable-next-line prefer-rest-params -- no array allocation on the hot path
          return call(this, arguments, undefined)
        } as unknown as F)
      : undefined

  function lookup(args: ArrayLike<unknown>): unknown {
    keyFor(args, false)
    return curC === null ? undefined : read(curC, curK)
  }

  function clearOwn(): void {
    ints = []
    prim.clear()
    enc.clear()
    root = new Map()
    pending.clear()
    intsAt = []
    timesOf = new WeakMap()
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
        return curC !== null && erase(curC, curK)
      },
      has: (...args) => lookup(args) !== undefined,
      peek(...args) {
        const v = lookup(args)
        return (v === UNDEF ? undefined : v) as ReturnType<F> | undefined
      },
      set(args, value) {
        keyFor(args, true)
        const c = target()
        keep(c, curK, value)
      },
      clearLocks() {
        for (const [, p] of [...pending]) erase(p.c, p.k)
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
