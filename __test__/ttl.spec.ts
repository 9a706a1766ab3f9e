import test from 'ava'
import type { ExecutionContext } from 'ava'
import { setTestTime } from '../src-ts/clock'
import { sleep, tempDir } from './helpers/env'
import { backends, counted, remoteBackends, waitFor } from './helpers/store-suite'

/*
 * Expiry: `ttl`, and `staleWhileRevalidate` (serve the stale value at once, refresh once in the
 * background). Time is the fake cache clock (`setTestTime`), which the JS layer and the native
 * stores alike read: it is process-wide, so every test of this file is serial. It starts at the
 * real time and ttls are a minute long, so that a server expiring keys or rows by its own clock
 * never does so during a test. Background refreshes still run on their own: they are waited
 * for with `waitFor`.
 */

const dir = tempDir('ttl')
const TTL = 60_000

/** Stops the cache clock at the real time now; returns a function that sets it `ms` later. */
function fakeClock(t: ExecutionContext): (ms: number) => void {
  t.teardown(() => setTestTime(undefined))
  const t0 = Date.now()
  setTestTime(t0)
  return (ms) => setTestTime(t0 + ms)
}

for (const b of backends(dir)) {
  const title = (s: string) => `${s} (${b.name})`

  test.serial(
    title('an entry expires after its ttl: has() and peek() stop seeing it and the next call recomputes'),
    (t) => {
      const at = fakeClock(t)
      const c = counted<[string]>()
      const f = b.memoize(c.fn, { ttl: '1m' })
      t.deepEqual(f('k'), { n: 1 })
      at(TTL - 1)
      t.true(f.has('k'))
      t.deepEqual(f.peek('k'), { n: 1 })
      t.deepEqual(f('k'), { n: 1 }, 'a hit just before the ttl')
      at(TTL)
      t.false(f.has('k'))
      t.is(f.peek('k'), undefined)
      t.deepEqual(f('k'), { n: 2 })
      t.deepEqual(f('k'), { n: 2 })
      t.is(c.calls(), 2)
    },
  )

  test.serial(title('an async entry expires after its ttl'), async (t) => {
    const at = fakeClock(t)
    let n = 0
    const f = b.memoize(async (_k: string) => ++n, { ttl: TTL })
    t.is(await f('k'), 1)
    at(TTL - 1)
    t.is(await f('k'), 1)
    at(TTL + 1)
    t.is(await f('k'), 2)
    t.is(await f('k'), 2)
  })

  test.serial(title('each entry expires on its own clock'), (t) => {
    const at = fakeClock(t)
    const c = counted<[number]>()
    const f = b.memoize(c.fn, { ttl: TTL })
    f(1)
    at(TTL / 2)
    f(2)
    at(TTL + 1)
    t.false(f.has(1), 'older than its ttl')
    t.true(f.has(2), 'younger than its ttl')
    at(TTL / 2 + TTL + 1)
    t.false(f.has(2), 'older than its ttl in turn')
    t.is(c.calls(), 2)
  })

  test.serial(
    title('staleWhileRevalidate serves the stale value, refreshes it in the background and keeps a sync function sync'),
    async (t) => {
      const at = fakeClock(t)
      let n = 0
      const f = b.memoize((_k: string) => ({ n: ++n }), { ttl: TTL, staleWhileRevalidate: true })
      t.deepEqual(f('k'), { n: 1 })
      at(TTL + 1)
      t.deepEqual(f('k'), { n: 1 }, 'the stale value, at once')
      await waitFor(() => (f.peek('k') as { n: number } | undefined)?.n === 2)
      const fresh = f('k')
      t.false(fresh instanceof Promise, 'a sync function stays sync after a background refresh')
      t.deepEqual(fresh, { n: 2 })
      t.is(f.stats().staleHits, 1)
      t.is(n, 2)
    },
  )

  test.serial(title('staleWhileRevalidate runs exactly one refresh for 20 concurrent stale hits'), async (t) => {
    const at = fakeClock(t)
    let n = 0
    const f = b.memoize(
      async (_k: string) => {
        const v = ++n
        await sleep(30)
        return v
      },
      { ttl: TTL, staleWhileRevalidate: true },
    )
    t.is(await f('k'), 1)
    at(TTL + 1)
    const stale = await Promise.all(Array.from({ length: 20 }, () => f('k')))
    t.deepEqual(stale, Array(20).fill(1))
    await waitFor(async () => (await f.peek('k')) === 2)
    t.is(await f('k'), 2)
    t.is(n, 2, 'one background refresh')
    t.is(f.stats().staleHits, 20)
  })

  test.serial(
    title('staleWhileRevalidate with a grace window serves stale within it and recomputes in the foreground past it'),
    async (t) => {
      const at = fakeClock(t)
      const c = counted<[string]>()
      const f = b.memoize(c.fn, { ttl: TTL, staleWhileRevalidate: TTL })
      f('in')
      f('past')
      at(TTL + TTL / 2)
      t.deepEqual(f('in'), { n: 1 }, 'within ttl + grace: served stale')
      t.is(f.stats().staleHits, 1)
      await waitFor(() => c.calls() === 3) // its background refresh
      at(2 * TTL + 1)
      t.deepEqual(f('past'), { n: 4 }, 'past ttl + grace: computed before answering')
      t.is(f.stats().staleHits, 1)
    },
  )

  test.serial(title('a failed background refresh keeps serving the stale value and counts an error'), async (t) => {
    const at = fakeClock(t)
    let n = 0
    const f = b.memoize(
      (_k: string) => {
        if (++n > 1) throw new Error('refresh failed')
        return 'first'
      },
      { ttl: TTL, staleWhileRevalidate: true },
    )
    t.is(f('k'), 'first')
    at(TTL + 1)
    t.is(f('k'), 'first')
    await waitFor(() => f.stats().errors > 0)
    t.is(f('k'), 'first', 'still the stale value')
    t.true(f.has('k'))
  })
}

