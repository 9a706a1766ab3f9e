import test from 'ava'
import type { ExecutionContext } from 'ava'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { memoize } from '../src-ts/index'
import { tempDir, uniqueNamespace } from './helpers/env'
import { RAW_LOCK_ERROR, runFixture, spawnPeer } from './fixtures/rpc'
import type { Peer, Reply } from './fixtures/rpc'

/*
 * Several processes on one disk cache directory: one owns RocksDB, the others reach it through
 * the owner. Computations are counted in a file every process appends to.
 */

const dir = tempDir('processes')
const ONCE = join(__dirname, 'fixtures', 'disk-once.ts')
const PEER = join(__dirname, 'fixtures', 'disk-peer.ts')

/** Lines of the counter file, as `[pid, key]`. */
function computations(counterFile: string): [string, string][] {
  if (!existsSync(counterFile)) return []
  return readFileSync(counterFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ') as [string, string])
}

/** Starts `n` peers on one directory at the same time and waits until each opened it. */
async function startPeers(t: ExecutionContext, n: number, label: string) {
  const path = join(dir, label)
  const namespace = uniqueNamespace(label)
  const counterFile = join(dir, `${label}.computations`)
  const peers: Peer[] = Array.from({ length: n }, () => spawnPeer(PEER, [path, namespace, counterFile]))
  t.teardown(() => {
    for (const p of peers) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
  })
  const hello = await Promise.all(peers.map((p) => p.request<Reply & { role: string; pid: number }>({ cmd: 'hello' })))
  return { peers, hello, counterFile, path }
}

async function stopPeers(t: ExecutionContext, peers: Peer[]) {
  await Promise.all(
    peers
      .filter((p) => p.child.exitCode === null && p.child.signalCode === null)
      .map((p) => p.request({ cmd: 'exit' })),
  )
  const codes = await Promise.all(peers.map((p) => p.exited))
  for (const p of peers) {
    t.notRegex(p.stderr(), RAW_LOCK_ERROR, `raw lock error in the stderr of ${p.child.pid}`)
    t.notRegex(p.stderr(), /Warning|Error/, `warning or error in the stderr of ${p.child.pid}`)
  }
  return codes
}

test.serial(
  'process A computes and exits; process B, started afterwards, gets a hit from the disk cache',
  async (t) => {
    const path = join(dir, 'a-then-b')
    const namespace = uniqueNamespace('a-then-b')
    const counterFile = join(dir, 'a-then-b.computations')

    const a = await runFixture(ONCE, [path, namespace, 'the-key', counterFile])
    t.is(a.code, 0, a.stderr)
    const ra = JSON.parse(a.stdout)
    t.is(ra.stats.computations, 1)
    t.is(ra.stats.misses, 1)

    const b = await runFixture(ONCE, [path, namespace, 'the-key', counterFile])
    t.is(b.code, 0, b.stderr)
    const rb = JSON.parse(b.stdout)
    t.not(rb.pid, ra.pid)
    t.is(rb.stats.computations, 0, 'process B computed again')
    t.is(rb.stats.hits, 1)
    t.is(rb.by, ra.pid, "process B did not get process A's value")
    t.is(rb.key, 'the-key')
    t.is(rb.date, 1_700_000_000_000, 'a Date inside a Map did not survive the disk round trip')
    t.deepEqual(computations(counterFile), [[String(ra.pid), 'the-key']])
    t.notRegex(a.stderr + b.stderr, RAW_LOCK_ERROR)
  },
)

type StampedeReply = Reply & {
  values: { key: string; by: number; at: number }[]
  startedAt: number
  computations: number
  errors: number
}

for (const mode of ['async', 'sync'] as const) {
  test.serial(
    `4 processes × 16 concurrent callers on one cold key compute exactly once, 20 trials (${mode} function)`,
    async (t) => {
      const { peers, hello, counterFile } = await startPeers(t, 4, `stampede-${mode}`)
      t.is(hello.filter((h) => h.role === 'owner').length, 1, 'expected one owner')
      t.is(hello.filter((h) => h.role === 'guest').length, 3, 'expected three guests')

      // Trials in which every process called before the one computation had finished.
      let contended = 0
      for (let trial = 0; trial < 20; trial++) {
        const key = `${mode}-trial-${trial}`
        const at = Date.now() + 150
        const replies = await Promise.all(
          peers.map((p) => p.request<StampedeReply>({ cmd: 'stampede', mode, key, callers: 16, at })),
        )
        const counted = computations(counterFile).filter(([, k]) => k === key)
        t.is(
          counted.length,
          1,
          `trial ${trial}: computed ${counted.length} times (${counted.map(([pid]) => pid).join(', ')})`,
        )
        t.is(
          replies.reduce((n, r) => n + r.computations, 0),
          1,
          `trial ${trial}: stats().computations across processes`,
        )
        const values = replies.flatMap((r) => r.values)
        t.is(values.length, 64)
        t.is(values[0].key, key)
        t.is(String(values[0].by), counted[0]?.[0], 'the value does not come from the process that computed it')
        for (const v of values) t.deepEqual(v, values[0], `trial ${trial}: callers got different values`)
        t.true(
          replies.every((r) => r.errors === 0),
          'a store operation failed',
        )
        if (replies.every((r) => r.startedAt <= values[0].at)) contended++
      }

      // The barrier works (generous: a loaded machine may start a process late now and then).
      t.true(contended >= 10, `only ${contended} of 20 trials had all 4 processes calling during the computation`)
      t.deepEqual(await stopPeers(t, peers), [0, 0, 0, 0])
    },
  )
}

type WriteReply = Reply & { seen: Record<string, string | null>; errors: number; role: string }
type ReadReply = Reply & {
  peeked: (string | null)[]
  called: string[]
  computations: number
  errors: number
  role: string
}

const keysOf = (peer: number, n: number) => Array.from({ length: n }, (_, j) => `p${peer}-k${j}`)

/** Every peer writes its own keys while watching the others', then reads everyone's. */
async function writeAndCrossRead(t: ExecutionContext, peers: Peer[], ids: number[], perPeer: number) {
  const writes = await Promise.all(
    peers.map((p, i) => {
      const watch = ids.filter((o) => o !== ids[i]).flatMap((o) => keysOf(o, perPeer))
      return p.request<WriteReply>({ cmd: 'write', keys: keysOf(ids[i], perPeer), watch })
    }),
  )
  for (const w of writes) {
    t.is(w.errors, 0)
    for (const [k, v] of Object.entries(w.seen)) {
      if (v !== null) t.is(v, `value of ${k}`, `a process read a wrong value for ${k} while it was being written`)
    }
  }
  const all = ids.flatMap((i) => keysOf(i, perPeer))
  const reads = await Promise.all(peers.map((p) => p.request<ReadReply>({ cmd: 'read', keys: all })))
  for (const r of reads) {
    t.deepEqual(
      r.peeked,
      all.map((k) => `value of ${k}`),
      'a process does not see every flushed entry',
    )
    t.deepEqual(
      r.called,
      all.map((k) => `value of ${k}`),
    )
    t.is(r.computations, 0, 'a process recomputed an entry another process had stored')
    t.is(r.errors, 0)
  }
  return reads
}

test.serial('several processes read and write one directory at once', async (t) => {
  const { peers, hello, counterFile } = await startPeers(t, 4, 'read-write')
  t.deepEqual(hello.map((h) => h.role).sort(), ['guest', 'guest', 'guest', 'owner'])
  const reads = await writeAndCrossRead(t, peers, [0, 1, 2, 3], 100)
  t.deepEqual(reads.map((r) => r.role).sort(), ['guest', 'guest', 'guest', 'owner'])

  // Each of the 400 keys was computed once, by the process that owns it.
  const counted = computations(counterFile)
  t.is(counted.length, 400)
  for (const [pid, key] of counted) t.is(`p${hello.findIndex((h) => String(h.pid) === pid)}`, key.split('-')[0])

  t.deepEqual(await stopPeers(t, peers), [0, 0, 0, 0])
})

test.serial(
  'when the owner process is killed, another process takes the directory over and keeps every flushed entry',
  async (t) => {
    const { peers, hello, counterFile } = await startPeers(t, 4, 'owner-killed')
    await writeAndCrossRead(t, peers, [0, 1, 2, 3], 50)

    const ownerIndex = hello.findIndex((h) => h.role === 'owner')
    t.true(ownerIndex >= 0)
    peers[ownerIndex].child.kill('SIGKILL')
    t.is(await peers[ownerIndex].exited, 'SIGKILL')
    const rest = peers.filter((_, i) => i !== ownerIndex)
    const restIds = [0, 1, 2, 3].filter((i) => i !== ownerIndex)

    // The survivors still read every entry (the dead owner's too) and write new ones.
    const all = [0, 1, 2, 3].flatMap((i) => keysOf(i, 50))
    const reads = await Promise.all(rest.map((p) => p.request<ReadReply>({ cmd: 'read', keys: all })))
    for (const r of reads) {
      t.deepEqual(
        r.peeked,
        all.map((k) => `value of ${k}`),
        'an entry flushed before the owner died is gone',
      )
      t.is(r.computations, 0)
      t.is(r.errors, 0)
    }
    t.deepEqual(
      reads.map((r) => r.role).sort(),
      ['guest', 'guest', 'owner'],
      'exactly one survivor must own the directory',
    )
    await writeAndCrossRead(
      t,
      rest,
      restIds.map((i) => i + 10),
      50,
    )
    t.is(computations(counterFile).length, 4 * 50 + 3 * 50)

    t.deepEqual(await stopPeers(t, rest), [0, 0, 0])
    t.notRegex(peers[ownerIndex].stderr(), RAW_LOCK_ERROR)
  },
)

test.serial("a guest's clear() is not undone by writes the owner had queued before it", async (t) => {
  // A guest writes through the owner's socket; the owner's own write-behind queue must not
  // put back, after the guest's acknowledged clear(), an entry it had queued earlier.
  const path = join(dir, 'guest-clear')
  const ns = uniqueNamespace('guest-clear')
  const dist = require.resolve('../dist/index.js')
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const { memoize } = require(${JSON.stringify(dist)})
       const f = memoize(function val(k) { return 'computed by guest' }, { backend: 'disk', path: ${JSON.stringify(path)}, namespace: ${JSON.stringify(ns)} })
       f.has('warm-up')
       process.stdout.write('ready\\n')
       process.stdin.once('data', async () => {
         f.clear()
         const has = f.has('k')
         process.stdout.write(JSON.stringify({ has, peek: f.peek('k') }) + '\\n')
         process.exit(0)
       })`,
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  )
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  // This process opens the directory first: it owns it.
  const f = memoize((_k: string) => 'computed by owner', { backend: 'disk', path, namespace: ns })
  const big = memoize((_i: number) => null, { backend: 'disk', path, namespace: ns + '-big' })
  t.teardown(async () => {
    await f.close()
    await big.close()
  })
  f.has('warm-up')
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  t.is((await lines.next()).value, 'ready')
  // Keep the owner's writer busy for a moment, then queue this process's value of 'k'.
  const blob = randomBytes(1 << 20)
  for (let i = 0; i < 200; i++) big.set([i], blob as never)
  f('k')
  child.stdin.write('go\n')
  const r = JSON.parse((await lines.next()).value as string) as { has: boolean; peek: unknown }
  await f.flush()
  t.false(r.has, `the guest read ${JSON.stringify(r.peek)} right after its clear()`)
  t.false(f.has('k'), 'the entry survived the guest clear()')
})

test.serial('a guest that queues more than 256 MiB of writes flushes them instead of hanging', async (t) => {
  // Everything a guest queued goes to the owner in frames no larger than the owner accepts.
  const path = join(dir, 'guest-frame')
  const ns = uniqueNamespace('guest-frame')
  const dist = require.resolve('../dist/index.js')
  const f = memoize((_i: number) => null, { backend: 'disk', path, namespace: ns })
  f.has(-1) // this process owns the directory
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const { memoize } = require(${JSON.stringify(dist)})
       const f = memoize(function v(i) { return null }, { backend: 'disk', path: ${JSON.stringify(path)}, namespace: ${JSON.stringify(ns)} })
       f.has(-1)
       const blob = Buffer.alloc(1 << 20, 7)
       ;(async () => {
         for (let i = 0; i < 900; i++) f.set([i], blob)
         let err = null
         try { await f.flush() } catch (e) { err = e.code }
         process.stdout.write(JSON.stringify({ err, has: f.has(899) }) + '\\n')
         process.exit(0)
       })()`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    // Closed before the temp dir is removed at exit: RocksDB may still be flushing the guest's
    // writes into it.
    await f.close()
  })
  let out = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
  let timer: NodeJS.Timeout | undefined
  const done = await Promise.race([
    new Promise<boolean>((r) => child.once('exit', () => r(true))),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 45_000))),
  ])
  clearTimeout(timer)
  t.true(done, 'the guest hung in flush() (its writer blocked writing to the owner)')
  t.is(out.trim(), JSON.stringify({ err: null, has: true }))
})

