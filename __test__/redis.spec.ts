import test from 'ava'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { CachetteError, memoize } from '../src-ts/index'
import { sleep, uniqueNamespace } from './helpers/env'
import { startCluster, startRedis, startTlsRedis } from './helpers/servers'
import type { RedisProcess } from './helpers/servers'
import { runFixture } from './fixtures/rpc'

/*
 * The Redis backend against redis-servers this file starts on free loopback ports: one whose
 * KEYS command is disabled (clear() must not need it), stopped and restarted mid-run, with an
 * ACL user; and a 3-master cluster.
 */

let redis: RedisProcess
test.before(async () => {
  redis = await startRedis(['--rename-command', 'KEYS', ''])
})
test.after.always(() => redis?.stop())

const cli = (port: number, ...args: string[]) =>
  spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim()

test.serial(
  'Redis stopped mid-run: with fallback, 0 failed calls, 0 wrong values, and it reconnects by itself',
  async (t) => {
    const f = memoize(async (k: number) => ({ k, v: `value of ${k}` }), {
      backend: 'redis',
      url: redis.url,
      namespace: uniqueNamespace('outage'),
      onBackendError: 'fallback',
    })
    let failed = 0
    let wrong = 0
    let calls = 0
    const round = async () => {
      const ks = Array.from({ length: 20 }, (_, i) => (calls + i) % 50)
      const settled = await Promise.allSettled(ks.map((k) => f(k)))
      calls += ks.length
      settled.forEach((s, i) => {
        if (s.status === 'rejected') failed++
        else if (s.value.k !== ks[i] || s.value.v !== `value of ${ks[i]}`) wrong++
      })
    }
    for (let i = 0; i < 10; i++) await round()
    await redis.shutdown()
    const downUntil = Date.now() + 500
    while (Date.now() < downUntil) await round()
    await redis.restart()
    // The connection comes back without any call from us: calls hit again.
    const end = Date.now() + 10_000
    let back = false
    while (!back && Date.now() < end) {
      await round()
      const before = (await f.stats()).computations
      await f(1)
      back = (await f.stats()).computations === before
    }
    t.true(back, 'the cache never worked again after the restart')
    t.is(failed, 0)
    t.is(wrong, 0)
    t.true((await f.stats()).errors > 0, 'the outage was not counted in stats().errors')
    await f.close()
  },
)

test.serial('ACL user, password and db number come from the URL; the password never appears in errors', async (t) => {
  cli(redis.port, 'ACL', 'SETUSER', 'cachette', 'on', '>s3cret-pw', '~*', '&*', '+@all')
  const namespace = uniqueNamespace('acl')
  let calls = 0
  const f = memoize(async (k: number) => (calls++, k * 2), {
    backend: 'redis',
    url: `redis://cachette:s3cret-pw@127.0.0.1:${redis.port}/3`,
    namespace,
    onBackendError: 'throw',
  })
  t.is(await f(21), 42)
  t.is(await f(21), 42)
  t.is(calls, 1)
  t.true(Number(cli(redis.port, '-n', '3', 'DBSIZE')) > 0, 'nothing was written to db 3')
  const bad = memoize(async (k: number) => k, {
    backend: 'redis',
    url: `redis://cachette:wrong-pw@127.0.0.1:${redis.port}/3`,
    namespace,
    onBackendError: 'throw',
  })
  const e = await t.throwsAsync(bad(1), { instanceOf: CachetteError })
  t.is(e?.code, 'ERR_BACKEND_UNAVAILABLE')
  t.false(e?.message.includes('wrong-pw'), e?.message)
  await f.close()
  await bad.close()
})

