import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import test from 'ava'
import type { ExecutionContext, ThrownError, ThrowsExpectation } from 'ava'
import { setTestTime } from '../../src-ts/clock'
import { CachetteError, memoize } from '../../src-ts/index'
import type { Memoized, MemoizeOptions } from '../../src-ts/index'
import { sleep, uniqueNamespace } from './env'
import { MYSQL_URL, PG_URL, REDIS_URL, serverAvailable } from './servers'

/** Options a backend contributes; `key` is left to each test (it is typed by the arguments). */
export type BackendOptions = Omit<MemoizeOptions, 'key'>

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any

/** One backend under test. */
export interface Backend {
  /** Shown in test titles: `(memory)`, `(shared memory)`, `(disk)`, `(redis)`, `(sql: sqlite)`. */
  name: string
  /** Fresh options for one cache: the backend's settings and a namespace no other test uses. */
  options(): BackendOptions
  /**
   * `memoize(fn, { ...options(), ...extra })`, closed after the file's tests (see {@link track}).
   * On a remote backend every call and method returns a Promise: the suite awaits every result.
   */
  memoize<F extends Fn>(fn: F, extra?: MemoizeOptions<Parameters<F>>): Memoized<F>
  /** Entries are held encoded (disk, shared memory, remote): hits are copies, `close()` ends the handle. */
  encoded: boolean
  /** `redis`, `sql`: every call and every method returns a Promise, errors arrive as rejections. */
  remote: boolean
}

const open = new Set<{ close(): Promise<void> }>()
test.after.always('close every store this file opened', async () => {
  await Promise.all([...open].map((g) => g.close().catch(() => undefined)))
})

/**
 * Closes `f` after the last test of this file. A disk store still open when the temp dir is
 * removed at exit hangs the process (the owner thread waits on a socket that is gone), so every
 * disk handle a test opens goes through here.
 */
export function track<T extends { close(): Promise<void> }>(f: T): T {
  open.add(f)
  return f
}

function backend(name: string, encoded: boolean, remote: boolean, options: () => BackendOptions): Backend {
  return {
    name,
    encoded,
    remote,
    options,
    // Typed Memoized<F> on a remote backend too (a RemoteMemoized<F> there): every result is awaited.
    memoize: (fn, extra) => {
      const f: Memoized<typeof fn> = memoize(fn, { ...options(), ...extra })
      // A server outlives this run: its entries are cleared before the handle closes.
      const clearThenClose = async () => {
        try {
          await f.clear()
        } catch {
          // a test closed it already
        }
        await f.close()
      }
      track(remote ? { close: clearThenClose } : f)
      return f
    },
  }
}

/** Pids repeat and a server keeps its entries: remote namespaces of this run carry a random tag. */
const run = randomBytes(4).toString('hex')

/** A `redis` or `sql` backend with the settings of `options` (a fresh namespace is added). */
export function remoteBackend(name: string, options: () => BackendOptions): Backend {
  // A loaded test machine can take longer than the default 500 ms to make a pool and its tables:
  // the suite tests behaviour, not timeouts (backend-timeout.spec.ts and the chaos suite do).
  return backend(name, true, true, () => ({ namespace: uniqueNamespace(`remote-${run}`), backendTimeout: '5s', ...options() }))
}

/**
 * The backends of this version (memory twice: plain, and expiring); disk entries go below `dir`.
 * The remote ones ({@link remoteBackends}) are listed apart: only the store suite awaits every result.
 */
export function backends(dir: string): Backend[] {
  return [
    backend('memory', false, false, () => ({ namespace: uniqueNamespace('mem') })),
    // Expiring or bounded memory caches take another implementation: run the suite on it too.
    backend('memory with a ttl', false, false, () => ({ namespace: uniqueNamespace('memttl'), ttl: '1h' })),
    backend('shared memory', true, false, () => ({ shared: true, namespace: uniqueNamespace('shm') })),
    backend('disk', true, false, () => ({ backend: 'disk', path: dir, namespace: uniqueNamespace('disk') })),
  ]
}

