// Scenarios 8–10: the redis and sql backends against raw clients on the same servers.
// Latency rows are the median of single sequential calls (each call timed on its own); the
// in-flight row is throughput with 64 calls outstanding at all times.
import { Redis } from 'ioredis'
import pg from 'pg'
import { memoize } from '../dist/index.mjs'
import { consume } from './harness.mjs'

const REDIS_URL = process.env.CACHETTE_REDIS_URL ?? 'redis://127.0.0.1:6379'
const PG_URL = process.env.CACHETTE_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const QUICK = process.env.BENCH_QUICK === '1'
const ROUNDS = QUICK ? 3 : 9
const PER_ROUND = QUICK ? 300 : 1000
const value = (k) => ({ id: k, name: `user ${k}`, tags: ['admin', 'beta'], active: true })

function median(xs) {
  const s = Float64Array.from(xs).sort()
  return s[s.length >> 1]
}

/** Per-call latency of each case, rounds interleaved and rotated; returns `{ name -> p50 ns }` and spreads. */
async function latencies(cases) {
  const all = new Map(cases.map((c) => [c.name, []]))
  const perRound = new Map(cases.map((c) => [c.name, []]))
  for (const c of cases) for (let i = 0; i < 200; i++) consume(await c.run(i)) // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    for (let j = 0; j < cases.length; j++) {
      const c = cases[(j + r) % cases.length]
      const xs = new Array(PER_ROUND)
      for (let i = 0; i < PER_ROUND; i++) {
        const t0 = process.hrtime.bigint()
        consume(await c.run(i))
        xs[i] = Number(process.hrtime.bigint() - t0)
      }
      all.get(c.name).push(...xs)
      perRound.get(c.name).push(median(xs))
    }
  }
  return summarize(all, perRound)
}

/** Throughput with `depth` calls always outstanding: ns per call. */
async function inFlight(cases, depth = 64) {
  const perRound = new Map(cases.map((c) => [c.name, []]))
  const total = PER_ROUND * 5
  const drive = async (c) => {
    let next = 0
    const worker = async () => {
      while (next < total) consume(await c.run(next++))
    }
    const t0 = process.hrtime.bigint()
    await Promise.all(Array.from({ length: depth }, worker))
    return Number(process.hrtime.bigint() - t0) / total
  }
  for (const c of cases) await drive(c) // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    for (let j = 0; j < cases.length; j++) {
      const c = cases[(j + r) % cases.length]
      perRound.get(c.name).push(await drive(c))
    }
  }
  return summarize(perRound, perRound)
}

function summarize(all, perRound) {
  const out = {}
  const spread = {}
  for (const [name, xs] of all) {
    out[name] = median(xs)
    const rs = [...perRound.get(name)].sort((a, b) => a - b)
    const inner = rs.length > 4 ? rs.slice(1, -1) : rs
    spread[name] = (inner[inner.length - 1] - inner[0]) / 2 / median(rs)
  }
  Object.defineProperty(out, 'spread', { value: spread })
  return out
}

const row = (name, r, key, c, extra = {}) => ({
  name,
  ns: r[key],
  spread: r.spread[key],
  ratio: c === undefined ? undefined : c / r[key],
  ...extra,
})

export async function redisScenarios() {
  const namespace = `bench-redis-${process.pid}`
  const opts = { backend: 'redis', url: REDIS_URL, namespace, onBackendError: 'throw' }
  const f = memoize(async (k) => value(k), opts)
  // The same entries read through the core's connection instead of this thread's ioredis client.
  const fCore = memoize(async (k) => value(k), { ...opts, directReads: false })
  const KEYS = 64
  for (let k = 0; k < KEYS; k++) await f(k)
  for (let k = 0; k < KEYS; k++) await fCore(k)
  const plain = new Redis(REDIS_URL)
  const piped = new Redis(REDIS_URL, { enableAutoPipelining: true })
  // The exact keys cachette stored its entries under, read raw.
  const raw = []
  let cursor = '0'
  do {
    const [next, keys] = await plain.scan(cursor, 'MATCH', `cachette:{*}:v:*`, 'COUNT', 1000)
    cursor = next
    for (const k of keys) if ((await plain.getBuffer(k))?.includes(Buffer.from(`user `))) raw.push(k)
  } while (cursor !== '0')
  const own = raw.filter(Boolean).slice(0, KEYS)
  if (own.length === 0) throw new Error('bench: cachette wrote no Redis entry')
  const lat = await latencies([
    { name: 'cachette', run: (i) => f(i % KEYS).then((v) => v.tags.length) },
    { name: 'cachetteCore', run: (i) => fCore(i % KEYS).then((v) => v.tags.length) },
    { name: 'ioredis', run: (i) => plain.getBuffer(own[i % own.length]).then((b) => b.length) },
  ])
  const thr = await inFlight([
    { name: 'cachette', run: (i) => f(i % KEYS).then((v) => v.tags.length) },
    { name: 'cachetteCore', run: (i) => fCore(i % KEYS).then((v) => v.tags.length) },
    { name: 'ioredis', run: (i) => piped.getBuffer(own[i % own.length]).then((b) => b.length) },
  ])
  plain.disconnect()
  piped.disconnect()
  await f.clear()
  await f.close()
  await fCore.close()
  const lr = lat.cachette / lat.ioredis
  const tr = thr.cachette / thr.ioredis
  return [
    {
      title: `8. redis hit, one call at a time (p50 latency), ${REDIS_URL}`,
      rows: [
        row("cachette memoize(fn, { backend: 'redis' }) hit (GET + envelope check + decode)", lat, 'cachette'),
        row('ioredis GET of the same key (raw bytes, no decode)', lat, 'ioredis', lat.cachette, {
          target: '≤ 1.1×',
          pass: lr <= 1.1,
        }),
        row('cachette hit, directReads: false (through the core)', lat, 'cachetteCore'),
        row('ioredis GET, against the directReads: false row', lat, 'ioredis', lat.cachetteCore),
      ],
      targets: [{ text: 'redis hit p50: cachette ≤ 1.1× a raw ioredis GET', pass: lr <= 1.1, value: lr }],
      notes: ['each call timed alone; ns = median over all calls of all rounds'],
    },
    {
      title: '9. redis hits, 64 calls in flight (ns per call = 1 / throughput)',
      rows: [
        row('cachette memoize hit', thr, 'cachette'),
        row('ioredis GET with enableAutoPipelining', thr, 'ioredis', thr.cachette, {
          target: '≤ 1.0× (throughput ≥)',
          pass: tr <= 1.0,
        }),
        row('cachette hit, directReads: false (through the core)', thr, 'cachetteCore'),
        row('ioredis auto-pipelining, against the directReads: false row', thr, 'ioredis', thr.cachetteCore),
      ],
      targets: [
        { text: 'redis throughput, 64 in flight: cachette ≥ ioredis auto-pipelining', pass: tr <= 1.0, value: tr },
      ],
      notes: [],
    },
  ]
}

