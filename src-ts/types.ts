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

/** Internal: what a backend implementation supplies to `memoize()`. */
export interface Implementation<F extends AnyFn> {
  call(self: unknown, args: ArrayLike<unknown>, options: ResolvedCallOptions | undefined): ReturnType<F>
  fast?: F
  methods: Omit<MemoizedMethods<F>, 'with' | 'uncached' | 'refresh' | 'dependents' | 'clear' | 'stats'> & {
    clearOwn(): void
    size(): number
    /** Start recording creation times (a `with({ maxAge })` view exists). */
    trackAge?(): void
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
