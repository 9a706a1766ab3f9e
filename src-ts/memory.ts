import { closedError } from './errors'
import { KeyRouter } from './key-router'
import { prune } from './key-trie'
import type { Node } from './key-trie'
import type { ResolvedOptions } from './options'
import { codecFor, encodeTransient } from './serializer'
import type { AnyFn, Implementation, ResolvedCallOptions } from './types'
import { isPromiseLike } from './types'

/*
 * The `memory` backend: entries are JavaScript values, found without any native call or
 * decoding: a lone primitive argument keys a Map directly (a Map tells '1', 1 and 1n apart);
 * primitives, plain objects and arrays walk a trie of Maps (key-trie.ts); anything else is
 * keyed by its canonical encoding. Bounded caches link entries most- to least-recently used.
 */

interface Entry {
  key: unknown
  value: unknown
  /** A promise still pending: callers share it (single flight). */
  pending: boolean
  /** Lives in the key trie (its Map is a trie node, pruned when it empties). */
  trie: boolean
  /** The cache generation it belongs to: `clear()` starts a new one. */
  epoch: number
  /** A background refresh is running. */
  refreshing: boolean
  created: number
  staleAt: number
  expiresAt: number
  size: number
  map: Map<unknown, unknown>
  prev: Entry | null
  next: Entry | null
}

