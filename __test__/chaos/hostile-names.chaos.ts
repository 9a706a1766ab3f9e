import test from 'ava'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import Redis from 'ioredis'
import { memoize } from '../../src-ts/index'
import type { MemoizeOptions } from '../../src-ts/index'
import { openRemote } from '../../src-ts/native'
import { tempDir } from '../helpers/env'
import { MYSQL_URL, PG_URL, REDIS_URL, serverAvailable } from '../helpers/servers'
import { figure } from './helpers/figures'

/** What these tests use of pg (a devDependency without types). */
interface PgClient {
  connect(): Promise<void>
  query(sql: string, values?: unknown[]): Promise<{ rows: Record<string, unknown>[] }>
  end(): Promise<void>
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { Client } = require('pg') as { Client: new (o: { connectionString: string }) => PgClient }

/*
 * T25: 100 hostile names — quotes, `;`, `--`, comments, NUL, control and glob characters, Unicode
 * (combining forms, right-to-left marks, emoji), over-long — as SQL table names, Redis key
 * prefixes and namespaces, on PostgreSQL, MariaDB, SQLite and Redis. A table name is either a
 * plain identifier (SQL keywords included: they are quoted) or refused before any statement,
 * by memoize() (TypeError) and by the core (ERR_INVALID_OPTION); no table appears or goes but
 * those expected. A prefix with a Cluster hash-tag brace is refused, and so is one with a lone
 * surrogate (written as U+FFFD, two prefixes differing only there shared keys); any other is key
 * bytes, every key written starts with one, and clear() of one never touches another's. A
 * namespace is hashed: 100 hostile namespaces, lone surrogates among them, never share an entry.
 */

const FRAGMENTS = [
  '\uD800',
  '\uDFFF',
  '\uFFFD',
  '"',
  "'",
  '`',
  ';',
  '--',
  '/*',
  '*/',
  '\u0000',
  '\\',
  '\n',
  '\r\n',
  '\t',
  ' ',
  '%',
  '_%',
  '?',
  '$1',
  ':n',
  '@v',
  '{',
  '}',
  '{x}',
  '(',
  ')',
  ',',
  '=',
  '.',
  '*',
  '[a-z]',
  'é',
  'e\u0301',
  'ß',
  '表',
  '😀',
  '\u202e',
  '\ufeff',
  '\u00a0',
  "'; DROP TABLE cachette; --",
  '" OR 1=1 --',
  '`; DELETE FROM cachette_locks; #',
  "'||pg_sleep(5)||'",
  '\u0000; DROP',
]
/** Valid identifiers that are unusual: SQL keywords, the longest allowed, a lone underscore. */
const PLAIN = ['select', 'user', 'order', 'group', 'table', 'where', 'limit', '_', '_1', 'a'.repeat(48), 'Z9_']

/** 100 names: the plain ones, over-long ones, then each fragment ending and inside a short name. */
function hostileNames(): string[] {
  const names = new Set<string>(PLAIN)
  for (const n of [49, 64, 65, 100, 300]) names.add('n'.repeat(n))
  names.add('表'.repeat(22)) // 66 bytes
  names.add('😀'.repeat(17)) // 68 bytes
  for (const f of FRAGMENTS) {
    names.add(`t25${f}`)
    names.add(`t${f}x`)
  }
  return [...names].slice(0, 100)
}
const NAMES = hostileNames()
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/
const dir = tempDir('t25')

function mysqlCli(url: string, sql: string): string {
  const u = new URL(url)
  const args = ['-h', u.hostname, '-P', u.port || '3306', '-u', decodeURIComponent(u.username), '-N', '-B']
  const r = spawnSync('mysql', [...args, u.pathname.slice(1)], { input: sql, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`mysql: ${r.stderr}`)
  return r.stdout
}

interface Db {
  tables(): Promise<string[]>
  drop(table: string): Promise<void>
  close(): Promise<void>
}

const sqlite = join(dir, 'names.sqlite')
const databases: [string, string, () => Db][] = [
  [
    'PostgreSQL',
    PG_URL,
    () => {
      const c = new Client({ connectionString: PG_URL })
      const up = c.connect()
      return {
        async tables() {
          await up
          const r = await c.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
          return r.rows.map((row) => String(row.tablename))
        },
        drop: async (t) => void (await c.query(`DROP TABLE IF EXISTS "${t}", "${t}_locks"`)),
        close: () => c.end(),
      }
    },
  ],
  [
    'MariaDB',
    MYSQL_URL,
    () => ({
      tables: async () => mysqlCli(MYSQL_URL, 'SHOW TABLES').split('\n').filter(Boolean),
      drop: async (t) => void mysqlCli(MYSQL_URL, `DROP TABLE IF EXISTS \`${t}\`, \`${t}_locks\``),
      close: async () => undefined,
    }),
  ],
  [
    'SQLite',
    `sqlite://${sqlite}`,
    () => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const Database = require('better-sqlite3') as new (f: string) => {
        prepare(s: string): { all(): { name: string }[] }
        exec(s: string): void
        close(): void
      }
      const db = new Database(sqlite)
      return {
        tables: async () =>
          db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .all()
            .map((r) => r.name),
        drop: async (t) => db.exec(`DROP TABLE IF EXISTS "${t}"; DROP TABLE IF EXISTS "${t}_locks"`),
        close: async () => db.close(),
      }
    },
  ],
]

/** Whether `f` threw a TypeError (at memoize() time) whose message names the rule. */
function refusedAtMemoize(options: MemoizeOptions): boolean {
  try {
    memoize(async (k: number) => k, options)
  } catch (e) {
    return e instanceof TypeError
  }
  return false
}

/** Whether the core itself refuses `prefix` (the table) with ERR_INVALID_OPTION, before any statement. */
function refusedByCore(url: string, prefix: string): boolean {
  try {
    openRemote([url], false, prefix, 't25', 5000).close()
  } catch (e) {
    return (e as { code?: string }).code === 'ERR_INVALID_OPTION'
  }
  return false
}

/** 100 functions, one per hostile namespace, on one store: how many answered another's value. */
async function sharedEntries(options: MemoizeOptions): Promise<{ shared: number; computed: number }> {
  let computed = 0
  const fs = NAMES.map((namespace, i) =>
    memoize(async (k: number) => (computed++, { i, k }), { ...options, namespace, onBackendError: 'throw' }),
  )
  let shared = 0
  for (let round = 0; round < 2; round++) {
    const got = await Promise.all(fs.map((f) => f(1)))
    shared += got.filter((v, i) => v.i !== i).length
  }
  for (const f of fs) await f.clear()
  await Promise.all(fs.map((f) => f.close()))
  return { shared, computed }
}

for (const [name, url, open] of databases) {
  if (!url.startsWith('sqlite') && !serverAvailable(name, url)) continue
  test.serial(
    `T25 ${name}: 100 hostile table names refused before any DDL, 100 hostile namespaces kept apart`,
    async (t) => {
      const db = open()
      t.teardown(() => db.close())
      const base = { backend: 'sql' as const, url, backendTimeout: '5s' as const }
      const before = new Set(await db.tables())
      const hostile = NAMES.filter((n) => !IDENTIFIER.test(n))
      const refused = hostile.filter((table) => refusedAtMemoize({ ...base, table, namespace: 'x' }))
      const coreRefused = hostile.filter((table) => refusedByCore(url, table))
      figure(
        t,
        'T25',
        `${name}: hostile table names refused by memoize() (TypeError)`,
        `${refused.length}/${hostile.length}`,
        'all',
        refused.length === hostile.length,
      )
      figure(
        t,
        'T25',
        `${name}: the same refused by the core (ERR_INVALID_OPTION)`,
        `${coreRefused.length}/${hostile.length}`,
        'all',
        coreRefused.length === hostile.length,
      )
      // Plain identifiers, SQL keywords among them, are quoted: each makes its two tables and works.
      const plain = NAMES.filter((n) => IDENTIFIER.test(n))
      let working = 0
      for (const table of plain) {
        const f = memoize(async (k: number) => ({ k, table }), {
          ...base,
          table,
          namespace: `t25-${table}`,
          onBackendError: 'throw',
        })
        if ((await f(1)).table === table && (await f(1)).table === table) working++
        await f.close()
      }
      figure(
        t,
        'T25',
        `${name}: plain identifiers and SQL keywords as table names working`,
        `${working}/${plain.length}`,
        'all',
        working === plain.length,
      )
      const table = `t25_${process.pid}`
      const { shared, computed } = await sharedEntries({ ...base, table })
      figure(
        t,
        'T25',
        `${name}: entries shared by 100 hostile namespaces`,
        shared,
        `= 0 (${computed} computed of 100)`,
        shared === 0 && computed === 100,
      )
      const expected = new Set([...plain, table].flatMap((n) => [n, `${n}_locks`]))
      const after = new Set(await db.tables())
      const stray = [...after].filter((x) => !before.has(x) && !expected.has(x))
      const gone = [...before].filter((x) => !after.has(x))
      figure(
        t,
        'T25',
        `${name}: tables created or dropped beyond the expected`,
        stray.length + gone.length,
        '= 0',
        stray.length + gone.length === 0,
      )
      if (stray.length + gone.length > 0) t.log(`created ${JSON.stringify(stray)}, dropped ${JSON.stringify(gone)}`)
      for (const n of [...plain, table]) if (!before.has(n)) await db.drop(n)
    },
  )
}

if (serverAvailable('Redis', REDIS_URL)) {
  test.serial(
    'T25 Redis: 100 hostile prefixes refused or confined to their own keys, 100 hostile namespaces kept apart',
    async (t) => {
      const redis = new Redis(REDIS_URL)
      t.teardown(() => redis.disconnect())
      const refused = NAMES.filter((prefix) =>
        refusedAtMemoize({ backend: 'redis', url: REDIS_URL, prefix, namespace: 'x' }),
      )
      // A hash-tag brace, or a lone surrogate (it would be written as U+FFFD).
      const braces = NAMES.filter((n) => /[{}]/.test(n) || LONE_SURROGATE.test(n))
      figure(
        t,
        'T25',
        'Redis: prefixes with a hash-tag brace or a lone surrogate refused (TypeError)',
        `${refused.length}/${braces.length}`,
        `all ${braces.length}, no other`,
        refused.length === braces.length && refused.every((n) => braces.includes(n)),
      )
      // Every other prefix holds its own function's entries, under keys that start with it.
      const accepted = NAMES.filter((n) => !braces.includes(n)).map((n) => `t25:${process.pid}:${n}`)
      const fs = accepted.map((prefix, i) =>
        memoize(async (k: number) => ({ i, k }), {
          backend: 'redis',
          url: REDIS_URL,
          prefix,
          namespace: 't25-same',
          onBackendError: 'throw',
          backendTimeout: '5s',
        }),
      )
      const first = await Promise.all(fs.map((f) => f(1)))
      const again = await Promise.all(fs.map((f) => f(1)))
      const crossed = [...first, ...again].filter((v, j) => v.i !== j % fs.length).length
      const keys = (await redis.keysBuffer(`t25:${process.pid}:*`)).map((k) => k.toString('utf8'))
      const stray = keys.filter((k) => !accepted.some((p) => k.startsWith(`${p}{`)))
      figure(t, 'T25', 'Redis: entries crossing between hostile prefixes', crossed, '= 0', crossed === 0)
      figure(t, 'T25', `Redis: keys outside their prefix (of ${keys.length})`, stray.length, '= 0', stray.length === 0)
      // clear() of one (a prefix with glob characters among them) leaves every other's entries.
      const globby = accepted.findIndex((p) => p.endsWith('*'))
      await fs[globby].clear()
      const kept = (await Promise.all(fs.map((f, j) => (j === globby ? true : f.has(1))))).filter(Boolean).length
      figure(
        t,
        'T25',
        "Redis: entries kept by the others after one prefix's clear()",
        `${kept - 1}/${fs.length - 1}`,
        'all',
        kept === fs.length,
      )
      for (const f of fs) await f.clear()
      await Promise.all(fs.map((f) => f.close()))
      const { shared, computed } = await sharedEntries({
        backend: 'redis',
        url: REDIS_URL,
        prefix: `t25:${process.pid}:ns:`,
        backendTimeout: '5s',
      })
      figure(
        t,
        'T25',
        'Redis: entries shared by 100 hostile namespaces',
        shared,
        `= 0 (${computed} computed of 100)`,
        shared === 0 && computed === 100,
      )
    },
  )
}
