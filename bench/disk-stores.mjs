// The disk stores of scenarios 6 and 7, opened in one temporary directory and removed at the end.
import Database from 'better-sqlite3'
import { ClassicLevel } from 'classic-level'
import { open } from 'lmdb'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Packr } from 'msgpackr'

/** The same msgpackr options as cachette's default serializer, so peers decode the same bytes' worth of work. */
export const packr = new Packr({ structuredClone: true, useBigIntExtension: true, copyBuffers: true })

/** A small object value, as a memoized loader would return. */
export const value = (k) => ({ id: k, name: `user ${k}`, tags: ['admin', 'beta'], active: true })

export function openStores() {
  const root = mkdtempSync(join(tmpdir(), 'cachette-bench-'))
  const lmdbBin = open({ path: join(root, 'lmdb-binary'), encoding: 'binary' })
  const lmdbMsgpack = open({ path: join(root, 'lmdb-msgpack') }) // lmdb's default: msgpackr with shared structures
  const level = new ClassicLevel(join(root, 'classic-level'), { keyEncoding: 'utf8', valueEncoding: 'buffer' })
  const sqlite = new Database(join(root, 'sqlite.db'))
  sqlite.pragma('journal_mode = WAL')
  sqlite.pragma('synchronous = NORMAL')
  sqlite.exec('CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID')
  return {
    root,
    cachetteDir: join(root, 'cachette'),
    cacacheDir: join(root, 'cacache'),
    lmdbBin,
    lmdbMsgpack,
    level,
    sqlite,
    async close() {
      await Promise.all([lmdbBin.close(), lmdbMsgpack.close(), level.close()])
      sqlite.close()
      rmSync(root, { recursive: true, force: true })
    },
  }
}