/** The `redis` and `sql` backends, on the servers of `CACHETTE_*_URL` or local defaults; sqlite below `dir`. */
export function remoteBackends(dir: string): Backend[] {
  const all = [
    remoteBackend('redis', () => ({ backend: 'redis', url: REDIS_URL, prefix: 'cachette-test:' })),
    remoteBackend('sql: sqlite', () => ({ backend: 'sql', url: 'sqlite://' + join(dir, 'suite.sqlite') })),
    remoteBackend('sql: postgres', () => ({ backend: 'sql', url: PG_URL })),
    remoteBackend('sql: mariadb', () => ({ backend: 'sql', url: MYSQL_URL })),
  ]
  const server: Record<string, [string, string]> = {
    redis: ['Redis', REDIS_URL],
    'sql: postgres': ['PostgreSQL', PG_URL],
    'sql: mariadb': ['MariaDB', MYSQL_URL],
  }
  return all.filter((b) => server[b.name] === undefined || serverAvailable(...server[b.name]))
}

/**
 * `t.throws` for a call that throws, `t.throwsAsync` for one that returns a Promise, with the
 * same expectations. A call of a sync function must throw on a local backend and reject on a
 * remote one (`remote`): the other way fails the test.
 */
export async function throwsOrRejects<E extends ErrorConstructor | Error>(
  t: ExecutionContext,
  remote: boolean,
  fn: () => unknown,
  expectations: ThrowsExpectation<E>,
  message?: string,
): Promise<ThrownError<E>> {
  const what = message === undefined ? '' : `${message}: `
  let result: unknown
  try {
    result = fn()
  } catch (e) {
    const err = t.throws(
      () => {
        throw e
      },
      expectations,
      message,
    )
    if (remote) t.fail(`${what}threw at once on a remote backend instead of returning a rejected Promise`)
    return err
  }
  if (!(result instanceof Promise)) return t.throws(() => result, expectations, message) // fails: no error
  const err = await t.throwsAsync(result, expectations, message)
  if (!remote) t.fail(`${what}returned a rejected Promise on a local backend instead of throwing`)
  return err
}

