import test from 'ava'
import Redis from 'ioredis'
import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { threadId, Worker } from 'node:worker_threads'
import { memoize } from '../src-ts/index'
import { sleep, uniqueNamespace } from './helpers/env'
import { PG_URL, REDIS_URL, startTlsRedis } from './helpers/servers'

/*
 * Direct reads: a hit on a single Redis server or on PostgreSQL is read over the calling
 * thread's own connection (ioredis or pg, named `cachette-direct-<pid>-<thread>` on the server),
 * and whenever that connection cannot answer, the core's connection does, with the same results.
 */

/** The start of the names of this process's direct connections. */
const NAME = `cachette-direct-${process.pid}-`

let redis: Redis
test.before(() => {
  redis = new Redis(REDIS_URL)
})
test.after.always(() => redis?.disconnect())

/** Runs one SQL statement with psql on the test database: its rows, `|`-separated. */
function psql(sql: string): string[] {
  const r = spawnSync('psql', [PG_URL, '-XAtc', sql], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`psql: ${r.stderr}`)
  return r.stdout.split('\n').filter((l) => l !== '')
}

/** This process's direct Redis connections, with their last command. */
async function redisLanes(): Promise<{ id: string; cmd: string; name: string }[]> {
  const list = (await redis.call('CLIENT', 'LIST')) as string
  return list
    .split('\n')
    .map((line) => Object.fromEntries(line.split(' ').map((kv) => kv.split('=') as [string, string])))
    .filter((c) => c.name?.startsWith(NAME))
    .map((c) => ({ id: c.id!, cmd: c.cmd!, name: c.name! }))
}

function counting<T>(value: (k: number) => T) {
  let n = 0
  const fn = async (k: number) => {
    n++
    return value(k)
  }
  return { fn, calls: () => n }
}

test.serial('a Redis hit is a GET on this thread’s own connection; the values are those stored', async (t) => {
  const c = counting((k) => ({ k, at: new Date(k), big: BigInt(k) * 10n ** 20n }))
  const f = memoize(c.fn, { backend: 'redis', url: REDIS_URL, namespace: uniqueNamespace('direct-hit') })
  t.teardown(() => f.close())
  for (let k = 0; k < 20; k++) await f(k)
  // The first call opened the lane in the background; these hits use it.
  await sleep(100)
  for (let k = 0; k < 20; k++) t.deepEqual(await f(k), { k, at: new Date(k), big: BigInt(k) * 10n ** 20n })
  t.is(c.calls(), 20)
  const lanes = await redisLanes()
  t.true(lanes.length >= 1, 'a direct connection is open')
  t.true(
    lanes.some((l) => l.cmd === 'get'),
    JSON.stringify(lanes),
  )
})

test.serial('over rediss://, the direct connection trusts the CA of SSL_CERT_FILE as the core does', async (t) => {
  const { server, ca, port } = await startTlsRedis()
  t.teardown(() => server.stop())
  process.env.SSL_CERT_FILE = ca
  t.teardown(() => delete process.env.SSL_CERT_FILE)
  const c = counting((k) => ({ k }))
  const url = `rediss://127.0.0.1:${port}`
  const f = memoize(c.fn, { backend: 'redis', url, namespace: uniqueNamespace('direct-tls'), onBackendError: 'throw' })
  t.teardown(() => f.close())
  t.deepEqual(await f(1), { k: 1 })
  await sleep(200)
  t.deepEqual(await f(1), { k: 1 })
  t.is(c.calls(), 1)
  const list = spawnSync(
    'redis-cli',
    ['--tls', '--cacert', ca, '-h', '127.0.0.1', '-p', String(port), 'CLIENT', 'LIST'],
    {
      encoding: 'utf8',
    },
  ).stdout
  t.regex(list, new RegExp(`name=${NAME}\\d+ .*cmd=get`))
})

test.serial('directReads: false reads every hit through the core’s connection', async (t) => {
  const own = (await redisLanes()).filter((l) => l.name === NAME + threadId)
  t.deepEqual(own, [], 'no direct connection of this thread is left from an earlier test')
  const c = counting((k) => `v${k}`)
  const f = memoize(c.fn, {
    backend: 'redis',
    url: REDIS_URL,
    namespace: uniqueNamespace('direct-off'),
    directReads: false,
  })
  t.teardown(() => f.close())
  for (let round = 0; round < 3; round++) {
    for (let k = 0; k < 5; k++) t.is(await f(k), `v${k}`)
    await sleep(100)
  }
  t.is(c.calls(), 5)
  t.deepEqual(
    (await redisLanes()).filter((l) => l.name === NAME + threadId),
    [],
  )
  t.throws(() => memoize(c.fn, { backend: 'redis', directReads: 'no' as never }), {
    instanceOf: TypeError,
    message: 'directReads must be a boolean if specified',
  })
  t.throws(() => memoize(c.fn, { directReads: false }), { instanceOf: TypeError })
})

