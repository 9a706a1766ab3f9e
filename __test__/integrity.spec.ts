import test from 'ava'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { memoize } from '../src-ts/index'
import type { MemoizeOptions } from '../src-ts/index'
import { tempDir, uniqueNamespace } from './helpers/env'
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
} from './helpers/raw-entries'
import type { RawEntries } from './helpers/raw-entries'
import { MYSQL_URL, PG_URL, REDIS_URL, serverAvailable } from './helpers/servers'
import { track } from './helpers/store-suite'

/*
 * integrityKey on every persistent backend: entries written with the key carry its MAC; an
 * entry written without it, with another key, altered, or copied from another key (its envelope
 * checks made to match) reads as a miss, is counted in stats().errors, and the computed value
 * replaces it.
 */

const dir = tempDir('integrity')
const run = randomBytes(3).toString('hex')
const KEY = 'the integrity key of these tests, 32+ bytes'
const OTHER_KEY = Buffer.alloc(32, 7)
let n = 0

interface Target {
  name: string
  /** Options of one test's caches: a prefix or table of its own, so its raw entries are its own. */
  options(): MemoizeOptions
  /** Raw access to what `options` stores (remote backends). */
  raw?(o: MemoizeOptions): RawEntries
  /** Drops what `options` created on the server. */
  drop?(o: MemoizeOptions): Promise<void>
}

const sqlite = join(dir, 'integrity.sqlite')
const table = () => `integrity_${run}_${n++}`

async function dropPg(o: MemoizeOptions): Promise<void> {
  psql(PG_URL, `DROP TABLE IF EXISTS ${o.table}, ${o.table}_locks`)
}

async function dropMysql(o: MemoizeOptions): Promise<void> {
  mysql(MYSQL_URL, `DROP TABLE IF EXISTS ${o.table}, ${o.table}_locks`)
}

const targets: Target[] = [{ name: 'disk', options: () => ({ backend: 'disk', path: dir }) }]
if (serverAvailable('Redis', REDIS_URL)) {
  targets.push({
    name: 'redis',
    options: () => ({ backend: 'redis', url: REDIS_URL, prefix: `cachette-integrity-${run}-${n++}:` }),
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
    drop: dropPg,
  })
}
if (serverAvailable('MariaDB', MYSQL_URL)) {
  targets.push({
    name: 'sql: mariadb',
    options: () => ({ backend: 'sql', url: MYSQL_URL, table: table() }),
    raw: (o) => mysqlEntries(MYSQL_URL, o.table!),
    drop: dropMysql,
  })
}

/** A memoized `fn` with options `o`, cleared and closed after the test. */
function cached<F extends (k: string) => string>(
  t: { teardown(f: () => Promise<void>): void },
  fn: F,
  o: MemoizeOptions,
) {
  const f = memoize(fn, o as MemoizeOptions<[string]>)
  track(f)
  t.teardown(async () => {
    await Promise.resolve(f.clear()).catch(() => undefined)
    await f.close()
  })
  return f
}

for (const target of targets) {
  test(`integrityKey: entries written without the key or with another key read as counted misses, and the computed value replaces them (${target.name})`, async (t) => {
    const o = { ...target.options(), namespace: uniqueNamespace('integrity') }
    if (target.drop) t.teardown(() => target.drop!(o))
    let calls = 0
    const keyed = cached(t, (k: string) => (calls++, `real ${k}`), { ...o, integrityKey: KEY })
    const unkeyed = cached(t, (k: string) => `unkeyed ${k}`, o)
    const forger = cached(t, (k: string) => `forged ${k}`, { ...o, integrityKey: OTHER_KEY })
    t.is(await unkeyed('a'), 'unkeyed a')
    t.is(await forger('b'), 'forged b')
    t.is(await keyed('a'), 'real a')
    t.is(await keyed('b'), 'real b')
    t.is(calls, 2)
    const errors = (await keyed.stats()).errors
    t.true(errors >= 2, 'the rejected entries are counted')
    // The computed values replaced them: hits now, under the key, and nothing more is counted.
    t.is(await keyed('a'), 'real a')
    t.is(await keyed('b'), 'real b')
    t.is(calls, 2)
    t.is((await keyed.stats()).errors, errors)
    // A reader with another key rejects them in turn, and never sees their bytes as a value.
    t.is(await forger('a'), 'forged a')
  })

  if (target.raw === undefined) continue

  test(`integrityKey: an entry altered or copied from another key, with its envelope checks made to match, reads as a counted miss (${target.name})`, async (t) => {
    const namespace = uniqueNamespace('integrity-raw')
    const o = { ...target.options(), namespace }
    if (target.drop) t.teardown(() => target.drop!(o))
    let calls = 0
    const keyed = cached(t, (k: string) => (calls++, `real ${k}`), { ...o, integrityKey: KEY })
    for (const k of ['a', 'b', 'c']) await keyed(k)
    const raw = target.raw!(o)
    t.teardown(() => raw.close())
    const entries = await raw.list()
    t.is(entries.length, 3)
    const [a, b, c] = ['a', 'b', 'c'].map((k) => {
      const digest = digestOf(namespace, [k])
      return { digest, entry: entries.find((e) => e.key.equals(digest.subarray(0, 16)))! }
    })
    // a's entry under b (check and CRC rewritten); a's value byte changed; c replaced by an unkeyed envelope.
    await raw.write(b.entry.key, resealFor(a.entry.bytes, b.digest))
    await raw.write(a.entry.key, alteredPayload(a.entry.bytes, 2))
    await raw.write(c.entry.key, envelopeFor(c.digest, Buffer.from([0x05 << 1, 0xa6, ...Buffer.from('forged')])))
    t.is(await keyed('b'), 'real b')
    t.is(await keyed('a'), 'real a')
    t.is(await keyed('c'), 'real c')
    t.is(calls, 6)
    t.true((await keyed.stats()).errors >= 3)
  })
}