// The memory stores only: on shared memory, disk and SQL a refresh still in flight at delete()
// or clear() can still store its value afterwards (not covered here).
for (const b of backends(dir).filter((m) => !m.encoded)) {
  test.serial(
    `a background refresh that finishes after delete() or clear() of its key does not bring the entry back (${b.name})`,
    async (t) => {
      const at = fakeClock(t)
      for (const kind of ['sync', 'async'] as const) {
        for (const op of ['delete', 'clear'] as const) {
          for (const arg of [7, { id: 7 }] as unknown[]) {
            const what = `${kind} function, ${op}() of ${JSON.stringify(arg)}`
            at(0)
            let n = 0
            let refreshed = false
            let release!: () => void
            const gate = new Promise<void>((r) => (release = r))
            const options = { ttl: TTL, staleWhileRevalidate: true }
            const f =
              kind === 'sync'
                ? b.memoize((_a: unknown) => {
                    refreshed = ++n > 1
                    return { n }
                  }, options)
                : b.memoize(async (_a: unknown) => {
                    const v = ++n
                    if (v > 1) {
                      await gate
                      refreshed = true
                    }
                    return { n: v }
                  }, options)
            t.deepEqual(await f(arg), { n: 1 }, what)
            at(TTL + 1)
            // The stale value at once; its refresh runs on a later turn (sync) or awaits the gate (async).
            t.deepEqual(await f(arg), { n: 1 }, what)
            if (op === 'delete') t.true(f.delete(arg), what)
            else f.clear()
            release()
            await waitFor(() => refreshed)
            await new Promise((r) => setImmediate(r)) // the refresh's value reaches the store
            t.is(n, 2, `${what}: one refresh`)
            t.false(f.has(arg), `${what}: the refresh brought the entry back`)
            t.is(f.stats().size, 0, what)
          }
        }
      }
    },
  )
}

for (const b of remoteBackends(dir)) {
  test.serial(
    `staleWhileRevalidate refreshes an entry in the background each time it goes stale (${b.name})`,
    async (t) => {
      const at = fakeClock(t)
      let n = 0
      const f = b.memoize(async (_k: string) => ++n, { ttl: TTL, staleWhileRevalidate: true })
      t.is(await f('k'), 1)
      for (let round = 1; round <= 3; round++) {
        at(round * (TTL + 1000))
        t.is(await f('k'), round, `round ${round}: the stale value is served`)
        await waitFor(() => n === round + 1)
        await waitFor(async () => (await f.peek('k')) === round + 1) // the refresh is stored
      }
      t.is(n, 4, 'one refresh per time the entry went stale')
      t.is((await f.stats()).staleHits, 3)
    },
  )
}
