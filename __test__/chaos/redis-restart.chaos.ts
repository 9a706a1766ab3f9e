import test from 'ava'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { memoize } from '../../src-ts/index'
import { sleep, uniqueNamespace } from '../helpers/env'
import { startRedis } from '../helpers/servers'
import type { RedisProcess } from '../helpers/servers'
import { runFixture } from '../fixtures/rpc'
import { count, figure, percentile } from './helpers/figures'

/*
 * T12: a Redis server restarted and stalled under load. 4 processes × 16 callers call a memoized
 * function of 1,000 keys (ttl 5 s: hits and misses mix; onBackendError 'fallback') on a
 * redis-server of this test, while every 10 s it is in turn shut down (SHUTDOWN NOSAVE) and
 * restarted, killed (kill -9) and restarted, paused (CLIENT PAUSE 2000 ALL), stripped of its
 * scripts (SCRIPT FLUSH) and emptied (FLUSHALL). No call may fail or return another key's value;
 * scripts must come back by themselves (NOSCRIPT), and hits must resume soon after the server is
 * back (each process samples its hit counter every 50 ms).
 */

const PROCESSES = 4
const CALLERS = 16
const KEYS = 1000
const EVERY = 10_000
/** CI: the five faults once (about 60 s); soak: six rounds. */
const ROUNDS = count(1, 6)
const DURATION = 5000 + ROUNDS * 5 * EVERY

interface Report {
  calls: number
  failed: number
  wrong: number
  failures: string[]
  slowest: { ms: number; at: number }
  computations: number
  hits: number
  samples: [number, number][]
}

const cli = (port: number, ...args: string[]) =>
  spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim()

/** The first time after `at` that a process's hit counter grew: how long after `at` that was. */
function hitsResumed(reports: Report[], at: number): number {
  let worst = 0
  for (const r of reports) {
    const s = r.samples
    const i = s.findIndex(([t], j) => t >= at && j > 0 && s[j][1] > s[j - 1][1])
    worst = Math.max(worst, i < 0 ? Infinity : s[i][0] - at)
  }
  return worst
}

/** Misses right after SCRIPT FLUSH, with 'throw': each must take its lease and store (scripts reloaded). */
async function missesAfterScriptFlush(url: string): Promise<{ failed: number; tried: number }> {
  const f = memoize(async (k: number) => k, {
    backend: 'redis',
    url,
    namespace: uniqueNamespace('t12-noscript'),
    onBackendError: 'throw',
  })
  let failed = 0
  const tried = 20
  for (let k = 0; k < tried; k++) await f(k).catch(() => failed++)
  await f.close()
  return { failed, tried }
}

test.serial(
  'T12 Redis shut down, killed, paused, script-flushed and flushed under 4 processes × 16 callers',
  async (t) => {
    const redis: RedisProcess = await startRedis()
    t.teardown(() => redis.stop())
    const namespace = uniqueNamespace('t12')
    const fixture = join(__dirname, 'fixtures', 'restart-caller.ts')
    const started = Date.now()
    const children = Array.from({ length: PROCESSES }, () =>
      runFixture(
        fixture,
        [redis.url, namespace, String(CALLERS), String(KEYS), String(DURATION)],
        {},
        DURATION + 60_000,
      ),
    )
    const back: { fault: string; at: number }[] = []
    let noscript = { failed: 0, tried: 0 }
    let scriptsReloaded = true
    await sleep(5000)
    for (let round = 0; round < ROUNDS; round++) {
      const next = (i: number) => sleep(Math.max(0, started + 5000 + (round * 5 + i) * EVERY - Date.now()))
      await next(0)
      await redis.shutdown()
      await sleep(1000)
      await redis.restart()
      back.push({ fault: 'SHUTDOWN NOSAVE + restart', at: Date.now() })
      await next(1)
      redis.child.kill('SIGKILL')
      await new Promise((r) => redis.child.once('exit', r))
      await sleep(1000)
      await redis.restart()
      back.push({ fault: 'kill -9 + restart', at: Date.now() })
      await next(2)
      const pausedAt = Date.now()
      cli(redis.port, 'CLIENT', 'PAUSE', '2000', 'ALL')
      back.push({ fault: 'CLIENT PAUSE 2000 ALL', at: pausedAt + 2000 })
      await next(3)
      cli(redis.port, 'SCRIPT', 'FLUSH')
      const m = await missesAfterScriptFlush(redis.url)
      noscript = { failed: noscript.failed + m.failed, tried: noscript.tried + m.tried }
      const cached = Number(/number_of_cached_scripts:(\d+)/.exec(cli(redis.port, 'INFO', 'memory'))?.[1] ?? 0)
      scriptsReloaded &&= cached > 0
      await next(4)
      cli(redis.port, 'FLUSHALL')
    }
    const results = await Promise.all(children)
    const reports = results.map((r, i) => {
      t.is(r.code, 0, `process ${i}: ${r.stderr.slice(-2000)}`)
      return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as Report
    })
    const sum = (k: 'calls' | 'failed' | 'wrong' | 'computations' | 'hits') => reports.reduce((n, r) => n + r[k], 0)
    t.log(`calls ${sum('calls')}, hits ${sum('hits')}, computations ${sum('computations')}`)
    const failures = reports.flatMap((r) => r.failures).slice(0, 5)
    figure(t, 'T12', `failed user calls (of ${sum('calls')}, 'fallback')`, sum('failed'), '= 0', sum('failed') === 0)
    if (failures.length > 0) t.log(failures.join('\n'))
    figure(t, 'T12', 'wrong values', sum('wrong'), '= 0', sum('wrong') === 0)
    figure(
      t,
      'T12',
      'NOSCRIPT recovered: misses failing after SCRIPT FLUSH',
      `${noscript.failed} of ${noscript.tried}, scripts ${scriptsReloaded ? '' : 'not '}cached again`,
      '0, cached again',
      noscript.failed === 0 && scriptsReloaded,
    )
    // The breaker's half-open interval is 1 s after refused probes (a server restarting), 2 s once
    // a probe went unanswered (the probe sent 500 ms before the end of a 2 s pause is answered
    // just too late).
    for (const kind of new Set(back.map((b) => b.fault))) {
      const delays = back.filter((b) => b.fault === kind).map((b) => hitsResumed(reports, b.at))
      const worst = percentile(delays, 100)
      const interval = kind.startsWith('CLIENT PAUSE') ? 2000 : 1000
      figure(
        t,
        'T12',
        `hits again after ${kind} (slowest of ${PROCESSES} processes)`,
        `${worst} ms`,
        `≤ 2 half-open intervals (2 × ${interval} ms)`,
        worst <= 2 * interval,
      )
    }
    // A caller may wait for another process's computation whose commit a fault stopped: its
    // lease (5 s by default) then expires, and the waiter goes on.
    const slowest = reports.reduce((a, r) => (r.slowest.ms > a.ms ? r.slowest : a), { ms: 0, at: 0 })
    t.log(
      `slowest call ended ${slowest.at - started} ms into the run; faults over at ${back.map((b) => b.at - started).join(', ')} ms`,
    )
    figure(
      t,
      'T12',
      'slowest call',
      `${slowest.ms} ms`,
      '≤ lease + 2 × backendTimeout + compute (6,002 ms)',
      slowest.ms <= 6002,
    )
  },
)
