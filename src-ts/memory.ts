import { encodeKeyString } from './key'
import type { ResolvedOptions } from './options'
import { codecFor, encodePayload } from './serializer'
import type { AnyFn, Implementation, ResolvedCallOptions } from './types'
import { isPromiseLike } from './types'

/*
 * The `memory` backend: entries are JavaScript values in two Maps — one keyed by a lone
 * primitive argument itself (which a Map tells apart exactly: '1' vs 1 vs 1n), one keyed by
 * the canonical encoding of anything else — so a hit is a Map lookup with no native call and
 * no decoding. Bounded caches link entries most- to least-recently used.
 */

interface Entry {
  key: unknown
  value: unknown
  /** A promise still pending: callers share it (single flight). */
  pending: boolean
  /** A background refresh is running. */
  refreshing: boolean
  created: number
  staleAt: number
  expiresAt: number
  size: number
  map: Map<unknown, Entry>
  prev: Entry | null
  next: Entry | null
}

export function memoryImplementation<F extends AnyFn>(fn: F, o: ResolvedOptions): Implementation<F> {
  const prim = new Map<unknown, Entry>()
  const enc = new Map<unknown, Entry>()
  const { ttl, grace, lockTimeout, maxEntries, maxBytes, maxValueBytes, cacheUndefined } = o
  const keyFn = o.key as ((...args: unknown[]) => unknown) | undefined
  const bounded = maxEntries !== undefined || maxBytes !== undefined
  const measure = maxBytes !== undefined || maxValueBytes !== undefined
  const codec = codecFor(o.serializer)
  const stats = { hits: 0, misses: 0, staleHits: 0, computations: 0, waits: 0, errors: 0 }
  let head: Entry | null = null
  let tail: Entry | null = null
  let bytes = 0
  let curMap = prim
  let curKey: unknown

  function keyFor(args: ArrayLike<unknown>): void {
    const src = keyFn === undefined ? args : [keyFn(...Array.from(args))]
    if (src.length === 1) {
      const a = src[0]
      const t = typeof a
      if (t === 'string' || t === 'boolean' || t === 'undefined' || t === 'bigint' || a === null || (t === 'number' && (a !== 0 || 1 / (a as number) > 0))) {
        curMap = prim
        curKey = a
        return
      }
    }
    curMap = enc
    curKey = encodeKeyString(src)
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
    e.next = head
    if (head !== null) head.prev = e
    head = e
    if (tail === null) tail = e
  }

  function remove(e: Entry): void {
    if (e.map.get(e.key) !== e) return
    e.map.delete(e.key)
    bytes -= e.size
    if (bounded) unlink(e)
  }

  function sizeOf(value: unknown): number {
    try {
      return encodePayload(codec, value, false).length
    } catch {
      return 0 // documented: values that cannot be encoded count as 0 bytes
    }
  }

  /** Stores `value`; `resolved` is what gets measured (the settled value of a promise). */
  function store(map: Map<unknown, Entry>, key: unknown, value: unknown, pending: boolean, resolved: unknown = value): Entry | undefined {
    const old = map.get(key)
    if (old !== undefined) remove(old)
    const size = measure && !pending ? sizeOf(resolved) : 0
    if (maxValueBytes !== undefined && size > maxValueBytes) return undefined
    const now = Date.now()
    const staleAt = pending ? Infinity : now + ttl
    const e: Entry = {
      key, value, pending, refreshing: false, created: now, staleAt,
      expiresAt: staleAt + grace, size, map, prev: null, next: null,
    }
    map.set(key, e)
    bytes += size
    if (bounded) {
      touch(e)
      while (tail !== null && ((maxEntries !== undefined && prim.size + enc.size > maxEntries) || (maxBytes !== undefined && bytes > maxBytes))) {
        remove(tail)
      }
    }
    return e
  }

  function settle(e: Entry, value: unknown): void {
    if (e.map.get(e.key) !== e) return
    if (value == null && !cacheUndefined) return remove(e)
    // Re-store to stamp times and size now that the value is known.
    store(e.map, e.key, e.value, false, value)
  }

  function compute(self: unknown, args: ArrayLike<unknown>, map: Map<unknown, Entry>, key: unknown): unknown {
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
              if (e.map.get(e.key) === e) store(e.map, e.key, r, false, v)
            },
            () => {
              stats.errors++
              e.refreshing = false
            },
          )
        } else if (e.map.get(e.key) === e) store(e.map, e.key, r, false)
      } catch {
        stats.errors++
        e.refreshing = false
      }
    })
  }

  function call(self: unknown, args: ArrayLike<unknown>, co: ResolvedCallOptions | undefined): ReturnType<F> {
    if (co?.bypass) return fn.apply(self, args as unknown[])
    keyFor(args)
    const map = curMap
    const key = curKey
    const e = map.get(key)
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
      }
    }
    stats.misses++
    return compute(self, args, map, key) as ReturnType<F>
  }

  // The hot path: one string or non-zero number argument, no TTL, no key function.
  const fast =
    keyFn === undefined && ttl === Infinity
      ? (function (this: unknown, a?: unknown) {
          if (arguments.length === 1 && (typeof a === 'string' || (typeof a === 'number' && a !== 0))) {
            const e = prim.get(a)
            if (e !== undefined && !e.pending) {
              stats.hits++
              if (bounded) touch(e)
              return e.value
            }
          }
          return call(this, arguments, undefined)
        } as unknown as F)
      : undefined

  function lookup(args: ArrayLike<unknown>): Entry | undefined {
    keyFor(args)
    const e = curMap.get(curKey)
    if (e === undefined) return undefined
    if (!e.pending && Date.now() >= e.expiresAt) {
      remove(e)
      return undefined
    }
    return e
  }

  return {
    call,
    fast,
    stats,
    methods: {
      clearOwn() {
        prim.clear()
        enc.clear()
        head = tail = null
        bytes = 0
      },
      size: () => prim.size + enc.size,
      delete(...args) {
        const e = lookup(args)
        if (e === undefined) return false
        remove(e)
        return true
      },
      has: (...args) => lookup(args) !== undefined,
      peek: (...args) => lookup(args)?.value as ReturnType<F> | undefined,
      set(args, value) {
        keyFor(args)
        const map = curMap
        const key = curKey
        if (isPromiseLike(value)) {
          const e = store(map, key, value, true)
          if (e !== undefined) value.then((v: unknown) => settle(e, v), () => remove(e))
        } else store(map, key, value, false)
      },
      clearLocks() {
        for (const m of [prim, enc]) for (const e of m.values()) if (e.pending) remove(e)
      },
      flush: () => Promise.resolve(),
      close: () => Promise.resolve(),
    },
  }
}
