import test from 'ava'
import { execFile } from 'node:child_process'
import {
  chmodSync,
  chownSync,
  existsSync,
  lchownSync,
  mkdirSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
} from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { CachetteError, memoize } from '../src-ts/index'
import { tempDir, uniqueNamespace } from './helpers/env'
import {
  filesEnding,
  filledDirectory,
  isRoot,
  modes,
  NOBODY,
  valueOf,
  zeroMiddleOfLargestSst,
} from './helpers/disk-files'
import { track, waitFor } from './helpers/store-suite'

/*
 * The files of a disk cache directory: it is this user's alone (directories and links of other
 * users, and directories others may write in, are refused; what it holds is 0600), and damage
 * heals (a damaged entry is a miss, a damaged database is repaired when it opens).
 */

const dir = tempDir('disk-files')
const INDEX = join(__dirname, '..', 'src-ts', 'index.ts')
const run = promisify(execFile)

/** A fresh directory path under this file's temp dir (not created). */
let n = 0
const fresh = (label: string) => join(dir, `${label}-${n++}`)

/** The error `memoize()` throws for a disk `path` under `onBackendError: 'throw'`. */
function refusal(path: string): CachetteError | undefined {
  return (() => {
    try {
      track(
        memoize((x: number) => x, {
          backend: 'disk',
          path,
          namespace: uniqueNamespace('refused'),
          onBackendError: 'throw',
        }),
      )
    } catch (e) {
      return e as CachetteError
    }
    return undefined
  })()
}

test('a cache directory others may write in is refused with ERR_BACKEND_UNAVAILABLE, and runs uncached with one warning by default', async (t) => {
  const path = fresh('open')
  mkdirSync(path)
  chmodSync(path, 0o777)
  const e = refusal(path)
  t.true(e instanceof CachetteError)
  t.is(e?.code, 'ERR_BACKEND_UNAVAILABLE')
  t.regex(String(e?.message), /mode 0777.*chmod 700/)
  const namespace = uniqueNamespace('open-fallback')
  const warnings: string[] = []
  const listener = (w: Error) => {
    if (w.message.includes(namespace)) warnings.push(w.message)
  }
  process.on('warning', listener)
  let calls = 0
  const f = track(memoize((x: number) => (calls++, x * 2), { backend: 'disk', path, namespace }))
  t.is(f(2), 4)
  t.is(f(2), 4)
  await new Promise((r) => setTimeout(r, 20))
  process.off('warning', listener)
  t.is(calls, 2, 'nothing is cached')
  t.true(f.stats().errors >= 1)
  t.is(warnings.length, 1)
  t.regex(warnings[0], /ERR_BACKEND_UNAVAILABLE/)
  t.deepEqual(readdirSync(path), [], 'a file was created in it')
})

test('a cache directory of another user is refused, and so is a symbolic link of another user on the path', (t) => {
  if (!isRoot) return t.pass('needs root to make files of another user')
  const theirs = fresh('theirs')
  mkdirSync(theirs, { mode: 0o700 })
  chownSync(theirs, NOBODY, NOBODY)
  t.regex(String(refusal(theirs)?.message), /belongs to uid 65534/)
  t.deepEqual(readdirSync(theirs), [])
  const target = fresh('target')
  mkdirSync(target, { mode: 0o700 })
  const link = fresh('link')
  symlinkSync(target, link)
  lchownSync(link, NOBODY, NOBODY)
  t.regex(String(refusal(link)?.message), /symbolic link that belongs to uid 65534/)
  t.regex(String(refusal(join(link, 'deeper'))?.message), /symbolic link/)
  t.deepEqual(readdirSync(target), [], 'a file was written through the link')
})

test('a symbolic link of ours is followed, a directory others may read is made 0700, and every file in it is 0600', async (t) => {
  const real = fresh('real')
  mkdirSync(real, { mode: 0o755 })
  chmodSync(real, 0o755)
  const link = fresh('ours')
  symlinkSync(real, link)
  const f = track(memoize((x: number) => ({ x }), { backend: 'disk', path: link, namespace: uniqueNamespace('modes') }))
  for (let i = 0; i < 100; i++) f(i)
  await f.flush()
  t.is(statSync(real).mode & 0o777, 0o700)
  const inside = modes(real)
  t.true(Object.keys(inside).length >= 6, JSON.stringify(inside))
  for (const [name, mode] of Object.entries(inside)) {
    const dirLike = statSync(join(real, name)).isDirectory()
    t.is(mode, dirLike ? 0o700 : 0o600, `${name} is ${mode.toString(8)}`)
  }
  t.is(inside['.owner.sock'], 0o600)
})

