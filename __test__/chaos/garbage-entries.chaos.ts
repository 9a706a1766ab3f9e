import test from 'ava'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import Redis from 'ioredis'
import { memoize } from '../../src-ts/index'
import { tempDir, uniqueNamespace } from '../helpers/env'
import { MYSQL_URL, PG_URL, REDIS_URL, serverAvailable } from '../helpers/servers'
import { count, figure } from './helpers/figures'

/** What these tests use of pg (a devDependency without types). */
interface PgClient {
  connect(): Promise<void>
  query(sql: string, values?: unknown[]): Promise<{ rows: Record<string, unknown>[] }>
  end(): Promise<void>
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { Client } = require('pg') as { Client: new (o: { connectionString: string }) => PgClient }

/*
 * T16(b): garbage where the Redis and SQL stores read their entries. A memoized function stores
 * 10,000 entries; then every stored envelope is replaced, in place on the server, by one of seven
 * kinds of garbage: random bytes, a truncated envelope, another format version, another key's
 * digest check, another key's whole entry, a flipped payload bit, and a well-formed envelope
 * whose payload does not decode (the last four with a valid checksum where that applies).
 * Every one must read as a miss (the function computes it again, with onBackendError 'throw',
 * so nothing may escape), and the value computed must be stored over the garbage (the next pass
 * hits all of them).
 */

const N = count(10_000, 10_000)
const BATCH = 100
const dir = tempDir('t16b')

/** The envelope layout of crates/cachette-core/src/envelope.rs, as far as garbage needs it. */
function headerLen(env: Buffer): number {
  const flags = env[3] ?? 0
  return 12 + 8 * ((flags & 1) + ((flags >> 1) & 1)) + 16
}

/** `env` with its trailing CRC-32 recomputed (so only the check the change aims at fails). */
function resealed(env: Buffer): Buffer {
  const out = Buffer.from(env)
  out.writeUInt32BE(crc32(out.subarray(0, out.length - 4)) >>> 0, out.length - 4)
  return out
}

const KINDS = [
  'random bytes',
  'truncated',
  'wrong version',
  'wrong digest check',
  "another key's entry",
  'flipped payload bit',
  'undecodable payload',
] as const

/** Garbage of kind `i % KINDS.length` in place of `env`; `other` is another key's envelope. */
function garbage(i: number, env: Buffer, other: Buffer): Buffer {
  const kind = KINDS[i % KINDS.length]
  const h = headerLen(env)
  switch (kind) {
    case 'random bytes':
      return randomBytes(i % 300)
    case 'truncated':
      return env.subarray(0, i % env.length)
    case 'wrong version': {
      const e = Buffer.from(env)
      e[2] = e[2] === 2 ? 3 : 2
      return resealed(e)
    }
    case 'wrong digest check': {
      const e = Buffer.from(env)
      e[h - 16 + (i % 16)] ^= 0x01
      return resealed(e)
    }
    case "another key's entry":
      return other
    case 'flipped payload bit': {
      const e = Buffer.from(env)
      e[h + ((i >> 3) % Math.max(1, e.length - h - 4))] ^= 1 << (i % 8)
      return e
    }
    case 'undecodable payload': {
      // 0xc1 is never used by msgpack: the core accepts the entry, the serializer cannot read it.
      const e = Buffer.concat([env.subarray(0, h), Buffer.from([0xc1, 0xc1, 0xc1]), Buffer.alloc(4)])
      return resealed(e)
    }
  }
}

/** Replaces every envelope of `rows` (raw bytes by row id) by garbage; returns the new values. */
function spoil<K>(rows: [K, Buffer][]): [K, Buffer][] {
  return rows.map(([id, env], i) => [id, garbage(i, env, rows[(i + 1) % rows.length][1])])
}

interface Raw {
  /** Every envelope stored, with how to name its row. */
  spoil(): Promise<number>
  close(): Promise<void>
}

function redisRaw(url: string, prefix: string): Raw {
  const r = new Redis(url)
  return {
    async spoil() {
      const keys: string[] = []
      let cursor = '0'
      do {
        const [next, found] = await r.scan(cursor, 'MATCH', `${prefix}*:v:*`, 'COUNT', 1000)
        cursor = next
        keys.push(...found)
      } while (cursor !== '0')
      const values = await r.mgetBuffer(...keys)
      const spoilt = spoil(keys.map((k, i) => [k, values[i]!] as [string, Buffer]))
      const p = r.pipeline()
      for (const [k, v] of spoilt) p.set(k, v)
      await p.exec()
      return spoilt.length
    },
    async close() {
      r.disconnect()
    },
  }
}

function pgRaw(url: string, table: string): Raw {
  const c = new Client({ connectionString: url })
  const connected = c.connect()
  return {
    async spoil() {
      await connected
      const rows = (await c.query(`SELECT k, v FROM ${table}`)).rows as { k: Buffer; v: Buffer }[]
      const spoilt = spoil(rows.map((r) => [r.k, r.v] as [Buffer, Buffer]))
      await c.query(
        `UPDATE ${table} SET v = d.v FROM unnest($1::bytea[], $2::bytea[]) AS d(k, v) WHERE ${table}.k = d.k`,
        [spoilt.map(([k]) => k), spoilt.map(([, v]) => v)],
      )
      return spoilt.length
    },
    async close() {
      await c.query(`DROP TABLE IF EXISTS ${table}, ${table}_locks`).catch(() => undefined)
      await c.end()
    },
  }
}

function mysql(url: string, sql: string): string {
  const u = new URL(url)
  const args = ['-h', u.hostname, '-P', u.port || '3306', '-u', decodeURIComponent(u.username), '-N', '-B']
  if (u.password) args.push(`-p${decodeURIComponent(u.password)}`)
  const r = spawnSync('mysql', [...args, u.pathname.slice(1)], { input: sql, encoding: 'utf8', maxBuffer: 1 << 28 })
  if (r.status !== 0) throw new Error(`mysql: ${r.stderr}`)
  return r.stdout
}

function mysqlRaw(url: string, table: string): Raw {
  return {
    async spoil() {
      const rows = mysql(url, `SELECT HEX(ns), HEX(k), HEX(v), expires_at FROM ${table}`)
        .trim()
        .split('\n')
        .map((l) => l.split('\t'))
      const spoilt = spoil(rows.map(([ns, k, v, exp]) => [[ns, k, exp], Buffer.from(v, 'hex')] as [string[], Buffer]))
      const values = spoilt.map(([[ns, k, exp], v]) => `(X'${ns}', X'${k}', X'${v.toString('hex')}', ${exp})`)
      const stmts = []
      for (let i = 0; i < values.length; i += 1000) {
        stmts.push(
          `INSERT INTO ${table} (ns, k, v, expires_at) VALUES ${values.slice(i, i + 1000).join(',')} ON DUPLICATE KEY UPDATE v = VALUES(v);`,
        )
      }
      mysql(url, stmts.join('\n'))
      return spoilt.length
    },
    async close() {
      mysql(url, `DROP TABLE IF EXISTS ${table}, ${table}_locks`)
    },
  }
}

function sqliteRaw(file: string, table: string): Raw {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Database = require('better-sqlite3') as new (f: string) => {
    prepare(sql: string): { all(): { k: Buffer; v: Buffer }[]; run(...a: unknown[]): void }
    transaction(f: () => void): () => void
    close(): void
  }
  const db = new Database(file)
  return {
    async spoil() {
      const rows = db.prepare(`SELECT k, v FROM ${table}`).all()
      const spoilt = spoil(rows.map((r) => [r.k, r.v] as [Buffer, Buffer]))
      const update = db.prepare(`UPDATE ${table} SET v = ? WHERE k = ?`)
      db.transaction(() => spoilt.forEach(([k, v]) => update.run(v, k)))()
      return spoilt.length
    },
    async close() {
      db.close()
    },
  }
}

const table = `t16_${process.pid}`
const prefix = `t16-${process.pid}:`
const sqlite = join(dir, 'garbage.sqlite')
const stores: [string, () => boolean, object, () => Raw][] = [
  [
    'Redis',
    () => serverAvailable('Redis', REDIS_URL),
    { backend: 'redis', url: REDIS_URL, prefix },
    () => redisRaw(REDIS_URL, prefix),
  ],
  [
    'PostgreSQL',
    () => serverAvailable('PostgreSQL', PG_URL),
    { backend: 'sql', url: PG_URL, table },
    () => pgRaw(PG_URL, table),
  ],
  [
    'MariaDB',
    () => serverAvailable('MariaDB', MYSQL_URL),
    { backend: 'sql', url: MYSQL_URL, table },
    () => mysqlRaw(MYSQL_URL, table),
  ],
  ['SQLite', () => true, { backend: 'sql', url: `sqlite://${sqlite}`, table }, () => sqliteRaw(sqlite, table)],
]

for (const [name, available, options, open] of stores) {
  if (!available()) continue
  test.serial(
    `T16b ${name}: ${N} garbage entries read as misses, nothing escapes, and the values computed replace them`,
    async (t) => {
      let calls = 0
      const f = memoize(async (i: number) => (calls++, { i, s: `value of ${i}` }), {
        ...options,
        namespace: uniqueNamespace(`t16b-${name}`),
        onBackendError: 'throw',
        // Garbage is this test's business, not timeouts: generous, for a loaded machine.
        backendTimeout: '5s',
      } as Parameters<typeof memoize>[1])
      const raw = open()
      t.teardown(async () => {
        await Promise.resolve(f.clear()).catch(() => undefined)
        await f.close()
        await raw.close()
      })
      /** Calls every key, BATCH at a time: how many threw, and how many returned another value. */
      const pass = async () => {
        let thrown = 0
        let wrong = 0
        for (let i = 0; i < N; i += BATCH) {
          const ks = Array.from({ length: Math.min(BATCH, N - i) }, (_, j) => i + j)
          const settled = await Promise.allSettled(ks.map((k) => f(k)))
          settled.forEach((s, j) => {
            if (s.status === 'rejected') thrown++
            else if (s.value.i !== ks[j] || s.value.s !== `value of ${ks[j]}`) wrong++
          })
        }
        return { thrown, wrong }
      }
      await f.clear()
      await pass()
      t.is(calls, N)
      const spoilt = await raw.spoil()
      t.is(spoilt, N, 'every entry stored was replaced by garbage')
      calls = 0
      const second = await pass()
      figure(t, 'T16', `${name}: garbage entries read as misses`, `${calls}/${N}`, `${N}/${N}`, calls === N)
      figure(t, 'T16', `${name}: exceptions escaping ('throw')`, second.thrown, '= 0', second.thrown === 0)
      figure(t, 'T16', `${name}: wrong values`, second.wrong, '= 0', second.wrong === 0)
      calls = 0
      const third = await pass()
      figure(
        t,
        'T16',
        `${name}: garbage replaced by the values computed (hits on the next pass)`,
        `${N - calls}/${N}`,
        `${N}/${N}`,
        calls === 0 && third.thrown === 0 && third.wrong === 0,
      )
    },
  )
}
