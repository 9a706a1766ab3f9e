import type { Found, Store } from './backends/store'
import type { Engine } from './engine'
import { closedError, fromNative } from './errors'
import { entryTimes } from './options'
import type { Implementation } from './types'
import { isPromiseLike } from './types'

/*
 * The methods of a memoized function that touch its store (`has`, `peek`, `set`, `delete`,
 * `clear`, `size`, `clearLocks`, `flush`, `close`), written once over the engine and its store.
 * On an async store each answers with a Promise, and rejects with `ERR_CLOSED` after close();
 * on a sync store each answers at once.
 */

export function methodsOf<K>(e: Engine<K>): Implementation['methods'] {
  const ns = e.o.namespace

  /**
   * On an async store every answer is a Promise, every failure a rejection (a refused argument
   * included), and every method after close() rejects with `ERR_CLOSED`.
   */
  function answered<T>(f: () => T | Promise<T>): T | Promise<T> {
    if (e.sync) return f()
    if (e.closed) return Promise.reject(closedError(ns))
    try {
      return Promise.resolve(f())
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Runs a store method: a failure is reported and `fallback` answered. */
  function guarded<T>(f: (s: Store<K>) => T | Promise<T>, fallback: T): T | Promise<T> {
    const s = e.store
    if (s === null) return fallback
    try {
      const r = f(s)
      if (!isPromiseLike(r)) return r
      return Promise.resolve(r).catch((err: unknown) => {
        e.backendFailure(err)
        return fallback
      })
    } catch (err) {
      e.backendFailure(err)
      return fallback
    }
  }

  /** `has()` and `peek()`: one read, no computing. */
  function lookup<T>(args: unknown[], then: (f: Found | undefined) => T): T | Promise<T> {
    const s = e.store
    if (s === null) {
      e.checkKey(args)
      return then(undefined)
    }
    const k = s.key(e.keyArgs(args), true)
    return guarded(() => {
      const r = s.read(k, true)
      return isPromiseLike(r) ? Promise.resolve(r).then(then) : then(r)
    }, then(undefined))
  }

  /** `set()`: stores a value (a Promise once it settles) without computing. */
  function precache(args: unknown[], value: unknown): void | Promise<void> {
    const s = e.store
    if (s === null) return e.checkKey(args)
    const k = s.key(e.keyArgs(args))
    if (!isPromiseLike(value)) return e.keep(s, k, value, false, undefined)
    const kept = s.keep(k)
    if (s.holdsPending) {
      void s.write(kept, value, true, entryTimes(e.o), undefined, true)
      value.then(
        (v) => s.settle!(kept, value, v, entryTimes(e.o)),
        () => s.forget!(kept, value),
      )
      return
    }
    const p = Promise.resolve(value).then(
      (v) => e.keep(s, kept, v, true, undefined),
      () => undefined,
    )
    if (!e.sync) return p
  }

  return {
    clearOwn: () => answered(() => guarded((s) => s.clear(), undefined)),
    size: () => answered(() => guarded((s) => s.size(), 0)) as number,
    delete: (...args: unknown[]) =>
      answered(() => {
        const s = e.store
        if (s === null) {
          e.checkKey(args)
          return false
        }
        const k = s.key(e.keyArgs(args), true)
        return guarded(() => s.delete(k), false)
      }),
    has: (...args: unknown[]) => answered(() => lookup(args, (f) => f !== undefined)),
    peek: (...args: unknown[]) =>
      answered(() => lookup(args, (f) => (f === undefined ? undefined : f.pending || !e.sync ? f.value : e.answer(f)))),
    set: (args: unknown[], value: unknown) => answered(() => precache(args, value)),
    clearLocks: () =>
      answered(() => {
        e.releaseHeld()
        return guarded((s) => s.clearLocks(), undefined)
      }),
    trackAge: () => e.store?.trackAge?.(),
    flush: () => (e.store === null ? Promise.resolve() : e.store.flush()),
    async close() {
      if (e.closed) return
      // Closed at once: a call made while the last writes are flushed throws ERR_CLOSED.
      e.closed = true
      const s = e.store
      try {
        // Writes that could not be stored were counted already; only 'throw' rejects for them.
        await s?.flush().catch((err: unknown) => {
          if (e.o.onBackendError === 'throw') throw fromNative(err)
        })
      } finally {
        e.releaseHeld()
        e.store = null
        await s?.close()
      }
    },
  } as unknown as Implementation['methods']
}
