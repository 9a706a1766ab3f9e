import { now } from '../clock'
import { attached, detachments, findObject, prune, rootOf, UNDECIDED } from '../key-trie'
import type { Node } from '../key-trie'
import { INT_LIMIT, KeyRouter } from '../key-router'
import type { Container } from '../key-router'
import type { Counters } from '../computations'
import type { AnyFn } from '../types'
import { ThreadStore } from './thread-store'
import type { Claim, EntryTimes, Found, Store } from './store'

/*
 * The `memory` store when nothing expires and nothing is bounded (no ttl, maxEntries, maxBytes
 * or maxValueBytes): values sit directly in their containers, with no entry object around them,
 * so a hit is one lookup and a miss one store. Non-negative integer keys index an array; other
 * lone primitives key a Map; plain objects and arrays walk the key trie; anything else is keyed
 * by its canonical encoding. A pending Promise is the value itself, and callers share it.
 *
 * `fastPath` answers the hits of one number, string or plain-object argument before any other
 * code runs: a call into the engine costs more than a whole hit here (a fast-memoize hit is about
 * 30 ns), so this one path is specialised; everything else, misses included, goes to the engine.
 */

/** Stands for a cached `undefined` (an absent slot reads as `undefined`). */
const UNDEF = Object.freeze({ cachette: 'undefined' })

/** Where a key's value lives, kept across a computation: `src` walks the path again if it was pruned. */
export interface PlainLoc {
  c: Container
  key: unknown
  src: ArrayLike<unknown>
  root: Node
  detachments: number
}

export class PlainBackend extends ThreadStore implements Store<KeyRouter | PlainLoc> {
  /** Nothing expires here: creation times are taken only when a `maxAge` view needs them. */
  readonly ignoresTimes = true
  readonly router = new KeyRouter(true)
  private count = 0
  /** Pending Promises: when each started, and where it is stored. */
  private readonly pending = new Map<unknown, { started: number; c: Container; k: unknown }>()
  /**
   * Creation times for `with({ maxAge })`, recorded once such a view exists (misses stay cheap
   * until then): integer keys in an array, the rest per container. An entry stored before has
   * an unknown age, bounded by the time of the first store since the last clear.
   */
  private tracking = false
  private firstWrite = 0
  private intsAt: number[] = []
  private timesOf = new WeakMap<Container, Map<unknown, number>>()
  private src: ArrayLike<unknown> = []
  /** The kept keys of sync computations, one per nesting depth (see `keep`). */
  private readonly slots: PlainLoc[] = []
  private readonly found: Found = { value: undefined, fresh: true, created: 0, wasPromise: false, pending: false }

  key(args: ArrayLike<unknown>, lookup = false): KeyRouter {
    // A call's miss stores under this key: walking it into being now spares a second walk. A
    // lookup (has, peek, delete) makes nothing.
    this.router.route(args, !lookup)
    this.src = args
    return this.router
  }

  private containerOf(k: KeyRouter | PlainLoc): Container | null {
    return k === this.router ? this.router.container : (k as PlainLoc).c
  }

  private keyOf(k: KeyRouter | PlainLoc): unknown {
    return k === this.router ? this.router.key : (k as PlainLoc).key
  }

  keep(k: KeyRouter | PlainLoc, slot?: number): PlainLoc {
    if (k !== this.router) return slot === undefined ? { ...(k as PlainLoc) } : (k as PlainLoc)
    const r = this.router
    const c = r.target()
    if (slot === undefined) return { c, key: r.key, src: this.src, root: r.root, detachments }
    // A sync miss at this depth: one object per depth, reused by the next (a miss allocates nothing).
    const loc = this.slots[slot] ?? (this.slots[slot] = { c, key: null, src: [], root: r.root, detachments: 0 })
    loc.c = c
    loc.key = r.key
    loc.src = this.src
    loc.root = r.root
    loc.detachments = detachments
    return loc
  }

  id(k: KeyRouter | PlainLoc): string {
    const c = this.containerOf(k)
    const key = this.keyOf(k)
    return `p${typeof key}:${String(key)}:${c === this.router.ints ? 'i' : c === this.router.prim ? 'p' : 'o'}`
  }

  same(a: KeyRouter | PlainLoc, b: KeyRouter | PlainLoc): boolean {
    return this.containerOf(a) === this.containerOf(b) && this.keyOf(a) === this.keyOf(b)
  }

  private get(c: Container, k: unknown): unknown {
    return Array.isArray(c) ? c[k as number] : c.get(k)
  }

  read(k: KeyRouter | PlainLoc): Found | undefined {
    const c = this.containerOf(k)
    const key = this.keyOf(k)
    const v = c === null ? undefined : this.get(c, key)
    if (v === undefined) return undefined
    const f = this.found
    const p = this.pending.size === 0 ? undefined : this.pending.get(v)
    f.value = v === UNDEF ? undefined : v
    f.pending = p !== undefined
    f.created = p !== undefined ? p.started : this.tracking ? this.createdAt(c!, key) : this.firstWrite
    return f
  }