export async function pgScenario() {
  const namespace = `bench-pg-${process.pid}`
  // Both clients on one transport: pg speaks plain TCP unless told otherwise, so cachette is told
  // so too. Its default (`prefer`: TLS when the server offers it) is a row of its own.
  const plain = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}sslmode=disable`
  const opts = { backend: 'sql', namespace, onBackendError: 'throw' }
  const f = memoize(async (k) => value(k), { ...opts, url: plain })
  const fTls = memoize(async (k) => value(k), { ...opts, url: PG_URL })
  const fCore = memoize(async (k) => value(k), { ...opts, url: plain, directReads: false })
  const KEYS = 64
  await f.peek(0) // creates the table
  const client = new pg.Client({ connectionString: plain })
  await client.connect()
  // The rows cachette writes now are the ones to read raw.
  const id = (r) => `${r.ns.toString('hex')}:${r.k.toString('hex')}`
  const before = new Set((await client.query('SELECT ns, k FROM cachette')).rows.map(id))
  for (let k = 0; k < KEYS; k++) await f(k)
  for (let k = 0; k < KEYS; k++) await fTls(k)
  for (let k = 0; k < KEYS; k++) await fCore(k)
  const own = (await client.query('SELECT ns, k FROM cachette')).rows.filter((r) => !before.has(id(r)))
  const ns = own[0]?.ns
  if (!ns) throw new Error('bench: cachette wrote no PostgreSQL row')
  const sel = { name: 'sel', text: 'SELECT v FROM cachette WHERE ns = $1 AND k = $2' }
  const lat = await latencies([
    { name: 'cachette', run: (i) => f(i % KEYS).then((v) => v.tags.length) },
    { name: 'cachetteTls', run: (i) => fTls(i % KEYS).then((v) => v.tags.length) },
    { name: 'cachetteCore', run: (i) => fCore(i % KEYS).then((v) => v.tags.length) },
    {
      name: 'pg',
      run: (i) => client.query({ ...sel, values: [ns, own[i % own.length].k] }).then((r) => r.rows[0].v.length),
    },
  ])
  await client.end()
  await f.clear()
  await f.close()
  await fTls.close()
  await fCore.close()
  const ratio = lat.cachette / lat.pg
  return {
    title: `10. postgres hit, one call at a time (p50 latency)`,
    rows: [
      row("cachette memoize(fn, { backend: 'sql', url: 'postgres://…' }) hit + decode", lat, 'cachette'),
      row('pg prepared SELECT of the same row (raw bytes, no decode)', lat, 'pg', lat.cachette, {
        target: '≤ 1.2×',
        pass: ratio <= 1.2,
      }),
      row('cachette hit, default sslmode (prefer: TLS if offered)', lat, 'cachetteTls'),
      row('cachette hit, directReads: false (through the core)', lat, 'cachetteCore'),
      row('pg SELECT, against the directReads: false row', lat, 'pg', lat.cachetteCore),
    ],
    targets: [{ text: 'postgres hit p50: cachette ≤ 1.2× a raw pg SELECT', pass: ratio <= 1.2, value: ratio }],
    notes: [
      "both rows compared connect with sslmode=disable (pg's default transport); hits are read on the calling thread's own pg connection",
    ],
  }
}
