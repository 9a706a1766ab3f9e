import test from 'ava'
import type { ExecutionContext } from 'ava'
import { memoize } from '../../src-ts/index'
import { sleep, uniqueNamespace } from '../helpers/env'
import { MYSQL_URL, PG_URL, REDIS_URL, serverAvailable } from '../helpers/servers'
import { faultProxy } from './helpers/fault-proxy'
import type { Fault } from './helpers/fault-proxy'
import { count, figure, percentile } from './helpers/figures'

/*
 * T13: network faults between cachette and its server. A TCP fault proxy (helpers/fault-proxy.ts)
 * stands in front of Redis, PostgreSQL and MariaDB; a memoized function (backendTimeout 250 ms,
 * onBackendError 'fallback', direct reads on) is called one call at a time while the proxy
 * blackholes, resets, delays by 500 ms, slices into single bytes, or closes connections after
 * some bytes, and then heals. Each call must end within 2 × backendTimeout + its computation
 * (at most two operations on the server sit on a call's path), none may hang, none may fail or
 * return another key's value; the circuit breaker must open within 5 failed calls, and the cache
 * must serve hits again within two half-open intervals of the heal.
 */

const TIMEOUT = 250
const COMPUTE = 5
const KEYS = 20
/** How long each fault lasts, calls going on all along. */
const FAULT_MS = count(2500, 10_000)
/** A call still pending after this is hung. */
const HUNG_MS = 10_000

const faults: [string, Fault][] = [
  ['blackhole', { kind: 'blackhole' }],
  ['+500 ms latency', { kind: 'latency', ms: 500 }],
  ['reset', { kind: 'reset' }],
  ['1-byte slicing', { kind: 'slice' }],
  ['close after 2,000 bytes', { kind: 'closeAfter', bytes: 2000 }],
]
/** The faults under which every operation fails, so the breaker must open. */
const FAILING = new Set(['blackhole', '+500 ms latency', 'reset'])

const servers: [string, 'redis' | 'sql', string][] = [
  ['Redis', 'redis', REDIS_URL],
  ['PostgreSQL', 'sql', PG_URL],
  ['MariaDB', 'sql', MYSQL_URL],
]

/** The breaker's openings seen in warnings: the call in flight when each came, and when. */
function breakerWatch(namespace: string) {
  const openings: { call: number; at: number }[] = []
  let call = 0
  const on = (w: Error) => {
    if (w.name === 'CachetteWarning' && w.message.includes(namespace) && /circuit breaker opening #/.test(w.message)) {
      openings.push({ call, at: performance.now() })
    }
  }
  process.on('warning', on)
  return {
    openings,
    setCall: (n: number) => (call = n),
    stop: () => process.off('warning', on),
  }
}

/**
 * The breaker's half-open interval at `healed`, by its documented schedule: open at `opened`
 * for 1 s, then each probe started before the heal fails; one the server left unanswered (a
 * `silent` fault) doubles the interval, up to 30 s, after its timeout; a refused one keeps 1 s.
 */
function intervalAt(opened: number, healed: number, silent: boolean): number {
  let interval = 1000
  for (let probe = opened + interval; probe < healed; probe += interval) {
    if (silent) {
      probe += TIMEOUT
      interval = Math.min(2 * interval, 30_000)
    }
  }
  return interval
}

/** The faults the server leaves unanswered (a probe then costs the timeout). */
const SILENT = new Set(['blackhole', '+500 ms latency'])

