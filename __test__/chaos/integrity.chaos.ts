import test from 'ava'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { memoize } from '../../src-ts/index'
import type { MemoizeOptions } from '../../src-ts/index'
import { tempDir } from '../helpers/env'
import {
  alteredPayload,
  digestOf,
  envelopeFor,
  mysql,
  mysqlEntries,
  postgresEntries,
  psql,
  redisEntries,
  resealFor,
  sqliteEntries,
} from '../helpers/raw-entries'
import type { RawEntries, RawEntry } from '../helpers/raw-entries'
import { MYSQL_URL, PG_URL, REDIS_URL, serverAvailable } from '../helpers/servers'
import { count, figure } from './helpers/figures'

/*
 * T25, the MAC half: entries on Redis, PostgreSQL, MariaDB and SQLite, tampered with by a writer
 * of the store who knows everything but the integrityKey (the arguments, hence the digests; the
 * envelope format; CRC32). Each key's entry gets one of six forgeries, every one passing the
 * envelope's own checks: another key's entry resealed for it, its value altered, its expiry
 * moved, an attacker's value with no tag, an attacker's value before the genuine tag, and the
 * same arguments' entry from another namespace. With the key, 100 % are read as misses
 * (recomputed, counted); the same forgeries without the key show what the MAC stops.
 */

const dir = tempDir('chaos-integrity')
const run = randomBytes(3).toString('hex')
const KEYS = count(120, 600)
const KEY = 'chaos integrity key: 32 bytes or more, secret'
const TTL = 3_600_000
let n = 0

/** An attacker's value, as the default serializer stores it (header byte, then msgpack 'evil'). */
const EVIL = Buffer.from([0x05 << 1, 0xa4, ...Buffer.from('evil')])

interface Target {
  name: string
  options(): MemoizeOptions
  raw(o: MemoizeOptions): RawEntries
  drop?(o: MemoizeOptions): void
}

const sqlite = join(dir, 'integrity.sqlite')
const table = () => `chaos_integrity_${run}_${n++}`
const targets: Target[] = []
if (serverAvailable('Redis', REDIS_URL)) {
  targets.push({
    name: 'redis',
    options: () => ({ backend: 'redis', url: REDIS_URL, prefix: `cachette-chaos-integrity-${run}-${n++}:` }),
    raw: (o) => redisEntries(REDIS_URL, o.prefix!),
  })
}
targets.push({
  name: 'sql: sqlite',
  options: () => ({ backend: 'sql', url: `sqlite://${sqlite}`, table: table() }),
  raw: (o) => sqliteEntries(sqlite, o.table!),
})
if (serverAvailable('PostgreSQL', PG_URL)) {
  targets.push({
    name: 'sql: postgres',
    options: () => ({ backend: 'sql', url: PG_URL, table: table() }),
    raw: (o) => postgresEntries(PG_URL, o.table!),
    drop: (o) => psql(PG_URL, `DROP TABLE IF EXISTS ${o.table}, ${o.table}_locks`),
  })
}
if (serverAvailable('MariaDB', MYSQL_URL)) {
  targets.push({
    name: 'sql: mariadb',
    options: () => ({ backend: 'sql', url: MYSQL_URL, table: table() }),
    raw: (o) => mysqlEntries(MYSQL_URL, o.table!),
    drop: (o) => mysql(MYSQL_URL, `DROP TABLE IF EXISTS ${o.table}, ${o.table}_locks`),
  })
}

/** `bytes` with its expiry moved an hour later (an entry stored with a ttl has both times), CRC recomputed. */
function prolonged(bytes: Buffer): Buffer {
  const out = Buffer.from(bytes)
  const at = 12 + ((out[3] & 1) === 1 ? 8 : 0) // after created (and stale_at)
  out.writeBigUInt64BE(out.readBigUInt64BE(at) + 3_600_000n, at)
  out.writeUInt32BE(crc32(out.subarray(0, out.length - 4)), out.length - 4)
  return out
}

