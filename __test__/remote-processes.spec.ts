import test from 'ava'
import type { ExecutionContext } from 'ava'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir, uniqueNamespace } from './helpers/env'
import { MYSQL_URL, PG_URL, REDIS_URL, serverAvailable, startCluster } from './helpers/servers'
import { spawnPeer } from './fixtures/rpc'
import type { Peer, Reply } from './fixtures/rpc'

/*
 * Calculation locks across processes on every remote store: real Redis (standalone and a
 * 3-master cluster started here), PostgreSQL, MariaDB and a SQLite file. Computations are
 * counted in a file every process appends to.
 */

const dir = tempDir('remote-processes')
const PEER = join(__dirname, 'fixtures', 'remote-peer.ts')
let cluster: Awaited<ReturnType<typeof startCluster>> | undefined

test.before(async () => {
  cluster = await startCluster()
})
test.after.always(() => cluster?.stop())

const targets = (
  [
    ['redis', () => ({ backend: 'redis', url: REDIS_URL, prefix: 'cachette-test:' }), ['Redis', REDIS_URL]],
    ['redis cluster', () => ({ backend: 'redis', url: cluster!.urls })],
    ['postgres', () => ({ backend: 'sql', url: PG_URL }), ['PostgreSQL', PG_URL]],
    ['mariadb', () => ({ backend: 'sql', url: MYSQL_URL }), ['MariaDB', MYSQL_URL]],
    ['sqlite', () => ({ backend: 'sql', url: `sqlite://${join(dir, 'locks.sqlite')}` })],
  ] as [string, () => Record<string, unknown>, [string, string]?][]
).filter(([, , server]) => server === undefined || serverAvailable(...server))

type Settled =
  | { ok: true; value: { key: string; by: number; at: number }; ms: number }
  | {
      ok: false
      name: string
      message: string
      ms: number
    }
type CallReply = Reply & { results: Settled[]; startedAt: number; computations: number; errors: number }

function computations(counterFile: string, key: string): string[] {
  if (!existsSync(counterFile)) return []
  return readFileSync(counterFile, 'utf8')
    .split('\n')
    .filter((l) => l.endsWith(` ${key}`))
    .map((l) => l.split(' ')[0])
}

async function startPeers(t: ExecutionContext, n: number, options: Record<string, unknown>, label: string) {
  const counterFile = join(dir, `${label}.computations`)
  // These tests count computations: on a machine loaded enough to hold an operation past the
  // default backendTimeout (500 ms), a caller would compute on its own, so they allow 5 s.
  const json = JSON.stringify({
    backendTimeout: '5s',
    ...options,
    namespace: uniqueNamespace(label),
    lease: options.lease ?? 2000,
  })
  const peers: Peer[] = Array.from({ length: n }, () => spawnPeer(PEER, [json, counterFile]))
  t.teardown(() => {
    for (const p of peers) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
  })
  await Promise.all(peers.map((p) => p.request({ cmd: 'hello' })))
  return { peers, counterFile }
}

async function stopPeers(t: ExecutionContext, peers: Peer[]) {
  const live = peers.filter((p) => p.child.exitCode === null && p.child.signalCode === null)
  await Promise.all(live.map((p) => p.request({ cmd: 'exit' })))
  for (const p of live) {
    t.is(await p.exited, 0)
    t.notRegex(p.stderr(), /Warning|Error/, `warning or error in the stderr of ${p.child.pid}`)
  }
}