test("a long cache path's socket directory that another user made, or left open to others, is refused", async (t) => {
  // The owner's socket then lives in $TMPDIR/cachette-<uid>/: given a private TMPDIR here.
  const tmp = fresh('tmpdir')
  mkdirSync(tmp, { mode: 0o700 })
  const socketDir = join(tmp, `cachette-${process.geteuid?.() ?? 0}`)
  const path = join(fresh('long'), 'x'.repeat(120))
  const open = async () => {
    const script = `
      const { memoize } = require(${JSON.stringify(INDEX)})
      try {
        const f = memoize((x) => x, { backend: 'disk', path: process.argv[1], namespace: 'long', onBackendError: 'throw' })
        f(1)
        process.stdout.write(JSON.stringify({ opened: true }))
      } catch (e) {
        process.stdout.write(JSON.stringify({ code: e.code, message: e.message }))
      }
    `
    const { stdout } = await run(process.execPath, ['-r', require.resolve('tsx/cjs'), '-e', script, path], {
      env: { ...process.env, TMPDIR: tmp },
      timeout: 60_000,
    })
    return JSON.parse(stdout) as { opened?: true; code?: string; message?: string }
  }
  t.deepEqual(await open(), { opened: true })
  t.is(statSync(socketDir).mode & 0o777, 0o700)
  chmodSync(socketDir, 0o777)
  const wide = await open()
  t.is(wide.code, 'ERR_BACKEND_UNAVAILABLE')
  t.regex(String(wide.message), /socket directory .* is open to other users \(mode 0777\)/)
  if (isRoot) {
    chmodSync(socketDir, 0o700)
    chownSync(socketDir, NOBODY, NOBODY)
    const foreign = await open()
    t.is(foreign.code, 'ERR_BACKEND_UNAVAILABLE')
    t.regex(String(foreign.message), /belongs to uid 65534/)
  }
  rmSync(socketDir, { recursive: true })
  symlinkSync(tmp, socketDir)
  t.regex(String((await open()).message), /is a symbolic link/)
  unlinkSync(socketDir)
})

test("an entry in a zeroed block of an SST file reads as a miss under 'throw', is counted in stats().errors and cached again", async (t) => {
  const path = fresh('zeroed')
  const namespace = uniqueNamespace('zeroed')
  const keys = 3000
  await filledDirectory(path, namespace, keys)
  zeroMiddleOfLargestSst(path)
  let computed = 0
  const f = track(
    memoize((k: number) => (computed++, valueOf(k)), { backend: 'disk', path, namespace, onBackendError: 'throw' }),
  )
  for (let k = 0; k < keys; k++) t.is(f(k), valueOf(k))
  t.true(computed > 0, 'no entry met the damage')
  t.true(computed < keys)
  t.true(f.stats().errors > 0, 'the damage was not counted')
  await f.flush()
  // Repaired: the damaged file went to lost/, and every key is a hit again.
  const before = computed
  for (let k = 0; k < keys; k++) t.is(f(k), valueOf(k))
  t.is(computed, before)
  await waitFor(() => existsSync(join(path, 'lost')) && filesEnding(join(path, 'lost'), '.sst').length > 0, 30_000)
})

test('a deleted MANIFEST is repaired at the next open, and the entries are hits', async (t) => {
  const path = fresh('manifest')
  const namespace = uniqueNamespace('manifest')
  await filledDirectory(path, namespace, 500)
  for (const m of filesEnding(path, '')) if (m.startsWith('MANIFEST-')) rmSync(join(path, m))
  let computed = 0
  const f = track(
    memoize((k: number) => (computed++, valueOf(k)), { backend: 'disk', path, namespace, onBackendError: 'throw' }),
  )
  for (let k = 0; k < 500; k++) t.is(f(k), valueOf(k))
  t.is(computed, 0)
  t.is(f.stats().errors, 1, 'the repair was not counted')
})

test("a directory in the place of RocksDB's LOCK is set aside and the cache opens", async (t) => {
  const path = fresh('lock-dir')
  const namespace = uniqueNamespace('lock-dir')
  await filledDirectory(path, namespace, 10)
  rmSync(join(path, 'LOCK'))
  mkdirSync(join(path, 'LOCK'))
  let computed = 0
  const f = track(
    memoize((k: number) => (computed++, valueOf(k)), { backend: 'disk', path, namespace, onBackendError: 'throw' }),
  )
  t.is(f(3), valueOf(3))
  t.is(computed, 0)
  t.true(statSync(join(path, 'LOCK')).isFile())
})