test.serial(
  'clear() works with KEYS disabled, removes only its own namespace, and keys carry one hash tag',
  async (t) => {
    const opts = { backend: 'redis' as const, url: redis.url, prefix: 'tagged:' }
    const a = memoize(async (k: number) => k, { ...opts, namespace: uniqueNamespace('clear-a') })
    const b = memoize(async (k: number) => k, { ...opts, namespace: uniqueNamespace('clear-b') })
    for (let i = 0; i < 1200; i++) await Promise.all([a(i), b(i)])
    t.is((await a.stats()).size, 1200)
    const tags = new Set(
      cli(redis.port, '--scan', '--pattern', 'tagged:*')
        .split('\n')
        .map((k) => /^tagged:\{([0-9a-f]{16})\}:/.exec(k)?.[1] ?? `untagged ${k}`),
    )
    t.is(tags.size, 2, [...tags].join(' '))
    await a.clear()
    t.is((await a.stats()).size, 0)
    t.false(await a.has(5))
    t.is((await b.stats()).size, 1200)
    t.true(await b.has(5))
    await a.close()
    await b.close()
  },
)

test.serial('Redis Cluster: one function’s entries and locks live in one slot; every node answers', async (t) => {
  const cluster = await startCluster()
  t.teardown(() => cluster.stop())
  const namespace = uniqueNamespace('cluster')
  let calls = 0
  const f = memoize(async (k: number) => (calls++, { k }), {
    backend: 'redis',
    url: cluster.urls,
    namespace,
    onBackendError: 'throw',
  })
  for (let i = 0; i < 100; i++) t.deepEqual(await f(i), { k: i })
  for (let i = 0; i < 100; i++) t.deepEqual(await f(i), { k: i })
  t.is(calls, 100)
  const perNode = cluster.nodes.map((n) => Number(cli(n.port, 'DBSIZE')))
  t.is(perNode.filter((n) => n > 0).length, 1, `keys spread over nodes: ${perNode.join(', ')}`)
  // Any node as the entry point finds the same entries.
  const viaLast = memoize(async (k: number): Promise<{ k: number }> => t.fail(`recomputed ${k}`), {
    backend: 'redis',
    url: [cluster.urls[2]],
    cluster: true,
    namespace,
    onBackendError: 'throw',
  })
  t.deepEqual(await viaLast(7), { k: 7 })
  await f.clear()
  t.is((await f.stats()).size, 0)
  await f.close()
  await viaLast.close()
})

test.serial('close() lets the process exit by itself', async (t) => {
  // A connection left open would hold the event loop: the child would run until it is killed.
  const fixture = join(__dirname, 'fixtures', 'remote-close.ts')
  const r = await runFixture(fixture, [redis.url, uniqueNamespace('close')], {}, 20_000)
  t.is(r.signal, null, r.stderr)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(JSON.parse(r.stdout), { value: 42 })
})

test.serial('a lease is renewed from Rust while the event loop is blocked', async (t) => {
  const namespace = uniqueNamespace('blocked')
  // A lease of 600 ms, renewed every 200 ms: a loaded 2-core CI machine has delayed a renewal
  // by more than 300 ms.
  const opts = { backend: 'redis' as const, url: redis.url, namespace, lease: 600, onBackendError: 'throw' as const }
  // Another caller of the same key with its own in-process state, as another process would be.
  let otherCalls = 0
  const other = memoize(async (k: number) => (otherCalls++, k), opts)
  let second: Promise<number> | undefined
  const f = memoize(async (k: number) => {
    // Holding the lease: start the other caller, then block this event loop for four leases.
    second = other(k)
    const until = Date.now() + 2400
    while (Date.now() < until) {
      // busy: no JS timer runs; the lease is renewed from Rust
    }
    await sleep(10)
    return k
  }, opts)
  t.is(await f(1), 1)
  t.is(await second, 1)
  t.is(otherCalls, 0, 'the lease expired while the event loop was blocked, and the other caller computed')
  t.is((await other.stats()).waits + (await other.stats()).hits, 1)
  await f.close()
  await other.close()
})