for (const [name, options] of targets) {
  test.serial(
    `4 processes × 16 concurrent callers on one cold key compute exactly once, 20 trials (${name})`,
    async (t) => {
      const { peers, counterFile } = await startPeers(t, 4, options(), `stampede-${name.replace(/ /g, '-')}`)
      let contended = 0
      for (let trial = 0; trial < 20; trial++) {
        const key = `trial-${trial}`
        const at = Date.now() + 100
        const replies = await Promise.all(
          peers.map((p) => p.request<CallReply>({ cmd: 'call', key, ms: 100, callers: 16, at })),
        )
        const counted = computations(counterFile, key)
        t.is(counted.length, 1, `trial ${trial}: computed ${counted.length} times (${counted.join(', ')})`)
        t.is(
          replies.reduce((n, r) => n + r.computations, 0),
          1,
          `trial ${trial}: stats().computations across processes`,
        )
        const results = replies.flatMap((r) => r.results)
        t.is(results.length, 64)
        t.true(
          results.every((r) => r.ok),
          `trial ${trial}: a caller failed: ${JSON.stringify(results.find((r) => !r.ok))}`,
        )
        const first = results[0].ok ? results[0].value : undefined
        t.is(first?.key, key)
        t.is(String(first?.by), counted[0], 'the value does not come from the process that computed it')
        for (const r of results) t.deepEqual(r.ok && r.value, first, `trial ${trial}: callers got different values`)
        t.true(
          replies.every((r) => r.errors === 0),
          'a store operation failed',
        )
        if (replies.every((r) => r.startedAt <= first!.at)) contended++
      }
      t.true(contended >= 10, `only ${contended} of 20 trials had all 4 processes calling during the computation`)
      await stopPeers(t, peers)
    },
  )

  test.serial(
    `a holder killed 200 ms into a 300 ms computation leaves no waiter hung, lease 2 s (${name})`,
    async (t) => {
      const { peers, counterFile } = await startPeers(
        t,
        4,
        { ...options(), lease: 2000 },
        `killed-${name.replace(/ /g, '-')}`,
      )
      const [holder, ...waiters] = peers
      const key = 'killed-holder'
      const held = holder.request<CallReply>({ cmd: 'call', key, ms: 300, callers: 1 }).catch(() => undefined)
      // The holder has started computing once its line is in the counter file.
      const end = Date.now() + 5000
      while (computations(counterFile, key).length === 0) {
        if (Date.now() > end) return t.fail('the holder never started computing')
        await new Promise((r) => setTimeout(r, 5))
      }
      const started = Date.now()
      const waiting = waiters.map((p) => p.request<CallReply>({ cmd: 'call', key, ms: 300, callers: 16 }))
      await new Promise((r) => setTimeout(r, Math.max(0, started + 200 - Date.now())))
      holder.child.kill('SIGKILL')
      t.is(await holder.exited, 'SIGKILL')
      await held
      const replies = await Promise.all(waiting)
      const results = replies.flatMap((r) => r.results)
      t.is(results.length, 48)
      t.true(
        results.every((r) => r.ok),
        `a waiter failed: ${JSON.stringify(results.find((r) => !r.ok))}`,
      )
      const slowest = Math.max(...results.map((r) => r.ms))
      t.log(`figure: slowest waiter after the holder was killed = ${slowest} ms (lease 2000 + compute 300)`)
      // One waiter took over after the lease expired: two computations in all, one value.
      const counted = computations(counterFile, key)
      t.is(counted.length, 2, `computed by ${counted.join(', ')}`)
      const values = results.map((r) => (r.ok ? r.value : undefined))
      for (const v of values) t.deepEqual(v, values[0])
      t.is(String(values[0]?.by), counted[1])
      await stopPeers(t, waiters)
    },
  )

  test.serial(
    `a failure reaches every concurrent waiter unchanged, is not stored, and the next call recomputes (${name})`,
    async (t) => {
      const { peers, counterFile } = await startPeers(t, 4, options(), `throws-${name.replace(/ /g, '-')}`)
      const key = 'fails'
      const at = Date.now() + 100
      const replies = await Promise.all(
        peers.map((p) => p.request<CallReply>({ cmd: 'call', key, ms: 150, callers: 16, at, fail: true })),
      )
      const counted = computations(counterFile, key)
      t.is(counted.length, 1, `computed ${counted.length} times`)
      const results = replies.flatMap((r) => r.results)
      t.is(results.length, 64)
      for (const r of results) {
        t.false(r.ok)
        if (!r.ok) {
          t.is(r.name, 'RangeError')
          t.is(r.message, `${key} failed in ${counted[0]}`)
        }
      }
      const again = await peers[1].request<CallReply>({ cmd: 'call', key, ms: 10, callers: 1, fail: true })
      t.false(again.results[0].ok)
      t.is(computations(counterFile, key).length, 2, 'the failure was cached')
      await stopPeers(t, peers)
    },
  )
}
