// Scenario 11: what integrityKey costs on a hit of a 1 KiB value: disk, and Redis when it is up,
// each with and without the key in the same run (cases interleaved, as everywhere).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { memoize } from '../dist/index.mjs'
import { compare, loop, pattern, row, scenario } from './harness.mjs'

const KEYS = 1024
const REDIS_URL = process.env.CACHETTE_REDIS_URL ?? 'redis://127.0.0.1:6379'
const SECRET = 'bench integrity key: 32 bytes or more of secret'
const TARGET = 1.05
/** A value that msgpack-encodes to about 1 KiB. */
const value = (k) => ({ id: k, body: 'x'.repeat(1000 - String(k).length) })

async function redisUp() {
  const { Redis } = await import('ioredis')
  const r = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  try {
    await r.connect()
    return (await r.ping()) === 'PONG'
  } catch {
    return false
  } finally {
    r.disconnect()
  }
}

export async function integrityOverhead() {
  const dir = mkdtempSync(join(tmpdir(), 'cachette-bench-mac-'))
  const ids = Array.from({ length: KEYS }, (_, i) => i)
  const keys = pattern(KEYS).map((x) => ids[x])
  const open = [
    memoize(value, { backend: 'disk', path: dir, namespace: 'bench-mac-off' }),
    memoize(value, { backend: 'disk', path: dir, namespace: 'bench-mac-on', integrityKey: SECRET }),
  ]
  const [diskOff, diskOn] = open
  for (const k of ids) (diskOff(k), diskOn(k))
  await Promise.all(open.map((f) => f.flush()))
  const cases = [
    { name: 'diskOff', run: loop('f($k).id', { f: diskOff, keys }) },
    { name: 'diskOn', run: loop('f($k).id', { f: diskOn, keys }) },
  ]
  const redis = await redisUp()
  if (redis) {
    const prefix = `cachette-bench-mac-${process.pid}:`
    const redisOff = memoize(value, { backend: 'redis', url: REDIS_URL, prefix, namespace: 'bench-mac-off' })
    const redisOn = memoize(value, {
      backend: 'redis',
      url: REDIS_URL,
      prefix,
      namespace: 'bench-mac-on',
      integrityKey: SECRET,
    })
    open.push(redisOff, redisOn)
    for (const k of ids) (await redisOff(k), await redisOn(k))
    const a = { async: true }
    cases.push(
      { name: 'redisOff', async: true, run: loop('(await f($k)).id', { f: redisOff, keys }, a) },
      { name: 'redisOn', async: true, run: loop('(await f($k)).id', { f: redisOn, keys }, a) },
    )
  }
  const r = await compare(cases)
  for (const f of open.slice(2)) await f.clear()
  await Promise.all(open.map((f) => f.close()))
  rmSync(dir, { recursive: true, force: true })

  const overhead = (on, off) => ({
    ratio: r[on] / r[off],
    target: `≤ ${TARGET.toFixed(2)}×`,
    pass: r[on] / r[off] <= TARGET,
  })
  const rows = [
    row('disk hit, 1 KiB value', r, 'diskOff'),
    { ...row('disk hit, 1 KiB value, integrityKey', r, 'diskOn'), ...overhead('diskOn', 'diskOff') },
  ]
  const targets = [
    {
      text: 'integrityKey on a 1 KiB disk hit: ≤ 5 % slower',
      pass: r.diskOn / r.diskOff <= TARGET,
      value: r.diskOn / r.diskOff,
    },
  ]
  if (redis) {
    rows.push(row('redis hit, 1 KiB value (direct read)', r, 'redisOff'), {
      ...row('redis hit, 1 KiB value, integrityKey', r, 'redisOn'),
      ...overhead('redisOn', 'redisOff'),
    })
    targets.push({
      text: 'integrityKey on a 1 KiB Redis hit: ≤ 5 % slower',
      pass: r.redisOn / r.redisOff <= TARGET,
      value: r.redisOn / r.redisOff,
    })
  }
  return scenario(
    `11. integrityKey: a hit of a 1 KiB value with and without the MAC (random reads of ${KEYS.toLocaleString('en')} keys)`,
    rows,
    targets,
    [
      'ratio here = with integrityKey ÷ without (the MAC check: keyed BLAKE3 over the entry, on every read)',
      redis
        ? `redis: ${REDIS_URL.replace(/\/\/[^@]*@/, '//')}, one call at a time`
        : 'redis: not reachable, rows skipped',
    ],
  )
}
