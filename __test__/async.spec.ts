import test from 'ava'
import { sleep, tempDir } from './helpers/env'
import { backends } from './helpers/store-suite'

/*
 * Promises: async functions (and functions that return promises) stay asynchronous, concurrent
 * callers of one key share one computation, and a rejection reaches every one of them unchanged
 * and is never cached.
 */

const dir = tempDir('async')

for (const b of backends(dir)) {
  const title = (s: string) => `${s} (${b.name})`

  test(title('a function that returns a Promise without being async gets Promises on misses and hits'), async (t) => {
    let calls = 0
    const f = b.memoize((x: number) => (calls++, Promise.resolve(x * 2)))
    const miss = f(2)
    t.true(miss instanceof Promise)
    t.is(await miss, 4)
    const hit = f(2)
    t.true(hit instanceof Promise)
    t.is(await hit, 4)
    t.is(calls, 1)
  })

  test(title('50 concurrent callers of a promise-returning function share one computation'), async (t) => {
    let calls = 0
    const f = b.memoize((x: number) => {
      calls++
      return sleep(30).then(() => ({ x }))
    })
    const all = await Promise.all(Array.from({ length: 50 }, () => f(3)))
    t.is(calls, 1)
    t.true(all.every((r) => r.x === 3))
  })

  test(title('concurrent callers of different keys compute side by side'), async (t) => {
    const keys = Array.from({ length: 8 }, (_, i) => i)
    let active = 0
    let open!: () => void
    const allStarted = new Promise<void>((r) => (open = r))
    // Each computation waits until all 8 have started: serialized computations would never get there.
    const giveUp = setTimeout(open, 5000)
    const f = b.memoize(async (x: number) => {
      if (++active === keys.length) open()
      await allStarted
      return x
    })
    t.deepEqual(await Promise.all(keys.map((k) => f(k))), keys)
    clearTimeout(giveUp)
    t.is(active, keys.length)
    t.is(f.stats().computations, keys.length)
  })

  test(title('a caller arriving after the value settled gets a hit, not a new computation'), async (t) => {
    let calls = 0
    const f = b.memoize(async (x: number) => (calls++, x))
    await Promise.all([f(1), f(1)])
    t.is(await f(1), 1)
    t.is(calls, 1)
    t.is(f.stats().hits, 1)
  })

  test(title('a promise-returning function that throws synchronously throws the same error to the caller'), (t) => {
    const err = new TypeError('bad input')
    let calls = 0
    const f = b.memoize((x: number): Promise<number> => {
      calls++
      if (x < 0) throw err
      return Promise.resolve(x)
    })
    t.throws(() => f(-1), { is: err })
    t.throws(() => f(-1), { is: err })
    t.is(calls, 2)
  })

  test(title('a rejection with a non-Error value reaches every concurrent caller unchanged'), async (t) => {
    const reason = { code: 42, detail: 'not an Error' }
    let calls = 0
    const f = b.memoize(async (_x: number) => {
      calls++
      await sleep(20)
      throw reason
    })
    const settled = await Promise.allSettled([f(1), f(1), f(1)])
    t.is(calls, 1)
    for (const s of settled) t.is(s.status === 'rejected' ? s.reason : undefined, reason)
  })

  test(title('a rejection is not cached even when callers keep arriving while it settles'), async (t) => {
    let calls = 0
    const f = b.memoize(async (_x: number) => {
      const n = ++calls
      await sleep(20)
      if (n === 1) throw new Error('first attempt fails')
      return n
    })
    const first = f(1)
    await t.throwsAsync(first, { message: 'first attempt fails' })
    t.false(f.has(1))
    t.is(await f(1), 2)
    t.is(await f(1), 2)
    t.is(calls, 2)
  })

  if (!b.encoded) continue

  test(title('two memoized functions on one namespace share one computation'), async (t) => {
    const opts = b.options()
    let calls = 0
    const make = (who: string) =>
      b.memoize(async (_x: number) => {
        calls++
        await sleep(50)
        return who
      }, opts)
    const a = make('a')
    const c = make('c')
    const results = await Promise.all([a(1), c(1), a(1), c(1)])
    t.is(calls, 1)
    t.is(new Set(results).size, 1, `every caller got the one computed value: ${results.join(',')}`)
  })

  test(title('a waiter on another handle of the namespace gets the rejection and does not recompute'), async (t) => {
    const opts = b.options()
    let calls = 0
    const make = () =>
      b.memoize(async (_x: number) => {
        calls++
        await sleep(50)
        throw new Error('shared boom')
      }, opts)
    const a = make()
    const c = make()
    const [ra, rc] = await Promise.allSettled([a(1), c(1)])
    t.is(calls, 1)
    t.is(ra.status === 'rejected' && (ra.reason as Error).message, 'shared boom')
    t.is(rc.status === 'rejected' && (rc.reason as Error).message, 'shared boom')
    t.false(c.has(1))
  })
}