test.serial(
  'a value larger than 256 MiB is stored by a guest and read back by the guest and by the owner',
  async (t) => {
    // One 257 MiB value: written by a guest (a frame larger than 256 MiB to the owner), read by the
    // owner from RocksDB, and read by the guest through the owner (a larger answer too).
    const path = join(dir, 'large-value')
    const ns = uniqueNamespace('large-value')
    const dist = require.resolve('../dist/index.js')
    const f = memoize((_i: number): Buffer | null => null, {
      backend: 'disk',
      path,
      namespace: ns,
      onBackendError: 'throw',
    })
    f.has(-1) // this process owns the directory
    const size = (257 << 20) + 3
    const child = spawn(
      process.execPath,
      [
        '-e',
        `const { memoize } = require(${JSON.stringify(dist)})
       const f = memoize(function v(i) { return null }, { backend: 'disk', path: ${JSON.stringify(path)}, namespace: ${JSON.stringify(ns)}, onBackendError: 'throw' })
       f.has(-1)
       const blob = Buffer.alloc(${size})
       for (let i = 0; i < blob.length; i += 4096) blob[i] = (i >> 12) & 255
       ;(async () => {
         let err = null
         try { f.set([1], blob); await f.flush() } catch (e) { err = e.code + ': ' + e.message }
         let back = null
         try { back = f.peek(1) } catch (e) { err = err ?? e.code + ': ' + e.message }
         process.stdout.write(JSON.stringify({ err, length: back?.length ?? null, same: back ? back.equals(blob) : false }) + '\\n')
         process.exit(0)
       })()`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await f.close()
    })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
    await new Promise((r) => child.once('exit', r))
    t.deepEqual(JSON.parse(out.trim() || '{}'), { err: null, length: size, same: true })
    const read = f.peek(1)
    t.is(read?.length, size)
    t.true(read !== undefined && read !== null && read[4096 * 300] === 300 % 256 && read[size - 1] === 0)
  },
)
