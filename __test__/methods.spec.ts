import test from 'ava'
import { setTestTime } from '../src-ts/clock'
import { memoize } from '../src-ts/index'
import { sleep, tempDir } from './helpers/env'
import { backends, counted, track } from './helpers/store-suite'

/*
 * What a memoized function carries besides the call: with(), uncached(), refresh(), set(),
 * peek(), has(), delete(), clear() with dependsOn, clearLocks() and stats(), on every backend.
 */

const dir = tempDir('methods')

for (const b of backends(dir)) {
  const title = (s: string) => `${s} (${b.name})`

  test(title('the memoized function keeps the name of the original'), (t) => {
    const f = b.memoize(function loadUser(id: number) {
      return id
    })
    t.is(f.name, 'loadUser')
  })

  test.serial(title('with({ maxAge }) recomputes an entry older than maxAge and serves a younger one'), (t) => {
    // On the fake cache clock (process-wide: hence serial).
    t.teardown(() => setTestTime(undefined))
    const c = counted<[number]>()
    const f = b.memoize(c.fn)
    const t0 = Date.now()
    setTestTime(t0)
    t.deepEqual(f(1), { n: 1 })
    setTestTime(t0 + 1000)
    t.deepEqual(f.with({ maxAge: 60_000 })(1), { n: 1 }, 'young enough: served from the cache')
    t.deepEqual(f.with({ maxAge: 1000 })(1), { n: 1 }, 'exactly maxAge old: still served')
    t.deepEqual(f.with({ maxAge: 999 })(1), { n: 2 }, 'too old for this call: recomputed')
    t.deepEqual(f(1), { n: 2 }, 'and the new value overwrote the old one')
    t.deepEqual(f.with({ maxAge: '1m' })(1), { n: 2 })
    t.is(c.calls(), 2)
  })

  test(title('with({ bypass: true }) calls the function and neither reads nor writes the cache'), (t) => {
    const c = counted<[number]>()
    const f = b.memoize(c.fn)
    t.deepEqual(f.with({ bypass: true })(1), { n: 1 })
    t.false(f.has(1), 'bypass did not write')
    t.deepEqual(f(1), { n: 2 })
    t.deepEqual(f.with({ bypass: true })(1), { n: 3 }, 'bypass did not read')
    t.deepEqual(f(1), { n: 2 })
  })

  test(title('with({ refresh: true }) and refresh() recompute and overwrite the cached value'), (t) => {
    const c = counted<[number]>()
    const f = b.memoize(c.fn)
    f(1)
    t.deepEqual(f.with({ refresh: true })(1), { n: 2 })
    t.deepEqual(f(1), { n: 2 })
    t.deepEqual(f.refresh(1), { n: 3 })
    t.deepEqual(f(1), { n: 3 })
    t.deepEqual(f.refresh(2), { n: 4 }, 'refresh() of an absent key computes and stores it')
    t.deepEqual(f(2), { n: 4 })
  })

  test(title('refresh() of an async function returns a Promise and overwrites once it settles'), async (t) => {
    let n = 0
    const f = b.memoize(async (_x: number) => ++n)
    t.is(await f(1), 1)
    const p = f.refresh(1)
    t.true(p instanceof Promise)
    t.is(await p, 2)
    t.is(await f(1), 2)
  })

  test(title('uncached() calls through without reading or writing'), (t) => {
    const c = counted<[number]>()
    const f = b.memoize(c.fn)
    t.deepEqual(f.uncached(1), { n: 1 })
    t.false(f.has(1))
    f(1)
    t.deepEqual(f.uncached(1), { n: 3 })
    t.deepEqual(f(1), { n: 2 })
  })

  test(title('set() precaches a Promise for an async function, and calls get its value as a Promise'), async (t) => {
    let calls = 0
    const f = b.memoize(async (_x: number) => (calls++, 'computed'))
    f.set([1], Promise.resolve('preset'))
    await sleep(10)
    const r = f(1)
    t.true(r instanceof Promise)
    t.is(await r, 'preset')
    t.is(calls, 0)
  })

  test(title('peek() never computes, and gives a Promise for the entry of an async function'), async (t) => {
    let calls = 0
    const f = b.memoize(async (x: number) => (calls++, x * 10))
    t.is(f.peek(1), undefined)
    await f(1)
    const p = f.peek(1)
    t.true(p instanceof Promise)
    t.is(await p, 10)
    t.is(calls, 1)
  })

  test(title('delete() removes one entry and reports whether there was one'), (t) => {
    const c = counted<[{ id: number }]>()
    const f = b.memoize(c.fn)
    f({ id: 1 })
    f({ id: 2 })
    t.true(f.delete({ id: 1 }))
    t.false(f.delete({ id: 1 }))
    t.false(f.delete({ id: 3 }))
    t.false(f.has({ id: 1 }))
    t.true(f.has({ id: 2 }))
    t.is(f.stats().size, 1)
    t.deepEqual(f({ id: 1 }), { n: 3 })
  })

  test(title('clear() empties the cache, resets the counters and clears the functions that depend on it'), (t) => {
    const base = counted<[number]>()
    const mid = counted<[number]>()
    const top = counted<[number]>()
    const a = b.memoize(base.fn)
    const m = b.memoize(mid.fn, { dependsOn: [a] })
    const z = b.memoize(top.fn, { dependsOn: [m] })
    a(1)
    a(1)
    m(1)
    z(1)
    m.clear()
    t.true(a.has(1), 'clearing a dependent leaves its dependency alone')
    t.false(m.has(1))
    t.false(z.has(1), 'dependents of dependents are cleared too')
    m(1)
    z(1)
    a.clear()
    t.deepEqual([a.has(1), m.has(1), z.has(1)], [false, false, false])
    t.deepEqual(a.stats(), { hits: 0, misses: 0, staleHits: 0, computations: 0, waits: 0, errors: 0, size: 0 })
  })

  test(title('stats() counts hits, misses, computations, errors and size'), (t) => {
    const f = b.memoize((x: number) => {
      if (x < 0) throw new Error('negative')
      return x
    })
    f(1)
    f(1)
    f(1)
    f(2)
    t.throws(() => f(-1))
    t.deepEqual(f.stats(), { hits: 2, misses: 3, staleHits: 0, computations: 3, waits: 0, errors: 1, size: 2 })
  })

  test(title('stats() counts 49 waits and one computation for 50 concurrent callers'), async (t) => {
    const f = b.memoize(async (x: number) => {
      await sleep(20)
      return x
    })
    await Promise.all(Array.from({ length: 50 }, () => f(1)))
    const s = f.stats()
    t.is(s.computations, 1)
    t.is(s.waits, 49)
    t.is(s.size, 1)
    t.is(s.hits + s.misses + s.staleHits + s.waits, 50, `each call is counted once: ${JSON.stringify(s)}`)
  })

  test(title('cacheUndefined: false does not store an async undefined or null result'), async (t) => {
    let calls = 0
    const f = b.memoize(async (x: number) => (calls++, x === 0 ? undefined : null), { cacheUndefined: false })
    t.is(await f(0), undefined)
    t.is(await f(1), null)
    t.is(await f(0), undefined)
    t.is(await f(1), null)
    t.is(calls, 4)
    t.false(f.has(0))
  })

  test(title('clearLocks() lets the next caller compute while an earlier computation hangs'), async (t) => {
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    let calls = 0
    const f = b.memoize(
      async (_x: number) => {
        const n = ++calls
        if (n === 1) await gate
        return n
      },
      { lockTimeout: 1000 },
    )
    const first = f(1)
    // Wait until the first computation runs (on disk and shared, after its lock is taken).
    for (let i = 0; i < 200 && calls === 0; i++) await new Promise((r) => setTimeout(r, 5))
    f.clearLocks()
    // A caller that joined the first computation would wait for it forever: the bound (past
    // lockTimeout) is a "did not hang" one.
    const second = await Promise.race([f(1), sleep(3000).then(() => 'still waiting for the first computation')])
    release()
    t.is(second, 2)
    // A caller that waited for the first computation's lock until lockTimeout counts a wait.
    t.is(f.stats().waits, 0, 'the second caller waited for the first instead of computing')
    t.is(await first, 1)
  })
}

test('clear() stops at a dependency cycle', (t) => {
  const a = track(memoize((x: number) => x, { namespace: 'cycle-a' }))
  const c = track(memoize((x: number) => x, { namespace: 'cycle-c', dependsOn: [a] }))
  c.dependents.add(a)
  a(1)
  c(1)
  a.clear()
  t.false(a.has(1))
  t.false(c.has(1))
})