export function memoryImplementation<F extends AnyFn>(fn: F, o: ResolvedOptions): Implementation<F> {
  const router = new KeyRouter(false)
  const prim = router.prim
  let closed = false
  let epoch = 0
  let count = 0
  /** Entries holding a pending promise (cleared by `clearLocks`). */
  const pendingEntries = new Set<Entry>()
  const { ttl, grace, lockTimeout, maxEntries, maxBytes, maxValueBytes, cacheUndefined } = o
  const keyFn = o.key as ((...args: unknown[]) => unknown) | undefined
  const bounded = maxEntries !== undefined || maxBytes !== undefined
  const measure = maxBytes !== undefined || maxValueBytes !== undefined
  const codec = codecFor(o.serializer)
  const stats = { hits: 0, misses: 0, staleHits: 0, computations: 0, waits: 0, errors: 0 }
  let head: Entry | null = null
  let tail: Entry | null = null
  let bytes = 0
  function keyFor(args: ArrayLike<unknown>, make: boolean): void {
    router.route(keyFn === undefined ? args : [keyFn(...Array.from(args))], make)
  }

  function unlink(e: Entry): void {
    if (e.prev === null) head = e.next
    else e.prev.next = e.next
    if (e.next === null) tail = e.prev
    else e.next.prev = e.prev
    e.prev = e.next = null
  }

  function touch(e: Entry): void {
    if (head === e) return
    unlink(e)
    pushFront(e)
  }

  function pushFront(e: Entry): void {
    e.next = head
    if (head !== null) head.prev = e
    head = e
    if (tail === null) tail = e
  }

  /** Whether `e` is still the stored entry of its key (not replaced, removed or cleared). */
  const live = (e: Entry): boolean => e.epoch === epoch && e.map.get(e.key) === e

  /** Removes an entry; `keepPath` keeps its trie path for an entry about to replace it. */
  function remove(e: Entry, keepPath = false): void {
    if (!live(e)) return
    if (e.trie && !keepPath) prune(e.map as Node, e.key)
    else e.map.delete(e.key)
    if (e.pending) pendingEntries.delete(e)
    count--
    bytes -= e.size
    if (bounded) unlink(e)
  }

  function sizeOf(value: unknown): number {
    try {
      return encodeTransient(codec, value, false).length
    } catch {
      return 0 // documented: values that cannot be encoded count as 0 bytes
    }
  }

  /** Stores `value`; `resolved` is what gets measured (the settled value of a promise). */
  function store(
    map: Map<unknown, unknown>,
    key: unknown,
    value: unknown,
    pending: boolean,
    resolved: unknown = value,
  ): Entry | undefined {
    const old = map.get(key) as Entry | undefined
    if (old !== undefined) remove(old, true)
    const size = measure && !pending ? sizeOf(resolved) : 0
    if ((maxValueBytes !== undefined && size > maxValueBytes) || (maxBytes !== undefined && size > maxBytes))
      return undefined
    const now = Date.now()
    const staleAt = pending ? Infinity : now + ttl
    const e: Entry = {
      key,
      value,
      pending,
      trie: router.isTrie(map),
      epoch,
      refreshing: false,
      created: now,
      staleAt,
      expiresAt: staleAt + grace,
      size,
      map,
      prev: null,
      next: null,
    }
    map.set(key, e)
    if (pending) pendingEntries.add(e)
    count++
    bytes += size
    if (bounded) {
      pushFront(e)
      while (
        tail !== null &&
        ((maxEntries !== undefined && count > maxEntries) || (maxBytes !== undefined && bytes > maxBytes))
      ) {
        remove(tail)
      }
    }
    return e
  }

  function settle(e: Entry, value: unknown): void {
    if (!live(e)) return
    if (value == null && !cacheUndefined) return remove(e)
    // Re-store to stamp times and size now that the value is known.
    store(e.map, e.key, e.value, false, value)
  }

  function compute(self: unknown, args: ArrayLike<unknown>, map: Map<unknown, unknown>, key: unknown): unknown {
    if (closed) throw closedError(o.namespace)
    stats.computations++
    let r: unknown
    try {
      r = fn.apply(self, args as unknown[])
    } catch (err) {
      stats.errors++
      throw err
    }
    if (isPromiseLike(r)) {
      const e = store(map, key, r, true)
      if (e !== undefined) {
        r.then(
          (v) => settle(e, v),
          () => {
            stats.errors++
            remove(e)
          },
        )
      }
      return r
    }
    if (r != null || cacheUndefined) store(map, key, r, false)
    return r
  }

  function refreshInBackground(self: unknown, args: ArrayLike<unknown>, e: Entry): void {
    if (e.refreshing) return
    e.refreshing = true
    const copy = Array.from(args)
    setImmediate(() => {
      try {
        const r = fn.apply(self, copy)
        stats.computations++
        if (isPromiseLike(r)) {
          r.then(
            (v) => {
              if (!live(e)) return
              if (v == null && !cacheUndefined) remove(e)
              else store(e.map, e.key, r, false, v)
            },
            () => {
              stats.errors++
              e.refreshing = false
            },
          )
        } else if (live(e)) {
          if (r == null && !cacheUndefined) remove(e)
          else store(e.map, e.key, r, false)
        }
      } catch {
        stats.errors++
        e.refreshing = false
      }
    })
  }

  function call(self: unknown, args: ArrayLike<unknown>, co: ResolvedCallOptions | undefined): ReturnType<F> {
    if (closed) throw closedError(o.namespace)
    if (co?.bypass) return fn.apply(self, args as unknown[])
    keyFor(args, false)
    const e =
      router.container === null
        ? undefined
        : ((router.container as Map<unknown, unknown>).get(router.key) as Entry | undefined)
    if (e !== undefined && co === undefined && e.staleAt === Infinity && !e.pending) {
      stats.hits++
      if (bounded) touch(e)
      return e.value as ReturnType<F>
    }
    if (e !== undefined && co?.refresh !== true) {
      const now = Date.now()
      if (e.pending) {
        if (now - e.created <= lockTimeout) {
          stats.waits++
          return e.value as ReturnType<F>
        }
      } else if (co?.maxAge === undefined || now - e.created <= co.maxAge) {
        if (now < e.staleAt) {
          stats.hits++
          if (bounded) touch(e)
          return e.value as ReturnType<F>
        }
        if (now < e.expiresAt) {
          stats.staleHits++
          if (bounded) touch(e)
          refreshInBackground(self, args, e)
          return e.value as ReturnType<F>
        }
        remove(e)
        if (e.trie) router.container = null // its trie path may be pruned: walk it again to store
      }
    }
    stats.misses++
    const map = router.target() as Map<unknown, unknown>
    return compute(self, args, map, router.key) as ReturnType<F>
  }

  // The hot path: one string or non-zero number argument, no TTL, no key function.
  const fast =
    keyFn === undefined && ttl === Infinity
      ? (function (this: unknown, a?: unknown) {
          if (arguments.length === 1 && (typeof a === 'string' || (typeof a === 'number' && a !== 0))) {
            const e = prim.get(a) as Entry | undefined
            if (e !== undefined && !e.pending) {
              stats.hits++
              if (bounded) touch(e)
              return e.value
            }
          }
          // eslint-disable-next-line prefer-rest-params -- no array allocation on the hot path
          return call(this, arguments, undefined)
        } as unknown as F)
      : undefined

  function lookup(args: ArrayLike<unknown>): Entry | undefined {
    keyFor(args, false)
    const e = (router.container as Map<unknown, unknown> | null)?.get(router.key) as Entry | undefined
    if (e === undefined) return undefined
    if (!e.pending && Date.now() >= e.expiresAt) {
      remove(e)
      return undefined
    }
    return e
  }

  function clearOwn(): void {
    epoch++
    router.reset()
    pendingEntries.clear()
    head = tail = null
    bytes = 0
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
        const e = lookup(args)
        if (e === undefined) return false
        remove(e)
        return true
      },
      has: (...args) => lookup(args) !== undefined,
      peek: (...args) => lookup(args)?.value as ReturnType<F> | undefined,
      set(args, value) {
        keyFor(args, true)
        const map = router.target() as Map<unknown, unknown>
        const key = router.key
        if (isPromiseLike(value)) {
          const e = store(map, key, value, true)
          if (e !== undefined)
            value.then(
              (v: unknown) => settle(e, v),
              () => remove(e),
            )
        } else store(map, key, value, false)
      },
      clearLocks() {
        for (const e of [...pendingEntries]) remove(e)
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
