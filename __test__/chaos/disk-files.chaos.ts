import test from 'ava'
import { execFile, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import {
  chmodSync,
  chownSync,
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  statSync,
  symlinkSync,
} from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { memoize } from '../../src-ts/index'
import { tempDir } from '../helpers/env'
import { isRoot, modes, NOBODY } from '../helpers/disk-files'
import { figure } from './helpers/figures'

/*
 * T24 of the reliability plan (filesystem hardening): what another local user can do to a disk
 * cache directory. The tests run as root and play the other user as uid 65534.
 */

const dir = tempDir('chaos-disk-files')
const INDEX = join(__dirname, '..', '..', 'src-ts', 'index.ts')
const LOOP = join(__dirname, '..', 'fixtures', 'disk-loop.ts')
const run = promisify(execFile)
let n = 0
const fresh = (label: string) => join(dir, `${label}-${n++}`)
const valueOf = (key: string) => `value of ${key}`

/** Opens `path` in a child process (with `env`), calls a function 20 times and flushes; what happened. */
async function openInChild(path: string, env: Record<string, string> = {}, onBackendError = 'throw') {
  const script = `
    const { memoize } = require(${JSON.stringify(INDEX)})
    const warnings = []
    process.on('warning', (w) => warnings.push(w.message))
    ;(async () => {
      try {
        const f = memoize((k) => 'value of ' + k, { backend: 'disk', path: process.argv[1], namespace: 't24', onBackendError: ${JSON.stringify(onBackendError)} })
        for (let i = 0; i < 20; i++) f('k' + i)
        await f.flush()
        await new Promise((r) => setTimeout(r, 20))
        process.stdout.write(JSON.stringify({ opened: true, errors: f.stats().errors, warnings }))
      } catch (e) {
        process.stdout.write(JSON.stringify({ code: e.code, message: e.message }))
      }
    })()
  `
  const { stdout } = await run(process.execPath, ['-r', require.resolve('tsx/cjs'), '-e', script, path], {
    env: { ...process.env, ...env },
    timeout: 60_000,
  })
  return JSON.parse(stdout) as { opened?: true; errors?: number; warnings?: string[]; code?: string; message?: string }
}

/** Starts the disk-loop fixture; resolves once it opened the directory, with its role. */
function loop(path: string, prefix: string, ms: number, shared = 0) {
  const child = spawn(process.execPath, ['--import', 'tsx', LOOP, path, 't24', prefix, String(ms), String(shared)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const lines = createInterface({ input: child.stdout })
  const ready = new Promise<string>((resolve, reject) => {
    lines.once('line', (l) => (l.startsWith('ready') ? resolve(l.split(' ')[1]) : reject(new Error(l))))
    child.once('exit', (c) => reject(new Error(`exited ${c}: ${stderr}`)))
  })
  const report = new Promise<{ role: string; wrong: number; errors: string[] }>((resolve, reject) => {
    lines.on('line', (l) => {
      if (l.startsWith('{')) resolve(JSON.parse(l))
    })
    child.once('exit', (c, s) => reject(new Error(`exited ${c ?? s} without a report: ${stderr}`)))
  })
  report.catch(() => undefined)
  ready.catch(() => undefined)
  return { child, ready, report, stderr: () => stderr }
}

/**
 * Another user's process that squats the socket directory: it replaces every socket it finds
 * there with its own, answers every request as an owner would ("ok", "nothing here"), and
 * counts the bytes it receives. Prints that count when its stdin closes.
 */
function squatter(socketDir: string): { child: ChildProcess; took: () => boolean; bytes: () => Promise<number> } {
  const script = `
    const fs = require('fs'), net = require('net'), path = require('path')
    const dir = process.argv[1], mine = new Set()
    let bytes = 0
    setInterval(() => {
      let names = []
      try { names = fs.readdirSync(dir) } catch {}
      for (const n of names) {
        const p = path.join(dir, n)
        if (mine.has(p) || !n.endsWith('.sock')) continue
        try { fs.unlinkSync(p) } catch { continue }
        const server = net.createServer((c) => {
          c.on('error', () => {})
          c.on('data', (d) => {
            bytes += d.length
            c.write(Buffer.from([0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]))
          })
        })
        server.on('error', () => {})
        server.listen(p, () => process.stdout.write('took\\n'))
        mine.add(p)
      }
    }, 2)
    process.stdin.on('end', () => { process.stdout.write('bytes ' + bytes + '\\n'); process.exit(0) })
    process.stdin.resume()
  `
  const child = spawn(process.execPath, ['-e', script, socketDir], {
    uid: NOBODY,
    gid: NOBODY,
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  return {
    child,
    took: () => out.includes('took'),
    bytes: async () => {
      child.stdin!.end()
      if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r))
      return Number(/bytes (\d+)/.exec(out)?.[1])
    },
  }
}

/**
 * A process of this user using `path` (with `env`) under the default `onBackendError`: it calls a
 * function for `ms` milliseconds, flushing as it goes, and reports what it saw.
 */
function holdInChild(path: string, env: Record<string, string>, ms: number) {
  const script = `
    const { memoize } = require(${JSON.stringify(INDEX)})
    const f = memoize((k) => 'value of ' + k, { backend: 'disk', path: process.argv[1], namespace: 't24-hold' })
    f('warm-up')
    process.stdout.write('ready\\n')
    ;(async () => {
      let wrong = 0
      for (let i = 0, end = Date.now() + ${ms}; Date.now() < end; i++) {
        if (f('k' + (i % 100)) !== 'value of k' + (i % 100)) wrong++
        if (i % 25 === 0) { await f.flush(); await new Promise((r) => setTimeout(r, 1)) }
      }
      await f.flush()
      process.stdout.write(JSON.stringify({ wrong, errors: f.stats().errors }) + '\\n')
    })()
  `
  const child = spawn(process.execPath, ['-r', require.resolve('tsx/cjs'), '-e', script, path], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const lines = createInterface({ input: child.stdout })
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (c, sig) => reject(new Error(`exited ${c ?? sig} without a report: ${stderr}`))),
  )
  exited.catch(() => undefined)
  const ready = Promise.race([new Promise<void>((resolve) => lines.once('line', () => resolve())), exited])
  const done = Promise.race([
    new Promise<{ wrong: number; errors: number }>((resolve) =>
      lines.on('line', (l) => l.startsWith('{') && resolve(JSON.parse(l))),
    ),
    exited,
  ])
  return { ready, done }
}

test('T24: unsafe directories are refused, nothing is written through a foreign link, created files are private, a stale socket is replaced only once no owner answers', async (t) => {
  // Each case: a path another user could have prepared, and whether this user's cache opens it.
  const cases: { name: string; path: string; env?: Record<string, string>; target?: string }[] = []
  const wide = fresh('wide')
  mkdirSync(wide)
  chmodSync(wide, 0o777)
  cases.push({ name: 'directory of mode 0777', path: wide })
  const group = fresh('group')
  mkdirSync(group)
  chmodSync(group, 0o770)
  cases.push({ name: 'group-writable directory', path: group })
  const longTmp = fresh('tmp')
  mkdirSync(longTmp, { mode: 0o700 })
  const socketDir = join(longTmp, `cachette-${process.geteuid?.() ?? 0}`)
  mkdirSync(socketDir)
  chmodSync(socketDir, 0o777)
  const longPath = join(fresh('long'), 'x'.repeat(120))
  cases.push({ name: 'socket directory of mode 0777', path: longPath, env: { TMPDIR: longTmp } })
  const linkTmp = fresh('tmp')
  mkdirSync(linkTmp, { mode: 0o700 })
  mkdirSync(join(linkTmp, 'real'), { mode: 0o700 })
  symlinkSync(join(linkTmp, 'real'), join(linkTmp, `cachette-${process.geteuid?.() ?? 0}`))
  cases.push({
    name: 'socket directory that is a link',
    path: join(fresh('long'), 'y'.repeat(120)),
    env: { TMPDIR: linkTmp },
  })
  if (isRoot) {
    const theirs = fresh('theirs')
    mkdirSync(theirs, { mode: 0o700 })
    chownSync(theirs, NOBODY, NOBODY)
    cases.push({ name: 'directory of another user', path: theirs, target: theirs })
    const target = fresh('target')
    mkdirSync(target, { mode: 0o700 })
    const link = fresh('their-link')
    symlinkSync(target, link)
    lchownSync(link, NOBODY, NOBODY)
    cases.push({ name: 'link of another user', path: link, target })
    const chained = fresh('our-link')
    symlinkSync(link, chained)
    cases.push({ name: 'our link to a link of another user', path: join(chained, 'cache'), target })
    const foreignTmp = fresh('tmp')
    mkdirSync(foreignTmp, { mode: 0o700 })
    const foreignSocketDir = join(foreignTmp, `cachette-${process.geteuid?.() ?? 0}`)
    mkdirSync(foreignSocketDir, { mode: 0o700 })
    chownSync(foreignSocketDir, NOBODY, NOBODY)
    cases.push({
      name: 'socket directory of another user',
      path: join(fresh('long'), 'z'.repeat(120)),
      env: { TMPDIR: foreignTmp },
    })
  } else t.log('not root: the cases of another user are skipped')
  let refused = 0
  for (const c of cases) {
    const r = await openInChild(c.path, c.env)
    if (r.code === 'ERR_BACKEND_UNAVAILABLE') refused++
    else t.log(`${c.name}: not refused: ${JSON.stringify(r)}`)
  }
  figure(
    t,
    'T24',
    'unsafe directories refused',
    `${refused}/${cases.length}`,
    `${cases.length}/${cases.length}`,
    refused === cases.length,
  )
  // The default onBackendError: the function runs uncached; nothing lands where a link points.
  let written = 0
  for (const c of cases.filter((c) => c.target !== undefined)) {
    const r = await openInChild(c.path, c.env, 'fallback')
    if (!r.opened || !r.warnings?.some((w) => w.includes('ERR_BACKEND_UNAVAILABLE')))
      t.log(`${c.name}: ${JSON.stringify(r)}`)
    written += readdirSync(c.target!).length
  }
  figure(t, 'T24', 'files written through a foreign link or into a foreign directory', written, '0', written === 0)

  // A squatter of the socket directory (mode 0777, another user's) receives nothing.
  if (isRoot) {
    // A TMPDIR the other user can reach (this file's temp dir is 0700).
    const squatTmp = tempDir('chaos-squat')
    chmodSync(squatTmp, 0o755)
    const squatDir = join(squatTmp, `cachette-${process.geteuid?.() ?? 0}`)
    mkdirSync(squatDir)
    chmodSync(squatDir, 0o777)
    chownSync(squatDir, NOBODY, NOBODY)
    const sq = squatter(squatDir)
    const path = join(fresh('squatted'), 's'.repeat(120))
    const env = { TMPDIR: squatTmp }
    // The owner first; once the squatter replaced its socket (if it had one), a guest joins.
    const owner = holdInChild(path, env, 4000)
    await owner.ready
    for (let i = 0; i < 100 && !sq.took(); i++) await new Promise((r) => setTimeout(r, 10))
    const guest = holdInChild(path, env, 500)
    await guest.ready
    const reports = await Promise.all([owner.done, guest.done])
    const bytes = await sq.bytes()
    t.log(`squatter took a socket: ${sq.took()}; owner and guest saw ${JSON.stringify(reports)}`)
    t.is(reports[0].wrong + reports[1].wrong, 0)
    figure(t, 'T24', "bytes another user's squatting listener received", bytes, '0', bytes === 0)
  }

  // What a store creates is private: the directory (and its parents) 0700, files and socket 0600.
  const created = join(fresh('created'), 'a', 'cache')
  for (let round = 0; round < 2; round++) {
    const f = memoize((k: number) => valueOf(String(k)), { backend: 'disk', path: created, namespace: 't24-modes' })
    for (let k = 0; k < 20_000; k++) f(k)
    await f.flush()
    await f.close()
  }
  const f = memoize((k: number) => valueOf(String(k)), { backend: 'disk', path: created, namespace: 't24-modes' })
  f(1)
  const all = modes(created)
  const loose = Object.entries(all).filter(
    ([name, m]) => m !== (lstatSync(join(created, name)).isDirectory() ? 0o700 : 0o600),
  )
  for (const [name, m] of loose) t.log(`${name}: ${m.toString(8)}`)
  const dirMode = (statSync(created).mode & 0o777).toString(8).padStart(4, '0')
  const parentMode = (statSync(join(created, '..')).mode & 0o777).toString(8).padStart(4, '0')
  figure(
    t,
    'T24',
    'mode of the created cache directory (and its parent)',
    `${dirMode} (${parentMode})`,
    '0700 (0700)',
    dirMode === '0700' && parentMode === '0700',
  )
  figure(
    t,
    'T24',
    `files and directories in it not 0600/0700 (of ${Object.keys(all).length})`,
    loose.length,
    '0',
    loose.length === 0,
  )
  const sockMode = (all['.owner.sock'] ?? 0).toString(8).padStart(4, '0')
  figure(t, 'T24', 'mode of the owner socket', sockMode, '0600', sockMode === '0600')
  await f.close()

  // A live owner's socket is never replaced by another opener; a dead owner's is, by the next owner.
  const stale = fresh('stale')
  const owner = loop(stale, 'owner', 60_000)
  t.is(await owner.ready, 'owner')
  // Which socket file: an inode number may be reused once the old file is gone, its birth time not.
  const inode = () => {
    const st = lstatSync(join(stale, '.owner.sock'), { bigint: true })
    return `${st.ino}@${st.birthtimeNs}`
  }
  const before = inode()
  const guest = loop(stale, 'guest', 0)
  const guestRole = await guest.ready
  const guestReport = await guest.report
  const replacedLive = inode() !== before ? 1 : 0
  figure(
    t,
    'T24',
    "a live owner's socket replaced by a second opener",
    replacedLive,
    '0',
    replacedLive === 0 && guestRole === 'guest',
  )
  owner.child.kill('SIGKILL')
  await new Promise((r) => owner.child.once('exit', r))
  const leftBehind = existsSync(join(stale, '.owner.sock'))
  const next = loop(stale, 'next', 1500)
  const nextRole = await next.ready
  const after = existsSync(join(stale, '.owner.sock')) ? inode() : before
  const nextReport = await next.report
  const replaced = leftBehind && after !== before && nextRole === 'owner'
  t.log(`stale socket left behind: ${leftBehind}, next opener: ${nextRole}, socket before/after: ${before} ${after}`)
  figure(t, 'T24', "a killed owner's stale socket replaced by the next owner", replaced ? 'yes' : 'no', 'yes', replaced)
  t.deepEqual([guestReport.errors, nextReport.errors], [[], []])
  t.is(guestReport.wrong + nextReport.wrong, 0)
})
