import test from 'ava'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { tempDir, uniqueNamespace } from '../helpers/env'
import { reachable } from '../helpers/servers'
import { spawnPeer } from '../fixtures/rpc'
import type { Peer, Reply } from '../fixtures/rpc'
import { report } from './helpers/report'

/*
 * Load (issue 14, item 11): 8 processes × 64 callers for 60 s, on disk (one owner and 7 guests
 * of one directory) and on Redis (database 5, this test's own), 90 % of calls hits over 100,000
 * keys written beforehand, 10 % misses of new keys.
 */

const dir = tempDir('chaos-load')
const PEER = join(__dirname, '..', 'fixtures', 'load-peer.ts')
const PEERS = 8
const RUN_MS = 60_000
/** Load before the measured run, so that bounded caches (the owner's recent entries, RocksDB's block cache) fill first. */
const WARM_UP_MS = 20_000
const REDIS = 'redis://127.0.0.1:6379/5'

interface RunReply extends Reply {
  calls: number
  errors: number
  storeErrors: number
  hits: number
  misses: number
  ms: number
  hist: (number | null)[]
  rss: number[]
  /** V8's heap and external memory, sampled with `rss`. */
  heap: number[]
}

/** The p-th percentile (0–100) of a merged histogram, in µs (a bucket's geometric middle). */
function percentileOf(hist: number[], p: number): number {
  const total = hist.reduce((a, b) => a + (b ?? 0), 0)
  let seen = 0
  for (let b = 0; b < hist.length; b++) {
    seen += hist[b] ?? 0
    if (seen >= (p / 100) * total) return 2 ** ((b + 0.5) / 16) / 1000
  }
  return NaN
}

const flushRedisDb5 = () => spawnSync('redis-cli', ['-n', '5', 'FLUSHDB'], { encoding: 'utf8' })

for (const backend of ['disk', 'redis'] as const) {
  test.serial(
    `load: ${PEERS} processes × 64 callers for ${RUN_MS / 1000} s on ${backend}, 90 % hits over 100,000 keys`,
    async (t) => {
      if (backend === 'redis') {
        if (!(await reachable(REDIS))) return t.fail(`no Redis at ${REDIS}`)
        flushRedisDb5()
        t.teardown(flushRedisDb5)
      }
      const where = backend === 'disk' ? join(dir, 'cache') : REDIS
      const namespace = uniqueNamespace(`load-${backend}`)
      const peers: Peer[] = []
      t.teardown(() => {
        for (const p of peers) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
      })
      // The first one owns the directory; the others join it.
      for (let i = 0; i < PEERS; i++) {
        const p = spawnPeer(PEER, [backend, where, namespace, String(i)])
        peers.push(p)
        if (i === 0) await p.request({ cmd: 'hello' })
      }
      await Promise.all(peers.slice(1).map((p) => p.request({ cmd: 'hello' })))
      const prefill = await Promise.all(
        peers.map((p) => p.request<Reply & { errors: number }>({ cmd: 'prefill', peers: PEERS })),
      )
      const at = Date.now() + 1000
      const runs = await Promise.all(
        peers.map((p) => p.request<RunReply>({ cmd: 'run', at, ms: RUN_MS, warmUp: WARM_UP_MS })),
      )
      await Promise.all(peers.map((p) => p.request({ cmd: 'exit' })))
      const codes = await Promise.all(peers.map((p) => p.exited))

      const merge = (of: RunReply[]) => {
        const h: number[] = []
        for (const r of of) r.hist.forEach((n, b) => (h[b] = (h[b] ?? 0) + (n ?? 0)))
        return h
      }
      const hist = merge(runs)
      const calls = runs.reduce((n, r) => n + r.calls, 0)
      const seconds = Math.max(...runs.map((r) => r.ms)) / 1000
      const errors =
        runs.reduce((n, r) => n + r.errors + r.storeErrors, 0) +
        prefill.reduce((n, r) => n + r.errors, 0) +
        codes.filter((c) => c !== 0).length
      const hits = runs.reduce((n, r) => n + r.hits, 0)
      const misses = runs.reduce((n, r) => n + r.misses, 0)
      // RSS growth over the last 30 s, the largest of the processes: the peak of the last 30
      // samples (one a second) against the peak of the 30 before. V8's heap rises and falls by
      // 15 % between collections, so two single samples 30 s apart differ by that much either
      // way; a leak raises the peaks.
      const peak = (xs: number[]) => Math.max(...xs)
      const growth = Math.max(...runs.map((r) => (peak(r.rss.slice(-30)) / peak(r.rss.slice(-60, -30)) - 1) * 100))
      const endRss = Math.max(...runs.map((r) => r.rss[r.rss.length - 1]))
      t.log(`${calls} calls in ${seconds.toFixed(1)} s; largest RSS at the end ${(endRss / 2 ** 20).toFixed(0)} MiB`)
      const mib = (b: number | undefined) => ((b ?? 0) / 2 ** 20).toFixed(0)
      for (const [i, r] of runs.entries())
        t.log(
          `peer ${i}: ${r.calls} calls; RSS ${mib(r.rss[0])} at the start, peaks ${mib(peak(r.rss.slice(-60, -30)))} then ${mib(peak(r.rss.slice(-30)))} MiB, ${mib(r.rss[r.rss.length - 1])} at the end; V8 heap + external ${mib(r.heap[0])} / ${mib(peak(r.heap.slice(-60, -30)))} / ${mib(peak(r.heap.slice(-30)))} / ${mib(r.heap[r.heap.length - 1])} MiB`,
        )
      for (const p of peers) if (p.stderr().trim()) t.log(p.stderr().slice(0, 1000))

      const on = `${backend}, ${PEERS} × 64 callers`
      report(t, 'load', `throughput, ${on} (calls/s)`, Math.round(calls / seconds), 'reported', calls > 0)
      const p50 = percentileOf(hist, 50)
      report(t, 'load', `latency p50, ${on} (µs)`, Number(p50.toPrecision(3)), 'reported', p50 > 0)
      const p99 = percentileOf(hist, 99)
      report(t, 'load', `latency p99, ${on} (µs)`, Number(p99.toPrecision(3)), 'reported', p99 > 0)
      const p999 = percentileOf(hist, 99.9)
      report(t, 'load', `latency p999, ${on} (µs)`, Number(p999.toPrecision(3)), 'reported', p999 > 0)
      if (backend === 'disk') {
        // The owner answers hits from memory, a guest over the socket: the guests' calls apart.
        const guests = merge(runs.slice(1))
        const share = (runs[0].calls / calls) * 100
        report(t, 'load', `calls made by the owner, ${on} (%)`, Number(share.toFixed(1)), 'reported', share > 0)
        for (const p of [50, 99]) {
          const v = percentileOf(guests, p)
          report(
            t,
            'load',
            `latency p${p} of the guests' calls, ${on} (µs)`,
            Number(v.toPrecision(3)),
            'reported',
            v > 0,
          )
        }
      }
      const ratio = (hits / (hits + misses)) * 100
      report(t, 'load', `hit ratio, ${on} (%)`, Number(ratio.toFixed(1)), '≈ 90', ratio > 85 && ratio < 95)
      report(t, 'load', `errors, ${on}`, errors, '= 0', errors === 0)
      report(
        t,
        'load',
        `RSS growth over the last 30 s (peak against the 30 s before), ${on} (%)`,
        Number(growth.toFixed(1)),
        '< 10',
        growth < 10,
      )
    },
  )
}