/** `bytes` with the attacker's value in place of its own, the genuine tag (its last 32 payload bytes) kept. */
function valueBeforeTag(bytes: Buffer, digest: Buffer, created: number): Buffer {
  const tag = bytes.subarray(bytes.length - 4 - 32, bytes.length - 4)
  return envelopeFor(digest, Buffer.concat([EVIL, tag]), created)
}

const FORGERIES = [
  'another key’s entry resealed',
  'value altered',
  'expiry moved',
  'attacker’s value, no tag',
  'attacker’s value, genuine tag',
  'same arguments from another namespace',
] as const

/**
 * Writes `KEYS` entries through `memoize` (with `integrityKey` or not), forges each in place,
 * then reads them all again: how many calls returned a value the function never computed.
 */
async function tamper(target: Target, integrityKey: string | undefined) {
  const o = target.options()
  const namespace = `chaos-integrity-${run}-${n++}`
  const other = `${namespace}-other`
  let calls = 0
  const real = (k: number) => (calls++, `real ${k}`)
  const opts = { ...o, ttl: TTL, integrityKey } as MemoizeOptions<[number]>
  const f = memoize(real, { ...opts, namespace })
  const g = memoize(real, { ...opts, namespace: other })
  const raw = target.raw(o)
  try {
    for (let k = 0; k < KEYS; k++) await f(k)
    for (let k = 0; k < KEYS; k += FORGERIES.length) await g(k)
    const entries = await raw.list()
    const find = (d: Buffer): RawEntry => entries.find((e) => e.key.equals(d.subarray(0, 16)))!
    const digests = Array.from({ length: KEYS }, (_, k) => digestOf(namespace, [k]))
    const originals = digests.map((d) => find(d).bytes)
    const created = Number(originals[0].readBigUInt64BE(4))
    for (let k = 0; k < KEYS; k++) {
      const d = digests[k]
      const mine = originals[k]
      const forged = [
        () => resealFor(originals[(k + 1) % KEYS], d),
        () => alteredPayload(mine, 1 + (k % 5)),
        () => prolonged(mine),
        () => envelopeFor(d, EVIL, created),
        () => valueBeforeTag(mine, d, created),
        () => resealFor(find(digestOf(other, [k - (k % FORGERIES.length)])).bytes, d),
      ][k % FORGERIES.length]()
      await raw.write(find(d).key, forged)
    }
    const before = calls
    let wrong = 0
    for (let k = 0; k < KEYS; k++) if ((await f(k)) !== `real ${k}`) wrong++
    const errors = (await f.stats()).errors
    return { wrong, recomputed: calls - before, errors }
  } finally {
    await raw.close()
    await Promise.resolve(f.clear()).catch(() => undefined)
    await Promise.resolve(g.clear()).catch(() => undefined)
    await f.close()
    await g.close()
    target.drop?.(o)
  }
}

for (const target of targets) {
  test.serial(
    `T25: ${KEYS} entries forged six ways by a writer without the integrityKey are all read as misses (${target.name})`,
    async (t) => {
      const keyed = await tamper(target, KEY)
      const plain = await tamper(target, undefined)
      const name = target.name
      figure(
        t,
        'T25',
        `${name}: forged entries rejected with integrityKey (${FORGERIES.length} kinds)`,
        `${keyed.recomputed}/${KEYS}`,
        '100 %',
        keyed.recomputed === KEYS && keyed.wrong === 0,
      )
      figure(t, 'T25', `${name}: forged values served with integrityKey`, keyed.wrong, '= 0', keyed.wrong === 0)
      figure(
        t,
        'T25',
        `${name}: rejected entries counted in stats().errors`,
        keyed.errors,
        `≥ ${KEYS}`,
        keyed.errors >= KEYS,
      )
      figure(
        t,
        'T25',
        `${name}: forged values served without integrityKey (what the MAC stops)`,
        `${plain.wrong}/${KEYS}`,
        'reported',
        true,
      )
    },
  )
}