for (const [name, backend, base] of servers) {
  if (!serverAvailable(name, base)) continue
  test.serial(
    `T13 ${name} behind a fault proxy: calls bounded, none hung or wrong, the breaker opens and heals`,
    async (t) => {
      const u = new URL(base)
      const proxy = await faultProxy(u.hostname, Number(u.port))
      t.teardown(() => proxy.close())
      const namespace = uniqueNamespace(`t13-${name}`)
      const f = memoize(
        async (k: number) => {
          await sleep(COMPUTE)
          return { k, v: `value of ${k}` }
        },
        { backend, url: proxy.url(base), namespace, backendTimeout: TIMEOUT },
      )
      t.teardown(async () => {
        await Promise.resolve(f.clear()).catch(() => undefined)
        await f.close()
      })
      await f.clear()
      for (let k = 0; k < KEYS; k++) await f(k)
      const watch = breakerWatch(namespace)
      t.teardown(() => watch.stop())
      let slowest = { ms: 0, fault: '' }
      let hung = 0
      let wrong = 0
      let failed = 0
      let calls = 0
      /** One call of key `k`: its time, or HUNG_MS if it did not settle by then. */
      const call = async (k: number): Promise<number> => {
        const t0 = performance.now()
        const outcome = await Promise.race([
          f(k).then(
            (v) => (v.k === k && v.v === `value of ${k}` ? 'ok' : 'wrong'),
            () => 'failed',
          ),
          sleep(HUNG_MS).then(() => 'hung'),
        ])
        calls++
        if (outcome === 'hung') hung++
        if (outcome === 'wrong') wrong++
        if (outcome === 'failed') failed++
        return performance.now() - t0
      }
      for (const [fault, how] of faults) {
        const opened = watch.openings.length
        const before = await f.stats()
        proxy.inject(how)
        const times: number[] = []
        const end = Date.now() + FAULT_MS
        for (let i = 0; Date.now() < end; i++) {
          watch.setCall(i)
          times.push(await call(i % KEYS))
        }
        const p100 = percentile(times, 100)
        if (p100 > slowest.ms) slowest = { ms: p100, fault }
        const mine = watch.openings.slice(opened)
        if (FAILING.has(fault)) {
          const n = mine.length > 0 ? mine[0].call : Infinity
          figure(
            t,
            'T13',
            `${name}, ${fault}: calls before the breaker opened`,
            Number.isFinite(n) ? n : 'never',
            '≤ 5',
            n <= 5,
          )
        }
        if (how.kind === 'slice') {
          // Slow bytes are no failure: the hits go on (the plan's criterion: a hit ratio within 2 %
          // of the 100 % before; on a loaded machine a sliced read has outlasted the timeout).
          const after = await f.stats()
          const hits = after.hits - before.hits
          const served = `${hits} hits of ${times.length} calls, ${after.errors - before.errors} errors`
          figure(t, 'T13', `${name}, ${fault}: calls served`, served, '≥ 98 % hits', hits >= 0.98 * times.length)
        }
        // Healed: the cache serves hits again within two half-open intervals of the breaker.
        proxy.heal()
        const healed = performance.now()
        const lastOpening = watch.openings.slice(opened).at(-1)
        const cooldown = lastOpening === undefined ? 1000 : intervalAt(lastOpening.at, healed, SILENT.has(fault))
        let resumed = Infinity
        const hits = (await f.stats()).hits
        for (let i = 0; performance.now() - healed < 4 * cooldown + 5000; i++) {
          await call(i % KEYS)
          if ((await f.stats()).hits > hits) {
            resumed = performance.now() - healed
            break
          }
          await sleep(20)
        }
        // Before the next fault, the breaker closes too (hits may come back sooner, on this
        // thread's direct connection): a write through the core is counted as no error.
        for (let i = 0; performance.now() - healed < 4 * cooldown + 5000; i++) {
          const errors = (await f.stats()).errors
          await f.set([i % KEYS], { k: i % KEYS, v: `value of ${i % KEYS}` })
          if ((await f.stats()).errors === errors) break
          await sleep(50)
        }
        t.log(`${fault}: first calls ${times.slice(0, 8).map(Math.round).join(' ')} ms of ${times.length}`)
        figure(
          t,
          'T13',
          `${name}, ${fault}: hits again after the heal`,
          `${Math.round(resumed)} ms`,
          `≤ 2 half-open intervals (${2 * cooldown} ms)`,
          resumed <= 2 * cooldown,
        )
      }
      const bound = 2 * TIMEOUT + COMPUTE
      report(t, name, slowest, bound, { hung, wrong, failed, calls })
    },
  )
}

function report(
  t: ExecutionContext,
  name: string,
  slowest: { ms: number; fault: string },
  bound: number,
  n: { hung: number; wrong: number; failed: number; calls: number },
): void {
  figure(
    t,
    'T13',
    `${name}: slowest call (p100 of ${n.calls}, under ${slowest.fault})`,
    `${Math.round(slowest.ms)} ms`,
    `≤ 2 × backendTimeout + compute (${bound} ms)`,
    slowest.ms <= bound,
  )
  figure(t, 'T13', `${name}: hung calls`, n.hung, '= 0', n.hung === 0)
  figure(t, 'T13', `${name}: wrong values`, n.wrong, '= 0', n.wrong === 0)
  figure(t, 'T13', `${name}: failed calls (onBackendError 'fallback')`, n.failed, '= 0', n.failed === 0)
}