test.serial('64 pipelined Redis hits each get their own value, large ones too', async (t) => {
  const big = (k: number) => `${k}:`.padEnd(k % 8 === 0 ? 300_000 : 40, 'x')
  const c = counting(big)
  const f = memoize(c.fn, { backend: 'redis', url: REDIS_URL, namespace: uniqueNamespace('direct-pipe') })
  t.teardown(() => f.close())
  const ks = Array.from({ length: 64 }, (_, i) => i)
  await Promise.all(ks.map((k) => f(k)))
  await sleep(100)
  for (let round = 0; round < 3; round++) {
    const got = await Promise.all(ks.map((k) => f(k)))
    got.forEach((v, k) => t.is(v, big(k)))
  }
  t.is(c.calls(), 64)
})

test.serial('a killed direct Redis connection: hits go through the core, then the lane reconnects', async (t) => {
  const c = counting((k) => `v${k}`)
  const f = memoize(c.fn, { backend: 'redis', url: REDIS_URL, namespace: uniqueNamespace('direct-kill') })
  t.teardown(() => f.close())
  for (let k = 0; k < 10; k++) await f(k)
  await sleep(100)
  await f(0)
  const before = await redisLanes()
  t.true(before.length >= 1)
  for (const l of before) await redis.call('CLIENT', 'KILL', 'ID', l.id)
  // Every call right after the kill still answers from the cache.
  for (let k = 0; k < 10; k++) t.is(await f(k), `v${k}`)
  t.is(c.calls(), 10)
  const deadline = Date.now() + 5000
  let after: { id: string }[] = []
  while (Date.now() < deadline) {
    await f(1)
    after = (await redisLanes()).filter((l) => !before.some((b) => b.id === l.id))
    if (after.length > 0) break
    await sleep(100)
  }
  t.true(after.length >= 1, 'a new direct connection was opened')
  t.is(c.calls(), 10)
})

test.serial(
  'a Redis hit in flight when close() is called rejects with ERR_CLOSED and the function does not run again',
  async (t) => {
    const c = counting((k) => `v${k}`)
    const f = memoize(c.fn, { backend: 'redis', url: REDIS_URL, namespace: uniqueNamespace('direct-close') })
    t.teardown(() => f.close())
    t.is(await f(1), 'v1')
    // Hits until this thread's direct connection is open (a did-not-hang bound, not a timing).
    const deadline = Date.now() + 5000
    while (!(await redisLanes()).some((l) => l.name === NAME + threadId)) {
      if (Date.now() > deadline) return t.fail('no direct connection of this thread opened')
      t.is(await f(1), 'v1')
      await sleep(20)
    }
    t.is(await f(1), 'v1')
    t.like(await f.stats(), { computations: 1, misses: 1 })
    const hit = f(1) // read over the direct connection
    const closing = f.close()
    await t.throwsAsync(hit, { code: 'ERR_CLOSED' })
    await closing
    t.is(c.calls(), 1, 'the hit cut short by close() computed the value again')
  },
)

/** A worker thread that memoizes `k => 'v' + k` on `options`, calls it for 0..9 twice and reports. */
function worker(options: object): Worker {
  const index = JSON.stringify(join(__dirname, '..', 'src-ts', 'index.ts'))
  const code = `
    require(${JSON.stringify(require.resolve('tsx/cjs'))})
    const { parentPort, workerData } = require('node:worker_threads')
    const { memoize } = require(${index})
    const f = memoize(async (k) => 'v' + k, workerData)
    ;(async () => {
      const first = await Promise.all([...Array(10).keys()].map((k) => f(k)))
      await new Promise((r) => setTimeout(r, 200))
      const second = await Promise.all([...Array(10).keys()].map((k) => f(k)))
      parentPort.postMessage({ first, second, stats: await f.stats() })
      parentPort.on('message', () => {}) // alive until terminated
    })()`
  return new Worker(code, { eval: true, workerData: options })
}

