import Redis from 'ioredis'
import { spawnSync } from 'node:child_process'
import { crc32 } from 'node:zlib'
import { encodeKey } from '../../src-ts/key'
import { IO_BYTES, openShared } from '../../src-ts/native'

/*
 * What another writer of a shared Redis or SQL store can do without cachette: list the entries
 * stored under one key prefix or table, and write bytes of its own in their place. Entries are
 * named by their store key (the digest's first 16 bytes); `bytes` is the envelope as stored
 * (crates/cachette-core/src/envelope.rs). The integrity tests and the chaos suite forge with it.
 */

/** One stored entry: its store key (the digest's first 16 bytes) and its envelope. */
export interface RawEntry {
  key: Buffer
  bytes: Buffer
}

/** Raw access to the entries of one Redis key prefix or one SQL table. */
export interface RawEntries {
  list(): Promise<RawEntry[]>
  write(key: Buffer, bytes: Buffer): Promise<void>
  close(): Promise<void>
}

/** The entries under `prefix` on the Redis server of `url` (`<prefix>{<ns>}:v:<hex key>`). */
export function redisEntries(url: string, prefix: string): RawEntries {
  const redis = new Redis(url)
  const names = new Map<string, string>()
  return {
    async list() {
      const out: RawEntry[] = []
      let cursor = '0'
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
        cursor = next
        for (const name of keys) {
          const m = /:v:([0-9a-f]{32})$/.exec(name)
          if (m === null) continue
          const bytes = await redis.getBuffer(name)
          if (bytes === null) continue
          names.set(m[1], name)
          out.push({ key: Buffer.from(m[1], 'hex'), bytes })
        }
      } while (cursor !== '0')
      return out
    },
    async write(key, bytes) {
      const name = names.get(key.toString('hex'))
      if (name === undefined) throw new Error('write() takes a key that list() returned')
      await redis.set(name, bytes, 'KEEPTTL')
    },
    async close() {
      redis.disconnect()
    },
  }
}

/** Runs `sql` with psql on the PostgreSQL database of `url`: its rows, `|`-separated. */
export function psql(url: string, sql: string): string[] {
  const r = spawnSync('psql', [url, '-XAtc', sql], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`psql: ${r.stderr}`)
  return r.stdout.split('\n').filter((l) => l !== '')
}

/** The entries of `table` in the PostgreSQL database of `url`, through `psql`. */
export function postgresEntries(url: string, table: string): RawEntries {
  return {
    list: async () =>
      psql(url, `SELECT encode(k, 'hex'), encode(v, 'hex') FROM ${table}`).map((l) => {
        const [k, v] = l.split('|')
        return { key: Buffer.from(k, 'hex'), bytes: Buffer.from(v, 'hex') }
      }),
    async write(key, bytes) {
      psql(url, `UPDATE ${table} SET v = '\\x${bytes.toString('hex')}' WHERE k = '\\x${key.toString('hex')}'`)
    },
    close: async () => undefined,
  }
}

/** Runs `sql` with the `mysql` client on the MySQL/MariaDB database of `url`: its output. */
export function mysql(url: string, sql: string): string {
  const u = new URL(url)
  const args = ['-h', u.hostname, '-P', u.port || '3306', '-u', decodeURIComponent(u.username) || 'root']
  if (u.password) args.push(`-p${decodeURIComponent(u.password)}`)
  const r = spawnSync('mysql', [...args, '-N', '-B', u.pathname.slice(1), '-e', sql], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`mysql: ${r.stderr}`)
  return r.stdout
}

/** The entries of `table` in the SQLite file `file`. */
export function sqliteEntries(file: string, table: string): RawEntries {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Database = require('better-sqlite3') as new (file: string) => {
    prepare(sql: string): { all(): { k: Buffer; v: Buffer }[]; run(...args: unknown[]): unknown }
    pragma(p: string): unknown
    close(): void
  }
  const db = new Database(file)
  db.pragma('busy_timeout = 10000')
  return {
    list: async () =>
      db
        .prepare(`SELECT k, v FROM ${table}`)
        .all()
        .map((row) => ({ key: row.k, bytes: row.v })),
    async write(key, bytes) {
      db.prepare(`UPDATE ${table} SET v = ? WHERE k = ?`).run(bytes, key)
    },
    close: async () => db.close(),
  }
}

/** The entries of `table` in the MySQL/MariaDB database of `url`, through the `mysql` client. */
export function mysqlEntries(url: string, table: string): RawEntries {
  return {
    async list() {
      return mysql(url, `SELECT HEX(k), HEX(v) FROM ${table}`)
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => {
          const [k, v] = l.split('\t')
          return { key: Buffer.from(k, 'hex'), bytes: Buffer.from(v, 'hex') }
        })
    },
    async write(key, bytes) {
      mysql(url, `UPDATE ${table} SET v = X'${bytes.toString('hex')}' WHERE k = X'${key.toString('hex')}'`)
    },
    close: async () => undefined,
  }
}

/** The 32-byte digest of an argument list in `namespace` (docs/key-encoding.md), as every store names it. */
export function digestOf(namespace: string, args: unknown[]): Buffer {
  const io = Buffer.alloc(IO_BYTES)
  openShared(namespace).hash(encodeKey(args), io)
  return io.subarray(0, 32)
}

/** Bytes of an envelope's header before its digest check: magic, version, flags, times. */
function checkAt(bytes: Buffer): number {
  const flags = bytes[3]
  return 12 + 8 * ((flags & 1) + ((flags >> 1) & 1))
}

/**
 * `bytes`, an envelope stored for another key, made to pass the envelope's own checks as the
 * entry of `digest`: its digest check rewritten and its CRC recomputed. What a writer who knows
 * the arguments (the digest is no secret) but not the `integrityKey` can forge.
 */
export function resealFor(bytes: Buffer, digest: Buffer): Buffer {
  const out = Buffer.from(bytes)
  digest.copy(out, checkAt(out), 16, 32)
  out.writeUInt32BE(crc32(out.subarray(0, out.length - 4)), out.length - 4)
  return out
}

/** An envelope for `digest` whose payload is `payload`, with a valid CRC and no expiry. */
export function envelopeFor(digest: Buffer, payload: Buffer, createdMs = Date.now()): Buffer {
  const out = Buffer.alloc(12 + 16 + payload.length + 4)
  out[0] = 0xca
  out[1] = 0xc7
  out[2] = 2
  out[3] = 0
  out.writeBigUInt64BE(BigInt(createdMs), 4)
  digest.copy(out, 12, 16, 32)
  payload.copy(out, 28)
  out.writeUInt32BE(crc32(out.subarray(0, out.length - 4)), out.length - 4)
  return out
}

/** `bytes` with its payload's byte `i` (counted from the payload start) changed and its CRC recomputed. */
export function alteredPayload(bytes: Buffer, i: number): Buffer {
  const out = Buffer.from(bytes)
  const start = checkAt(out) + 16
  const at = start + (i % Math.max(1, out.length - 4 - start))
  out[at] ^= 0x5a
  out.writeUInt32BE(crc32(out.subarray(0, out.length - 4)), out.length - 4)
  return out
}