/** Polls `cond` every 5 ms; rejects after `ms` (a "did not hang" bound, not a timing assertion). */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`)
    await sleep(5)
  }
}

/** A counter and a sync function that returns a new object `{ n }` per computation. */
export function counted<A extends unknown[]>(): { fn: (...args: A) => { n: number }; calls: () => number } {
  let n = 0
  return { fn: (..._args: A) => ({ n: ++n }), calls: () => n }
}

class Point {
  constructor(
    readonly x: number,
    readonly y: number,
  ) {}
}

/** Arguments that are equal by value: the second of each pair must hit the entry of the first. */
export const equalPairs: [string, unknown, unknown][] = [
  ['plain objects in any key order', { a: 1, b: { c: 2, d: 3 } }, { b: { d: 3, c: 2 }, a: 1 }],
  ['nested arrays', [1, [2, 'three']], [1, [2, 'three']]],
  ['Dates of the same instant', new Date(1_700_000_000_000), new Date(1_700_000_000_000)],
  [
    'Maps with equal entries',
    new Map<unknown, unknown>([
      ['k', 1],
      [2, { x: 1 }],
    ]),
    new Map<unknown, unknown>([
      ['k', 1],
      [2, { x: 1 }],
    ]),
  ],
  ['Sets with equal values', new Set([1, 'a']), new Set([1, 'a'])],
  ['BigInts', 10n ** 30n, 10n ** 30n],
  ['Uint8Arrays', new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 3])],
  ['Float64Arrays', new Float64Array([1.5, -2]), new Float64Array([1.5, -2])],
  ['Buffers', Buffer.from('abc'), Buffer.from('abc')],
  ['NaNs', NaN, NaN],
]

/** Arguments that look alike but differ: each must get its own entry. */
export const lookAlikePairs: [string, unknown, unknown][] = [
  ['NaN and null', NaN, null],
  ['1n and 1', 1n, 1],
  ["'1' and 1", '1', 1],
  ['undefined and null', undefined, null],
  ['a Map and {}', new Map(), {}],
  ['a lone surrogate and U+FFFD', '\uD800', '\uFFFD'],
  ['-0 and 0', -0, 0],
  ['[1, 2] and [2, 1]', [1, 2], [2, 1]],
  ['a Buffer and a Uint8Array with the same bytes', Buffer.from([1, 2]), new Uint8Array([1, 2])],
  ['an Int8Array and a Uint8Array with the same bytes', new Int8Array([1, 2]), new Uint8Array([1, 2])],
  ['a Date and its timestamp', new Date(5), 5],
  ['a Set and an array', new Set([1]), [1]],
  ['true and 1', true, 1],
  ["'' and undefined", '', undefined],
  ['an array hole and undefined', [, 1], [undefined, 1]], // eslint-disable-line no-sparse-arrays
  ['{ a: undefined } and {}', { a: undefined }, {}],
  ['[] and a 40-item array', [], Array.from({ length: 40 }, (_, i) => i)],
  ['{} and an object with 40 properties', {}, Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, i]))],
]

/** Arguments that cannot be keyed, with the path the error must name. */
export function unkeyableCases(): [string, unknown[], string][] {
  const circular: Record<string, unknown> = { a: 1 }
  circular.self = circular
  return [
    ['a function', [1, { cb: () => 1 }], 'args[1].cb'],
    ['a symbol', [Symbol('s')], 'args[0]'],
    ['a class instance', [new Point(1, 2)], 'args[0]'],
    ['a WeakMap', [{ m: new WeakMap() }], 'args[0].m'],
    ['a Promise', [[0, Promise.resolve(1)]], 'args[0][1]'],
    ['a circular object', [circular], 'args[0].self'],
  ]
}

/**
 * Registers the behavioural contract every backend keeps. Feature files go deeper; this is the
 * part that must read the same whatever holds the entries. Every call and method result is
 * awaited, so that one body runs on the local backends (plain values) and the remote ones
 * (Promises); on a local one, a sync function's call and methods are checked to stay sync.
 */
export function storeSuite(b: Backend): void {
  const title = (s: string) => `${s} (${b.name})`

  if (!b.remote) {
    test(title('memoize() keeps a sync function sync'), (t) => {
      const f = b.memoize((x: number) => x * 2)
      const miss = f(21)
      const hit = f(21)
      t.is(miss, 42)
      t.is(hit, 42)
    })

    test(title('the methods of a sync function answer at once, not with a Promise'), (t) => {
      const f = b.memoize((x: number) => x * 2)
      const results: [string, unknown][] = [
        ['set()', f.set([1], 2)],
        ['has()', f.has(1)],
        ['peek()', f.peek(1)],
        ['refresh()', f.refresh(1)],
        ['stats()', f.stats()],
        ['delete()', f.delete(1)],
        ['clearLocks()', f.clearLocks()],
        ['clear()', f.clear()],
      ]
      for (const [what, r] of results) t.false(r instanceof Promise, what)
    })
  } else {
    test(title('memoize() keeps a sync function sync (a Promise on a remote backend)'), async (t) => {
      const f = b.memoize((x: number) => x * 2)
      const miss: unknown = f(21)
      t.true(miss instanceof Promise)
      t.is(await miss, 42)
      const hit: unknown = f(21)
      t.true(hit instanceof Promise)
      t.is(await hit, 42)
      t.like(await f.stats(), { misses: 1, hits: 1, computations: 1 })
    })

    test(title('with({ bypass: true }) of a sync function returns a Promise on a remote backend'), async (t) => {
      const c = counted<[number]>()
      const f = b.memoize(c.fn)
      const r: unknown = f.with({ bypass: true })(1)
      t.true(r instanceof Promise, 'a bypass call answered with a plain value')
      t.deepEqual(await r, { n: 1 })
      t.false(await f.has(1), 'bypass did not write')
    })
  }

  test(title('memoize() returns a Promise from an async function on a miss and on a hit'), async (t) => {
    const f = b.memoize(async (x: number) => x * 2)
    const miss = f(21)
    t.true(miss instanceof Promise)
    t.is(await miss, 42)
    const hit = f(21)
    t.true(hit instanceof Promise)
    t.is(await hit, 42)
  })

  test(title('memoize() computes each distinct argument list once'), async (t) => {
    const c = counted<[number, string?]>()
    const f = b.memoize(c.fn)
    const a = await f(1)
    const bb = await f(2)
    const ab = await f(1, 'b')
    t.deepEqual(await f(1), a)
    t.deepEqual(await f(2), bb)
    t.deepEqual(await f(1, 'b'), ab)
    t.deepEqual([a.n, bb.n, ab.n], [1, 2, 3])
    t.is(c.calls(), 3)
    t.is((await f.stats()).size, 3)
  })

  test(title('memoize() compares arguments by value'), async (t) => {
    const c = counted<[unknown]>()
    const f = b.memoize(c.fn)
    for (const [what, first, second] of equalPairs) {
      const before = c.calls()
      const r1 = await f(first)
      t.deepEqual(await f(second), r1, what)
      t.is(c.calls(), before + 1, `${what} computed once`)
    }
  })

  test(title('memoize() gives look-alike arguments different entries'), async (t) => {
    for (const [what, first, second] of lookAlikePairs) {
      const c = counted<[unknown]>()
      const f = b.memoize(c.fn)
      try {
        t.deepEqual(await f(first), { n: 1 }, what)
        t.deepEqual(await f(second), { n: 2 }, `${what}: the second must not hit the first's entry`)
        t.deepEqual(await f(first), { n: 1 }, `${what}: the first is still cached`)
      } catch (e) {
        t.fail(`${what}: ${String(e)}`)
      }
    }
  })

  test(title('memoize() passes a thrown error through unchanged and never caches it'), async (t) => {
    const err = new Error('boom')
    let calls = 0
    const f = b.memoize((_x: number) => {
      calls++
      throw err
    })
    await throwsOrRejects(t, b.remote, () => f(1), { is: err })
    t.false(await f.has(1))
    await throwsOrRejects(t, b.remote, () => f(1), { is: err })
    t.is(calls, 2)
  })

  test(title('memoize() passes a rejection through unchanged and never caches it'), async (t) => {
    const err = new Error('nope')
    let calls = 0
    const f = b.memoize(async (_x: number) => {
      calls++
      throw err
    })
    await t.throwsAsync(f(1), { is: err })
    t.false(await f.has(1))
    await t.throwsAsync(f(1), { is: err })
    t.is(calls, 2)
  })

  test(title('memoize() shares one computation among 50 concurrent async callers'), async (t) => {
    let calls = 0
    const f = b.memoize(async (x: number) => {
      calls++
      await sleep(30)
      return { x }
    })
    const results = await Promise.all(Array.from({ length: 50 }, () => f(7)))
    t.is(calls, 1)
    for (const r of results) t.deepEqual(r, { x: 7 })
  })

  test(title('memoize() hands the same rejection to every concurrent caller, then computes again'), async (t) => {
    const err = new Error('shared failure')
    let calls = 0
    const f = b.memoize(async (_x: number) => {
      calls++
      await sleep(30)
      throw err
    })
    const settled = await Promise.allSettled(Array.from({ length: 50 }, () => f(1)))
    t.is(calls, 1)
    for (const s of settled) t.is(s.status === 'rejected' ? s.reason : s, err)
    await t.throwsAsync(f(1), { is: err })
    t.is(calls, 2)
  })

  test(
    title('memoize() rejects unkeyable arguments with ERR_UNKEYABLE_ARGUMENT before calling the function'),
    async (t) => {
      let calls = 0
      const f = b.memoize((..._args: unknown[]) => ++calls)
      for (const [what, args, path] of unkeyableCases()) {
        const e = await throwsOrRejects<CachetteError>(
          t,
          b.remote,
          () => f(...args),
          { instanceOf: CachetteError },
          what,
        )
        t.is(e?.code, 'ERR_UNKEYABLE_ARGUMENT', what)
        t.true(e?.message.includes(path), `${what}: "${e?.message}" names ${path}`)
      }
      t.is(calls, 0)
    },
  )

  test(
    title(
      'has(), peek(), delete() and set() refuse an unkeyable argument with ERR_UNKEYABLE_ARGUMENT, rejecting on a remote backend',
    ),
    async (t) => {
      let calls = 0
      const f = b.memoize((..._args: unknown[]) => ++calls)
      for (const [what, args] of unkeyableCases()) {
        const methods: [string, () => unknown][] = [
          ['has()', () => f.has(...args)],
          ['peek()', () => f.peek(...args)],
          ['delete()', () => f.delete(...args)],
          ['set()', () => f.set(args, 1)],
        ]
        for (const [method, call] of methods) {
          const e = await throwsOrRejects<CachetteError>(
            t,
            b.remote,
            call,
            { instanceOf: CachetteError },
            `${method} of ${what}`,
          )
          t.is(e?.code, 'ERR_UNKEYABLE_ARGUMENT', `${method} of ${what}`)
        }
      }
      t.is(calls, 0)
    },
  )

  test(title('memoize() computes a recursive function once per argument'), async (t) => {
    let calls = 0
    // A remote call returns a Promise: there the function awaits its recursive calls.
    const fib: Memoized<(n: number) => number | Promise<number>> = b.remote
      ? b.memoize(
          async (n: number): Promise<number> => {
            calls++
            return n < 2 ? n : (await fib(n - 1)) + (await fib(n - 2))
          },
          { lockTimeout: 200 },
        )
      : b.memoize(
          (n: number): number => {
            calls++
            return n < 2 ? n : (fib(n - 1) as number) + (fib(n - 2) as number)
          },
          { lockTimeout: 200 },
        )
    t.is(await fib(6), 8)
    t.is(calls, 7)
    t.deepEqual(await Promise.all([0, 1, 2, 3, 4, 5, 6].map((n) => fib.peek(n))), [0, 1, 1, 2, 3, 5, 8])
  })

  test(title('has(), peek(), delete() and clear() read and remove entries without computing'), async (t) => {
    const c = counted<[number]>()
    const f = b.memoize(c.fn)
    t.false(await f.has(1))
    t.is(await f.peek(1), undefined)
    await f(1)
    await f(2)
    t.true(await f.has(1))
    t.deepEqual(await f.peek(1), { n: 1 })
    t.true(await f.delete(1))
    t.false(await f.delete(1))
    t.false(await f.has(1))
    t.true(await f.has(2))
    await f.clear()
    t.false(await f.has(2))
    t.is((await f.stats()).size, 0)
    t.is(c.calls(), 2)
  })

  test(title('set() precaches a value and refresh() recomputes and overwrites it'), async (t) => {
    const c = counted<[number]>()
    const f = b.memoize(c.fn)
    await f.set([5], { n: 100 })
    t.deepEqual(await f(5), { n: 100 })
    t.is(c.calls(), 0)
    t.deepEqual(await f.refresh(5), { n: 1 })
    t.deepEqual(await f(5), { n: 1 })
    t.is(c.calls(), 1)
  })

  test.serial(title('memoize() recomputes an entry once its ttl has passed'), async (t) => {
    // On the fake clock (process-wide: hence serial), started at the real time: a server that
    // expires keys by its own clock must not see them as old.
    t.teardown(() => setTestTime(undefined))
    const ttl = 60_000
    const c = counted<[number]>()
    const f = b.memoize(c.fn, { ttl })
    const t0 = Date.now()
    setTestTime(t0)
    t.deepEqual(await f(1), { n: 1 })
    setTestTime(t0 + ttl - 1)
    t.true(await f.has(1))
    t.deepEqual(await f(1), { n: 1 }, 'within its ttl: a hit')
    setTestTime(t0 + ttl + 1)
    t.false(await f.has(1))
    t.is(await f.peek(1), undefined)
    t.deepEqual(await f(1), { n: 2 }, 'past its ttl: computed again')
    t.deepEqual(await f(1), { n: 2 })
    t.is(c.calls(), 2)
  })

  test.serial(title('refresh() and a with({ maxAge }) call too old for the entry each count a miss'), async (t) => {
    // On the fake clock (process-wide: hence serial), started at the real time.
    t.teardown(() => setTestTime(undefined))
    const c = counted<[number]>()
    const f = b.memoize(c.fn)
    const young = f.with({ maxAge: 500 })
    const t0 = Date.now()
    setTestTime(t0)
    t.deepEqual(await f(1), { n: 1 })
    t.deepEqual(await f.refresh(1), { n: 2 })
    setTestTime(t0 + 1000)
    t.deepEqual(await young(1), { n: 3 }, 'older than maxAge: computed again')
    t.like(await f.stats(), { hits: 0, misses: 3, computations: 3 })
  })

  test(title('close() takes effect at once: a call made before its Promise settles throws ERR_CLOSED'), async (t) => {
    let calls = 0
    const f = b.memoize((x: number) => (calls++, x * 2))
    const closing = f.close()
    await throwsOrRejects(t, b.remote, () => f(1), { instanceOf: CachetteError, code: 'ERR_CLOSED' })
    await closing
    t.is(calls, 0, 'the function ran after close()')
  })

  // Only the memory backends have LRU bounds; disk, redis and sql refuse them at memoize().
  const kind = b.options().backend ?? 'memory'
  if (kind === 'memory') boundsSuite(b, title)
  else {
    test(title(`maxEntries and maxBytes are refused: ${kind} entries are bounded by ttl`), (t) => {
      const message = new RegExp(`bound backend '${kind}' with a ttl`)
      t.throws(() => b.memoize((x: number) => x, { maxEntries: 3 }), { instanceOf: TypeError, message })
      t.throws(() => b.memoize((x: number) => x, { maxBytes: 3500 }), { instanceOf: TypeError, message })
    })
  }

  test(title('symbol-keyed properties are not part of a key, as with Object.keys'), async (t) => {
    const c = counted<[Record<string | symbol, number>]>()
    const f = b.memoize(c.fn)
    await f({ a: 1, [Symbol('s')]: 1 })
    await f({ a: 1, [Symbol('s')]: 2 })
    t.is(c.calls(), 1)
  })

  test(title('maxValueBytes returns a larger value without storing it'), async (t) => {
    let calls = 0
    const f = b.memoize((n: number) => (calls++, 'x'.repeat(n)), { maxValueBytes: 100 })
    t.is((await f(1000)).length, 1000)
    t.false(await f.has(1000))
    t.is(await f(10), 'x'.repeat(10))
    t.true(await f.has(10))
    await f(1000)
    await f(10)
    t.is(calls, 3)
  })

  test(title('cacheUndefined: false stores neither undefined nor null'), async (t) => {
    let calls = 0
    const f = b.memoize((x: number) => (calls++, x === 0 ? undefined : x === 1 ? null : x), { cacheUndefined: false })
    for (let i = 0; i < 2; i++) {
      t.is(await f(0), undefined)
      t.is(await f(1), null)
      t.is(await f(2), 2)
    }
    t.is(calls, 5)
    t.deepEqual([await f.has(0), await f.has(1), await f.has(2)], [false, false, true])
  })

  if (!b.encoded) return

  test(
    title('memoize() round-trips Date, Map, Set, BigInt, typed arrays, Buffers, cycles and undefined'),
    async (t) => {
      const opts = b.options()
      const value: Record<string, unknown> = {
        date: new Date(1_700_000_000_123),
        map: new Map<unknown, unknown>([
          ['a', 1],
          [2, new Set(['b'])],
        ]),
        set: new Set([1, 'two', 3n]),
        big: -(2n ** 100n),
        u8: new Uint8Array([0, 255]),
        f32: new Float32Array([0.5, -1]),
        i16: new Int16Array([-2, 3]),
        buf: Buffer.from('buffer'),
        missing: undefined,
        list: [undefined, null, 1],
      }
      value.self = value
      const writer = b.memoize((_k: string) => value, opts)
      t.is(await writer('v'), value)
      t.is(await writer('u'), value)
      const reader = b.memoize((_k: string): unknown => t.fail('the reader must not compute'), opts)
      const back = (await reader.peek('v')) as Record<string, unknown>
      t.not(back, value)
      t.is(back.self, back)
      t.deepEqual(back, value)
      t.true('missing' in back)
      t.true(Buffer.isBuffer(back.buf))
      t.is(Object.getPrototypeOf(back.u8), Uint8Array.prototype)
      const viaCall = (await reader('v')) as Record<string, unknown>
      t.deepEqual(viaCall.map, value.map)
      await writer.close()
      await reader.close()
    },
  )

  test(title('memoize() keeps a sub-object met twice one object, in a small value and in a wide one'), async (t) => {
    const opts = b.options()
    const shared = { n: 1 }
    const small = { a: shared, list: [shared], plain: { s: 'é\u{1F600}', n: -1.5, big: 2n ** 70n, u: undefined } }
    // More objects than the quick tree test looks through, the repeat last.
    const wide = { many: Array.from({ length: 40 }, (_, i) => ({ i })), last: shared, again: shared }
    const writer = b.memoize((k: string) => (k === 'small' ? small : wide), opts)
    await writer('small')
    await writer('wide')
    const reader = b.memoize((_k: string): unknown => t.fail('the reader must not compute'), opts)
    const s = (await reader.peek('small')) as typeof small
    t.deepEqual(s, small)
    t.is(s.a, s.list[0])
    t.true('u' in s.plain)
    const w = (await reader.peek('wide')) as typeof wide
    t.deepEqual(w, wide)
    t.is(w.last, w.again)
    await writer.close()
    await reader.close()
  })

  test(
    title('memoize() reads a tree of plain objects and arrays back as the same plain objects and arrays'),
    async (t) => {
      const opts = b.options()
      const wide: Record<string, number> = {}
      for (let i = 0; i < 40; i++) wide[`k${i}`] = i
      const tree = {
        id: 7,
        name: 'user é\u{1F600}',
        tags: ['admin', ['nested', []], {}],
        flags: { active: true, deleted: false, none: null, gone: undefined },
        numbers: [0, -1, 2 ** 31, 2 ** 53 - 1, -(2 ** 40), 1.5, -0.25, Number.MAX_VALUE],
        big: -(2n ** 64n),
        '10': 'an index-like key',
        wide,
      }
      const writer = b.memoize((_k: string) => tree, opts)
      await writer('t')
      const reader = b.memoize((_k: string): unknown => t.fail('the reader must not compute'), opts)
      const back = (await reader.peek('t')) as typeof tree
      t.not(back, tree)
      t.deepEqual(back, tree)
      t.is(Object.getPrototypeOf(back.flags), Object.prototype)
      t.true(Array.isArray(back.tags[1]))
      t.true('gone' in back.flags)
      t.deepEqual(Object.keys(back), Object.keys(tree))
      t.deepEqual(await reader('t'), tree)
      await writer.close()
      await reader.close()
    },
  )

  test(title('memoize() stores an undefined result and reads it back as a hit'), async (t) => {
    const opts = b.options()
    const writer = b.memoize((_k: number): undefined => undefined, opts)
    t.is(await writer(1), undefined)
    const reader = b.memoize((_k: number): undefined => t.fail('the reader must not compute'), opts)
    t.true(await reader.has(1))
    t.is(await reader(1), undefined)
    t.is((await reader.stats()).hits, 1)
    await writer.close()
    await reader.close()
  })

  test(title('close() flushes, and later calls throw ERR_CLOSED'), async (t) => {
    const opts = b.options()
    const f = b.memoize((x: number) => x + 1, opts)
    const keep = b.memoize((_x: number): number => t.fail('must read the value f stored'), opts)
    t.is(await f(1), 2)
    await f.close()
    await f.close() // idempotent
    await throwsOrRejects(t, b.remote, () => f(1), { instanceOf: CachetteError, code: 'ERR_CLOSED' })
    t.is(await keep(1), 2)
    await keep.close()
  })
}

