import { openStore } from './backends'
import { Engine, newCounters } from './engine'
import { methodsOf } from './methods'
import { resolveOptions, toMs } from './options'
import type { CallOptions, MemoizeOptions } from './options'
import type { AnyFn, Implementation, Memoized, RemoteMemoized, ResolvedCallOptions, Stats } from './types'
import { isPromiseLike } from './types'

/** Global defaults set by {@link configure}. */
let defaults: MemoizeOptions<never[]> = {}
let enabled = process.env.CACHETTE_DISABLE !== '1' && process.env.CACHETTE_DISABLE !== 'true'

/** Options of {@link configure}: defaults for every later `memoize()` call, and a master switch. */
export interface GlobalOptions extends MemoizeOptions<never[]> {
  /** `false` turns caching off everywhere: memoized functions call through. @default true, or false when `CACHETTE_DISABLE=1` */
  enabled?: boolean
}

/**
 * Sets defaults for every later {@link memoize} call (its own options win), or turns caching off.
 *
 * @example
 * ```ts
 * configure({ backend: 'disk', path: '/var/cache/my-app', ttl: '1h' })
 * configure({ enabled: false }) // e.g. in tests
 * ```
 */
export function configure(options: GlobalOptions): void {
  if (options === null || typeof options !== 'object') throw new TypeError('configure() takes an options object')
  const { enabled: on, ...rest } = options
  if (on !== undefined && typeof on !== 'boolean') throw new TypeError('enabled must be a boolean if specified')
  resolveOptions('configure', { namespace: 'configure', ...defaults, ...rest })
  if (on !== undefined) enabled = on
  defaults = { ...defaults, ...rest }
}

function resolveCall(options: CallOptions): ResolvedCallOptions {
  if (options === null || typeof options !== 'object') throw new TypeError('with() takes an options object')
  for (const k of Object.keys(options)) {
    if (k !== 'maxAge' && k !== 'refresh' && k !== 'bypass') throw new TypeError(`unknown per-call option '${k}'`)
  }
  return {
    maxAge: options.maxAge === undefined ? undefined : toMs(options.maxAge, 'maxAge'),
    refresh: options.refresh === true,
    bypass: options.bypass === true,
  }
}

function passthrough<F extends AnyFn>(fn: F): Implementation<F> {
  const stats = newCounters()
  return {
    call(self, args) {
      stats.computations++
      return fn.apply(self, args as unknown[])
    },
    stats,
    remote: false,
    methods: {
      clearOwn() {},
      size: () => 0,
      delete: () => false,
      has: () => false,
      peek: () => undefined,
      set() {},
      clearLocks() {},
      flush: () => Promise.resolve(),
      close: () => Promise.resolve(),
    },
  }
}

/**
 * Memoizes `fn`: each distinct argument list (compared by value) computes once, and later calls
 * get the stored result. Sync functions stay sync; async functions return a Promise, and
 * concurrent callers of one key share one computation — across worker threads with
 * `shared: true`, across processes with `backend: 'disk'`. Errors and rejections are never
 * cached and reach every waiting caller unchanged.
 *
 * @throws TypeError at once when an option is invalid.
 * @example
 * ```ts
 * const getUser = memoize(fetchUser, { backend: 'disk', ttl: '10m' })
 * const user = await getUser(42)
 * ```
 */
export function memoize<F extends AnyFn>(
  fn: F,
  options: MemoizeOptions<Parameters<F>> & { backend: 'redis' | 'sql' },
): RemoteMemoized<F>
export function memoize<F extends AnyFn>(fn: F, options?: MemoizeOptions<Parameters<F>>): Memoized<F>
export function memoize<F extends AnyFn>(
  fn: F,
  options: MemoizeOptions<Parameters<F>> = {},
): Memoized<F> | RemoteMemoized<F> {
  if (typeof fn !== 'function') throw new TypeError('memoize() takes a function')
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object if specified')
  const o = resolveOptions(fn.name, { ...defaults, ...(options as MemoizeOptions<never[]>) })
  let impl: Implementation<F>
  if (enabled) {
    const engine = new Engine(fn, o, () => openStore(o))
    const call = (self: unknown, args: ArrayLike<unknown>, co: ResolvedCallOptions | undefined) =>
      engine.call(self, args, co) as ReturnType<F>
    const store = engine.store
    impl = {
      call,
      // A memory store's hit path answers before the engine (see memory-plain.ts, memory.ts).
      fast: o.key === undefined ? (store?.fastPath?.(call, engine.stats) as F | undefined) : undefined,
      methods: methodsOf(engine),
      stats: engine.stats,
      remote: !engine.sync,
    }
  } else impl = passthrough(fn)
  const { call, stats, methods, remote } = impl
  const memoized = (impl.fast ??
    function (this: unknown) {
      // eslint-disable-next-line prefer-rest-params
      return call(this, arguments, undefined)
    }) as Memoized<F>
  const dependents = new Set<{ clear(): unknown }>()
  let clearing = false
  const api = {
    ...methods,
    dependents,
    clear(): void | Promise<void> {
      if (clearing) return
      clearing = true
      const pending: unknown[] = []
      try {
        pending.push(methods.clearOwn())
        for (const k of Object.keys(stats) as (keyof typeof stats)[]) stats[k] = 0
        for (const d of dependents) pending.push(d.clear())
      } finally {
        clearing = false
      }
      // Remote stores clear asynchronously: then clear() returns a Promise of every clear.
      if (remote || pending.some(isPromiseLike)) return Promise.all(pending).then(() => undefined)
    },
    refresh(this: unknown, ...args: Parameters<F>) {
      return call(this, args, { refresh: true })
    },
    uncached(this: unknown, ...args: Parameters<F>) {
      return fn.apply(this, args)
    },
    with(callOptions: CallOptions) {
      const co = resolveCall(callOptions)
      if (co.maxAge !== undefined) methods.trackAge?.()
      return function (this: unknown, ...args: Parameters<F>) {
        return call(this, args, co)
      }
    },
    stats(): Stats | Promise<Stats> {
      // Entries that failed their integrity check are read as misses, and counted as errors.
      stats.errors += methods.integrityFailures?.() ?? 0
      const size = methods.size() as number | Promise<number>
      // Damaged disk entries were read as misses: errors the store met without failing a call.
      const errors = stats.errors + (methods.damaged?.() ?? 0)
      if (isPromiseLike(size)) return Promise.resolve(size).then((n) => ({ ...stats, errors, size: n }))
      return { ...stats, errors, size }
    },
  }
  Object.assign(memoized, api)
  Object.defineProperty(memoized, 'name', { value: fn.name, configurable: true })
  for (const d of options.dependsOn ?? defaults.dependsOn ?? []) d.dependents?.add(memoized)
  return memoized
}