test.serial('rediss:// connects over TLS, verifying the server against the trusted CAs', async (t) => {
  const { server: tls, ca, port } = await startTlsRedis()
  t.teardown(() => tls.stop())
  const url = `rediss://127.0.0.1:${port}`
  const fixture = join(__dirname, 'fixtures', 'remote-close.ts')
  // Trusting the test CA (rustls reads SSL_CERT_FILE), the child computes once and hits once.
  const ok = await runFixture(fixture, [url, uniqueNamespace('tls')], { SSL_CERT_FILE: ca })
  t.is(ok.code, 0, ok.stderr)
  t.is((JSON.parse(ok.stdout) as { value: number }).value, 42)
  // Not trusting it: the handshake fails, and the call rejects with ERR_BACKEND_UNAVAILABLE.
  const f = memoize(async (k: number) => k, {
    backend: 'redis',
    url,
    namespace: uniqueNamespace('tls-untrusted'),
    onBackendError: 'throw',
  })
  const e = await t.throwsAsync(f(1), { instanceOf: CachetteError })
  t.is(e?.code, 'ERR_BACKEND_UNAVAILABLE')
  await f.close()
})

test.serial(
  'worker threads share one connection per server, and a stampede across 4 workers computes once',
  async (t) => {
    const own = await startRedis()
    t.teardown(() => own.stop())
    const namespace = uniqueNamespace('workers')
    const counter = new Int32Array(new SharedArrayBuffer(4))
    const boot = `
    require(${JSON.stringify(require.resolve('tsx/cjs'))})
    const { parentPort, workerData } = require('node:worker_threads')
    const { memoize } = require(${JSON.stringify(join(__dirname, '..', 'src-ts', 'index.ts'))})
    const count = new Int32Array(workerData.counter)
    const f = memoize(async (k) => {
      Atomics.add(count, 0, 1)
      await new Promise((r) => setTimeout(r, 200))
      return { k }
    }, { backend: 'redis', url: workerData.url, namespace: workerData.namespace, onBackendError: 'throw' })
    parentPort.once('message', async () => {
      const values = await Promise.all(Array.from({ length: 8 }, () => f('shared')))
      parentPort.postMessage(values)
      await f.close()
    })`
    const { Worker } = await import('node:worker_threads')
    const workers = Array.from(
      { length: 4 },
      () => new Worker(boot, { eval: true, workerData: { url: own.url, namespace, counter: counter.buffer } }),
    )
    t.teardown(() => Promise.all(workers.map((w) => w.terminate())))
    await sleep(500) // every worker has loaded and memoized
    const replies = workers.map((w) => new Promise<unknown[]>((resolve) => w.once('message', resolve)))
    for (const w of workers) w.postMessage('go')
    const values = (await Promise.all(replies)).flat()
    t.is(values.length, 32)
    for (const v of values) t.deepEqual(v, { k: 'shared' })
    t.is(Atomics.load(counter, 0), 1, 'computed more than once across worker threads')
    // One multiplexed connection and one subscriber for the whole process (and redis-cli's own);
    // each worker's direct connection closed with its function.
    const clients = Number(/connected_clients:(\d+)/.exec(cli(own.port, 'INFO', 'clients'))?.[1])
    t.true(clients <= 3, `${clients} connections to the server`)
  },
)

test.serial('an entry or lease key someone made a list reads as a miss and the next value overwrites it', async (t) => {
  const prefix = `wrongtype-${process.pid}:`
  let calls = 0
  const f = memoize(async (k: number) => (calls++, { k }), {
    backend: 'redis',
    url: redis.url,
    prefix,
    namespace: uniqueNamespace('wrongtype'),
    onBackendError: 'throw',
  })
  t.teardown(() => f.close())
  await f(1)
  const entry = cli(redis.port, '--scan', '--pattern', `${prefix}*:v:*`)
  t.regex(entry, /:v:[0-9a-f]{32}$/)
  const lease = entry.replace(':v:', ':l:')
  for (const k of [entry, lease]) {
    cli(redis.port, 'DEL', k)
    cli(redis.port, 'LPUSH', k, 'not an entry')
  }
  // Once WRONGTYPE on every call, for ever; now a miss that computes and stores its value over it.
  t.deepEqual(await f(1), { k: 1 })
  t.deepEqual(await f(1), { k: 1 })
  t.is(calls, 2)
  t.is(cli(redis.port, 'TYPE', entry), 'string')
})