for (const [backend, url] of [
  ['redis', REDIS_URL],
  ['sql', PG_URL],
] as const) {
  test.serial(`each worker thread reads ${url.split(':')[0]} hits on a connection of its own`, async (t) => {
    const namespace = uniqueNamespace(`direct-workers-${backend}`)
    // Computations are counted: operations may take longer than the default 500 ms on a loaded machine.
    const workers = Array.from({ length: 3 }, () => worker({ backend, url, namespace, backendTimeout: '5s' }))
    const ids = workers.map((w) => w.threadId)
    t.teardown(() => Promise.all(workers.map((w) => w.terminate())))
    const reports = (await Promise.all(workers.map((w) => once(w, 'message')))).map(
      ([r]) =>
        r as {
          first: string[]
          second: string[]
          stats: { hits: number; computations: number }
        },
    )
    const expected = [...Array(10).keys()].map((k) => 'v' + k)
    let computations = 0
    for (const r of reports) {
      t.deepEqual(r.first, expected)
      t.deepEqual(r.second, expected)
      t.true(r.stats.hits >= 10)
      computations += r.stats.computations
    }
    t.is(computations, 10, 'each key computed once across the threads')
    const names = backend === 'redis' ? (await redisLanes()).map((l) => l.name) : pgLanes().map((l) => l.name)
    for (const id of ids) t.true(names.includes(NAME + id), `${names.join(',')}: thread ${id}`)
    // A thread that ends closes its connection.
    await Promise.all(workers.map((w) => w.terminate()))
    const deadline = Date.now() + 3000
    let left = ids.length
    while (left > 0 && Date.now() < deadline) {
      await sleep(100)
      const now = backend === 'redis' ? (await redisLanes()).map((l) => l.name) : pgLanes().map((l) => l.name)
      left = ids.filter((id) => now.includes(NAME + id)).length
    }
    t.is(left, 0)
  })
}

/** The direct connections to PostgreSQL: their last statement and whether they use TLS. */
function pgLanes(): { query: string; ssl: boolean; name: string }[] {
  return psql(
    `SELECT s.ssl, a.application_name, a.query FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
     WHERE a.application_name LIKE '${NAME}%'`,
  ).map((line) => {
    const [ssl, name, ...query] = line.split('|')
    return { ssl: ssl === 't', name: name!, query: query.join('|') }
  })
}

for (const [mode, url] of [
  ['the default sslmode', PG_URL],
  ['sslmode=disable', `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}sslmode=disable`],
] as const) {
  test.serial(`a PostgreSQL hit is a prepared SELECT on this thread’s own connection (${mode})`, async (t) => {
    const big = (k: number) => ({ k, s: 'y'.repeat(k === 3 ? 200_000 : 10), m: new Map([[k, new Date(k)]]) })
    const c = counting(big)
    const f = memoize(c.fn, { backend: 'sql', url, namespace: uniqueNamespace('direct-pg') })
    t.teardown(() => f.close())
    for (let k = 0; k < 10; k++) await f(k)
    await sleep(200)
    for (let round = 0; round < 2; round++) {
      const got = await Promise.all(Array.from({ length: 10 }, (_, k) => f(k)))
      got.forEach((v, k) => t.deepEqual(v, big(k)))
    }
    t.is(c.calls(), 10)
    const lanes = pgLanes()
    t.true(
      lanes.some((l) => /^SELECT v FROM/.test(l.query)),
      JSON.stringify(lanes),
    )
    const tls = psql('SHOW ssl')[0] === 'on'
    if (mode === 'sslmode=disable') t.true(lanes.every((l) => !l.ssl))
    else
      t.is(
        lanes.some((l) => l.ssl),
        tls,
        'prefer: TLS when the server offers it',
      )
  })
}

test.serial('a damaged PostgreSQL row read directly is a miss: computed again and overwritten', async (t) => {
  const c = counting((k) => `v${k}`)
  const namespace = uniqueNamespace('direct-pg-damaged')
  // A table of its own: the damage below must reach no other test's rows.
  const f = memoize(c.fn, {
    backend: 'sql',
    url: PG_URL,
    namespace,
    table: 'cachette_direct_test',
    backendTimeout: '5s',
  })
  t.teardown(() => f.close())
  await f(1)
  await sleep(200)
  t.is(await f(1), 'v1')
  t.is(c.calls(), 1)
  // Flip one payload byte of every row of the table: the envelope's checksum no longer holds.
  psql('UPDATE cachette_direct_test SET v = set_byte(v, octet_length(v) / 2, get_byte(v, octet_length(v) / 2) # 1)')
  t.is(await f(1), 'v1')
  t.is(c.calls(), 2)
  t.is(await f(1), 'v1')
  t.is(c.calls(), 2)
})

test.serial('a URL the direct connection cannot decode leaves hits to the core’s pool', async (t) => {
  const u = new URL(PG_URL)
  u.password = 'p%zz' // not valid percent-encoding; trust authentication ignores the password
  const c = counting((k) => `v${k}`)
  const f = memoize(c.fn, { backend: 'sql', url: u.href, namespace: uniqueNamespace('direct-pg-uri') })
  t.teardown(() => f.close())
  t.is(await f(1), 'v1')
  await sleep(100)
  t.is(await f(1), 'v1')
  t.is(c.calls(), 1)
})
