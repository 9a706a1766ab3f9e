import test from 'ava'
import { sleep, tempDir } from './helpers/env'
import { backends, counted, remoteBackends, waitFor, withinTtl } from './helpers/store-suite'

/*
 * Expiry: `ttl`, and `staleWhileRevalidate` (serve the stale value at once, refresh once in the
 * background). Short ttls and generous sleeps; no assertion on how long anything took.
 */

const dir = tempDir('ttl')

for (const b of backends(dir)) {
  const title = (s: string) => `${s} (${b.name})`

  test(
    title('an entry expires after its ttl: has() and peek() stop seeing it and the next call recomputes'),
    async (t) => {
      const c = counted<[string]>()
      const f = b.memoize(c.fn, { ttl: '100ms' })
      t.deepEqual(f('k'), { n: 1 })
      t.true(f.has('k'))
      await sleep(150)
      t.false(f.has('k'))
      t.is(f.peek('k'), undefined)
      t.deepEqual(f('k'), { n: 2 })
      t.deepEqual(f('k'), { n: 2 })
      t.is(c.calls(), 2)
    },
  )

  test(title('an async entry expires after its ttl'), async (t) => {
    // A round whose two calls were not within the ttl (a loaded machine) proves nothing: run again.
    const judged = await withinTtl(t, async () => {
      let n = 0
      const f = b.memoize(async (_k: string) => ++n, { ttl: 100 })
      const start = Date.now()
      t.is(await f('k'), 1)
      const second = await f('k')
      if (Date.now() - start >= 100) return false
      t.is(second, 1)
      await sleep(150)
      t.is(await f('k'), 2)
      return true
    })
    t.true(judged)
  })

  test(title('each entry expires on its own clock'), async (t) => {
    const judged = await withinTtl(t, async () => {
      const c = counted<[number]>()
      const f = b.memoize(c.fn, { ttl: 400 })
      f(1)
      await sleep(250)
      const second = Date.now()
      f(2)
      await sleep(250)
      const older = f.has(1)
      const younger = f.has(2)
      // The timer may wake late on a loaded machine: then entry 2 is no longer younger than its ttl.
      if (Date.now() - second >= 400) return false
      t.false(older, 'older than its ttl')
      t.true(younger, 'younger than its ttl')
      return true
    })
    t.true(judged)
  })

  test(
    title('staleWhileRevalidate serves the stale value, refreshes it in the background and keeps a sync function sync'),
    async (t) => {
      let n = 0
      const f = b.memoize((_k: string) => ({ n: ++n }), { ttl: 150, staleWhileRevalidate: true })
      t.deepEqual(f('k'), { n: 1 })
      await sleep(200)
      t.deepEqual(f('k'), { n: 1 }, 'the stale value, at once')
      await waitFor(() => n === 2)
      await sleep(20)
      const fresh = f('k')
      t.false(fresh instanceof Promise, 'a sync function stays sync after a background refresh')
      t.deepEqual(fresh, { n: 2 })
      t.is(f.stats().staleHits, 1)
      t.is(n, 2)
    },
  )

  test(title('staleWhileRevalidate runs exactly one refresh for 20 concurrent stale hits'), async (t) => {
    let n = 0
    const f = b.memoize(
      async (_k: string) => {
        const v = ++n
        await sleep(30)
        return v
      },
      { ttl: 150, staleWhileRevalidate: true },
    )
    t.is(await f('k'), 1)
    await sleep(200)
    const stale = await Promise.all(Array.from({ length: 20 }, () => f('k')))
    t.deepEqual(stale, Array(20).fill(1))
    await waitFor(() => n === 2)
    await sleep(60)
    t.is(await f('k'), 2)
    await sleep(20)
    t.is(n, 2, 'one background refresh')
    t.is(f.stats().staleHits, 20)
  })

  test(
    title('staleWhileRevalidate with a grace window recomputes in the foreground once the window has passed'),
    async (t) => {
      const c = counted<[string]>()
      const f = b.memoize(c.fn, { ttl: 80, staleWhileRevalidate: 80 })
      f('k')
      await sleep(250)
      t.deepEqual(f('k'), { n: 2 }, 'past ttl + grace: not served stale')
      t.is(f.stats().staleHits, 0)
    },
  )

  test(title('a failed background refresh keeps serving the stale value and counts an error'), async (t) => {
    let n = 0
    const f = b.memoize(
      (_k: string) => {
        if (++n > 1) throw new Error('refresh failed')
        return 'first'
      },
      { ttl: 100, staleWhileRevalidate: true },
    )
    t.is(f('k'), 'first')
    await sleep(150)
    t.is(f('k'), 'first')
    await waitFor(() => f.stats().errors > 0)
    t.is(f('k'), 'first', 'still the stale value')
  })
}

for (const b of remoteBackends(dir)) {
  test(`staleWhileRevalidate refreshes an entry in the background each time it goes stale (${b.name})`, async (t) => {
    let n = 0
    const f = b.memoize(async (_k: string) => ++n, { ttl: 300, staleWhileRevalidate: true })
    t.is(await f('k'), 1)
    for (let round = 1; round <= 3; round++) {
      await sleep(400)
      t.is(await f('k'), round, `round ${round}: the stale value is served`)
      await waitFor(() => n === round + 1)
    }
    t.is(n, 4, 'one refresh per time the entry went stale')
    t.is((await f.stats()).staleHits, 3)
  })
}