/** LRU bounds, on the backends that have them (memory and shared memory). */
function boundsSuite(b: Backend, title: (s: string) => string): void {
  test(title('maxEntries evicts the least recently used entry'), async (t) => {
    const c = counted<[number]>()
    const f = b.memoize(c.fn, { maxEntries: 3 })
    await f(1)
    await f(2)
    await f(3)
    await f(1) // 2 is now the least recently used
    await f(4)
    t.is((await f.stats()).size, 3)
    t.deepEqual(await Promise.all([1, 2, 3, 4].map((k) => f.has(k))), [true, false, true, true])
    t.is(c.calls(), 4)
  })

  test(title('maxBytes evicts the least recently used entries'), async (t) => {
    const f = b.memoize((x: number) => String(x).repeat(1000), { maxBytes: 3500 })
    await f(1)
    await f(2)
    await f(3)
    await f(1)
    await f(4)
    t.deepEqual(await Promise.all([1, 2, 3, 4].map((k) => f.has(k))), [true, false, true, true])
  })

  test(title('maxBytes refuses a value larger than the bound without evicting the others'), async (t) => {
    const f = b.memoize((x: number) => String(x).repeat(x === 9 ? 10_000 : 1000), { maxBytes: 3500 })
    await f(1)
    await f(2)
    t.is((await f(9)).length, 10_000)
    t.deepEqual(await Promise.all([1, 2, 9].map((k) => f.has(k))), [true, true, false])
  })
}