  private createdAt(c: Container, k: unknown): number {
    return (Array.isArray(c) ? this.intsAt[k as number] : this.timesOf.get(c)?.get(k)) ?? this.firstWrite
  }

  /** The container to store `loc` in now: its path walked again if a nested call pruned it, or null after a clear. */
  private place(loc: PlainLoc): Container | null {
    const r = this.router
    // Integer keys go to the array of now (a clear() meanwhile replaced the one the miss saw).
    if (Array.isArray(loc.c)) return (loc.c = r.ints as unknown[])
    if ((loc.detachments === detachments && loc.root === r.root) || !r.isTrie(loc.c) || attached(loc.c as Node, r.root))
      return loc.c
    // The function ran this memoized function again and a call that failed inside pruned the
    // path; or it cleared the cache, whose entries are then no place for this result.
    if (rootOf(loc.c as Node) !== r.root) return null
    r.route(loc.src, true)
    loc.c = r.target()
    loc.key = r.key
    return loc.c
  }

  write(
    k: KeyRouter | PlainLoc,
    value: unknown,
    _wasPromise: boolean,
    _t: EntryTimes,
    _c?: Claim,
    pending = false,
  ): void {
    const loc = k === this.router ? this.keep(k) : (k as PlainLoc)
    const c = this.place(loc)
    if (c === null) return
    if (pending) this.pending.set(value, { started: now(), c, k: loc.key })
    this.put(c, loc.key, value === undefined ? UNDEF : value)
  }

  settle(k: PlainLoc, p: PromiseLike<unknown>): void {
    // After a clear() the Promise is no longer pending here: its old slot must not be touched.
    this.pending.delete(p)
    if (this.tracking && this.get(k.c, k.key) === p) this.stamp(k.c, k.key, now())
  }

  forget(k: PlainLoc, p: PromiseLike<unknown>): void {
    if (this.pending.delete(p) && this.get(k.c, k.key) === p) this.erase(k.c, k.key)
  }

  abandon(k: KeyRouter | PlainLoc): void {
    // The miss walked its trie path into being: take it away again if nothing else uses it.
    const c = this.containerOf(k)
    const key = this.keyOf(k)
    if (this.router.isTrie(c) && this.get(c!, key) === undefined) prune(c as Node, key)
  }

  private put(c: Container, k: unknown, v: unknown): void {
    if (this.get(c, k) === undefined) this.count++
    if (this.firstWrite === 0) this.firstWrite = now()
    if (Array.isArray(c)) c[k as number] = v
    else c.set(k, v)
    if (this.tracking) this.stamp(c, k, now())
  }

  private stamp(c: Container, k: unknown, t: number): void {
    if (Array.isArray(c)) this.intsAt[k as number] = t
    else {
      let times = this.timesOf.get(c)
      if (times === undefined) this.timesOf.set(c, (times = new Map()))
      times.set(k, t)
    }
  }

  private erase(c: Container, k: unknown): boolean {
    const v = this.get(c, k)
    if (v === undefined) return false
    this.count--
    this.pending.delete(v)
    if (Array.isArray(c)) delete c[k as number]
    else {
      if (this.router.isTrie(c)) prune(c as Node, k)
      else c.delete(k)
      this.timesOf.get(c)?.delete(k)
    }
    return true
  }

  delete(k: KeyRouter | PlainLoc): boolean {
    const c = this.containerOf(k)
    return c !== null && this.erase(c, this.keyOf(k))
  }

  clear(): void {
    this.router.reset()
    this.pending.clear()
    this.intsAt = []
    this.timesOf = new WeakMap()
    this.firstWrite = 0
    this.count = 0
  }

  size(): number {
    return this.count
  }

  clearLocks(): void {
    for (const [, p] of [...this.pending]) this.erase(p.c, p.k)
  }

  trackAge(): void {
    this.tracking = true
  }

  /**
   * The hit path of one number, string or plain-object argument with no key function: the
   * memoized function itself. Anything it does not answer goes to `call`.
   */
  fastPath(call: (self: unknown, args: ArrayLike<unknown>, co: undefined) => unknown, stats: Counters): AnyFn {
    const { router, pending } = this
    const prim = router.prim
    return function (this: unknown, a?: unknown) {
      // `pending` is looked at only once a value is found: most hits find no pending Promise.
      if (arguments.length === 1) {
        if (typeof a === 'number') {
          if (a >>> 0 === a && a < INT_LIMIT && (a !== 0 || 1 / a > 0)) {
            const v = (router.ints as unknown[])[a]
            if (v !== undefined && pending.size === 0) {
              stats.hits++
              return v === UNDEF ? undefined : v
            }
          }
        } else if (typeof a === 'string') {
          const v = prim.get(a)
          if (v !== undefined && pending.size === 0) {
            stats.hits++
            return v === UNDEF ? undefined : v
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
    }
  }
}
