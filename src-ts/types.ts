import type { CallOptions } from './options'

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyFn = (...args: any[]) => any

/** Counters of a memoized function since it was created (or since its cache was cleared). */
export interface Stats {
  /** Calls answered from the cache with a fresh value. */
  hits: number
  /** Calls that found no usable value. */
  misses: number
  /** Calls answered with a stale value while it was refreshed (`staleWhileRevalidate`). */
  staleHits: number
  /** Times the function ran to fill the cache. */
  computations: number
  /** Calls that waited for another caller's computation of the same key. */
  waits: number
  /** Failed computations and store failures (each also reported once as a process warning). */
  errors: number
  /** Entries held (disk: entries of this namespace). */
  size: number
}

/** What every memoized function carries. */
export interface MemoizedMethods<F extends AnyFn> {
  /** Removes every entry (and those of functions that list this one in `dependsOn`). */
  clear(): void
  /** Removes the entry of these arguments; true if there was one. */
  delete(...args: Parameters<F>): boolean
  /** True if a value is cached for these arguments. */
  has(...args: Parameters<F>): boolean
  /** The cached value for these arguments, without computing; `undefined` when absent. */
  peek(...args: Parameters<F>): ReturnType<F> | undefined
  /** Stores `value` as the result for `args` (precache). */
  set(args: Parameters<F>, value: ReturnType<F>): void
  /** Recomputes for these arguments and overwrites the cached value. */
  refresh(...args: Parameters<F>): ReturnType<F>
  /** Calls the function directly, reading and writing nothing. */
  uncached(...args: Parameters<F>): ReturnType<F>
  /** The memoized function with per-call options. */
  with(options: CallOptions): (...args: Parameters<F>) => ReturnType<F>
  /** Forgets calculations in progress in this thread, so the next caller computes. */
  clearLocks(): void
  /** Resolves once every value stored so far is durable (disk); at once elsewhere. */
  flush(): Promise<void>
  /** Flushes, then releases the store. Later calls throw `ERR_CLOSED`. */
  close(): Promise<void>
  /** Counters and size. */
  stats(): Stats
  /** Memoized functions to clear with this one (filled by their `dependsOn`). */
  readonly dependents: Set<{ clear(): unknown }>
}

/** A memoized function: the original signature plus {@link MemoizedMethods}. */
export type Memoized<F extends AnyFn> = F & MemoizedMethods<F>

/**
 * A function memoized on backend `'redis'` or `'sql'`: every call and every method returns a
 * Promise, since each one is a round trip to the server.
 */
export type RemoteMemoized<F extends AnyFn> = ((...args: Parameters<F>) => Promise<Awaited<ReturnType<F>>>) &
  RemoteMethods<F>

/** What a function memoized on `redis` or `sql` carries: {@link MemoizedMethods}, asynchronous. */
export interface RemoteMethods<F extends AnyFn> {
  /** Removes every entry and lease of the namespace (and clears the `dependsOn` dependents). */
  clear(): Promise<void>
  /** Removes the entry of these arguments; true if there was one. A computation in flight will not store it. */
  delete(...args: Parameters<F>): Promise<boolean>
  /** True if a value is stored for these arguments. */
  has(...args: Parameters<F>): Promise<boolean>
  /** The stored value for these arguments, without computing; `undefined` when absent. */
  peek(...args: Parameters<F>): Promise<Awaited<ReturnType<F>> | undefined>
  /** Stores `value` as the result for `args` (precache). */
  set(args: Parameters<F>, value: Awaited<ReturnType<F>>): Promise<void>
  /** Recomputes for these arguments (holding the key's lease) and overwrites the stored value. */
  refresh(...args: Parameters<F>): Promise<Awaited<ReturnType<F>>>
  /** Calls the function directly, reading and writing nothing. */
  uncached(...args: Parameters<F>): ReturnType<F>
  /** The memoized function with per-call options. */
  with(options: CallOptions): (...args: Parameters<F>) => Promise<Awaited<ReturnType<F>>>
  /** Removes every lease of the namespace (on the server, for every process), so waiters stop waiting. */
  clearLocks(): Promise<void>
  /** Resolves at once: remote writes are acknowledged by the server before a call resolves. */
  flush(): Promise<void>
  /** Releases leases still held and this function's use of the connection. Later calls reject with `ERR_CLOSED`. */
  close(): Promise<void>
  /** Counters, and the namespace's entry count on the server. */
  stats(): Promise<Stats>
  /** Memoized functions to clear with this one (filled by their `dependsOn`). */
  readonly dependents: Set<{ clear(): unknown }>
}

/** Internal: what `memoize()` builds a memoized function of. */
export interface Implementation<F extends AnyFn = AnyFn> {
  call(self: unknown, args: ArrayLike<unknown>, options: ResolvedCallOptions | undefined): ReturnType<F>
  fast?: F
  /** Every call and method answers with a Promise (redis, sql). */
  remote: boolean
  methods: Omit<MemoizedMethods<F>, 'with' | 'uncached' | 'refresh' | 'dependents' | 'clear' | 'stats'> & {
    clearOwn(): void
    size(): number
    /** Start recording creation times (a `with({ maxAge })` view exists). */
    trackAge?(): void
    /** Entries read since the last call that failed their `integrityKey` check. */
    integrityFailures?(): number
    /** Damage the store found and read as misses since it opened (counted in `stats().errors`). */
    damaged?(): number
  }
  stats: Omit<Stats, 'size'>
}

export interface ResolvedCallOptions {
  maxAge?: number
  refresh?: boolean
  bypass?: boolean
}

export function isPromiseLike(x: unknown): x is PromiseLike<unknown> {
  return (
    x !== null &&
    (typeof x === 'object' || typeof x === 'function') &&
    typeof (x as PromiseLike<unknown>).then === 'function'
  )
}

/** Emits one process warning per distinct message per process. */
const warned = new Set<string>()
export function warnOnce(message: string): void {
  if (warned.has(message)) return
  warned.add(message)
  process.emitWarning(message, { type: 'CachetteWarning' })
}
