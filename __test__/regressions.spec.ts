import test from 'ava'
import { memoize } from '../src-ts/index'
import { fromNative } from '../src-ts/errors'
import { IO_BYTES, openShared, storeGet, storePut } from '../src-ts/native'
import { sleep, tempDir, uniqueNamespace } from './helpers/env'

// Every test below failed against HEAD cc0eb8e with the addon built from it. All but the last
// (256 MiB guest hang) pass against the uncommitted working-tree fixes made while this review ran.

// BUG: memory.ts refreshInBackground stores null/undefined results although cacheUndefined is false.
test('memory: a background refresh does not store null when cacheUndefined is false', async (t) => {
  let n = 0
  const results = [1, null, 3]
  const f = memoize((_k: string) => results[n++], { ttl: 30, staleWhileRevalidate: '1h', cacheUndefined: false })
  t.is(f('a'), 1)
  await sleep(60)
  t.is(f('a'), 1) // stale hit, refresh in the background returns null
  await sleep(30)
  t.is(n, 2)
  // null must not be cached: this call computes and gets 3
  t.is(f('a'), 3)
})

// BUG: memory-plain.ts clear() while a promise is pending: its later rejection erases it from
// the detached container and decrements the live count (size goes negative).
test('plain memory: clear() during a pending rejection keeps size at 0', async (t) => {
  const f = memoize(async function rej(_k: number) {
    await sleep(20)
    throw new Error('boom')
  })
  const p = f(1)
  f.clear()
  await t.throwsAsync(p)
  await sleep(5)
  t.is(f.stats().size, 0)
})

// BUG: memory.ts clear() while a promise is pending then rejected: size goes to -1.
test('memory (ttl): clear() during a pending rejection keeps size at 0', async (t) => {
  const f = memoize(
    async function objRej(_k: { id: number }) {
      await sleep(20)
      throw new Error('boom')
    },
    { ttl: '1h' },
  )
  const p = f({ id: 1 })
  f.clear()
  await t.throwsAsync(p)
  await sleep(5)
  t.is(f.stats().size, 0)
})

// BUG: locks are owned per thread (OWNER), re-entrancy is tracked per memoized function: a
// nested call of the same key through another function of the same namespace waits for its own
// thread's lock until lockTimeout.
test('shared: a nested same-namespace call of the same key does not wait for its own lock', (t) => {
  const ns = uniqueNamespace('nested')
  const g = memoize((x: number) => x, { shared: true, namespace: ns, lockTimeout: 2000 })
  const f = memoize((x: number) => g(x) + 1, { shared: true, namespace: ns, lockTimeout: 2000 })
  const start = Date.now()
  f(1)
  t.true(Date.now() - start < 1000, `took ${Date.now() - start} ms`)
})

// BUG: shard_map.rs counts 96 bytes of overhead per entry against maxBytes, while the README says
// maxBytes counts encoded values: 20 values of ~2 bytes (40 bytes) do not fit in maxBytes 1000.
test('shared: maxBytes counts encoded values', (t) => {
  const ns = uniqueNamespace('bytes')
  const f = memoize((x: number) => x, { shared: true, namespace: ns, maxBytes: 1000 })
  for (let i = 0; i < 20; i++) f(i)
  t.is(f.stats().size, 20)
})

// BUG: disk.rs — a guest's writes go straight to RocksDB through the owner's socket, while the
// owner's own write-behind queue is applied later and is consulted first by OP_GET: a guest's
// clear() (acknowledged) is undone by an older write the owner had queued, and the guest reads
// the cleared entry right after its clear().
test.serial("disk: a guest's clear() is not undone by the owner's queued writes", async (t) => {
  const { spawn } = await import('node:child_process')
  const { randomBytes } = await import('node:crypto')
  const path = tempDir('guest-clear')
  const ns = uniqueNamespace('gc')
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
  // This process opens the directory first: it owns it.
  const f = memoize((_k: string) => 'computed by owner', { backend: 'disk', path, namespace: ns })
  const big = memoize((_i: number) => null, { backend: 'disk', path, namespace: ns + '-big' })
  f.has('warm-up')
  const { createInterface } = await import('node:readline')
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  t.is((await lines.next()).value, 'ready')
  // Keep the owner's writer busy for a moment, then queue this process's value of 'k'.
  const blob = randomBytes(1 << 20)
  for (let i = 0; i < 200; i++) big.set([i], blob as never)
  f('k')
  child.stdin.write('go\n')
  const reply = (await lines.next()).value as string
  const r = JSON.parse(reply) as { has: boolean; peek: unknown }
  await f.flush()
  t.false(r.has, `the guest read ${JSON.stringify(r.peek)} right after its clear()`)
  t.false(f.has('k'), 'the entry survived the guest clear()')
})

// BUG: stored.ts close() drops the native store while a computation holds its key's lock; when
// it finishes, put() finds `store` null (TypeError swallowed as a backend error) and the lock is
// never released: every other caller of that key (threads, processes, other functions of the
// namespace) waits lockTimeout.
test('shared: close() during a computation does not leak its lock', async (t) => {
  const ns = uniqueNamespace('close-leak')
  const opts = { shared: true, namespace: ns, lockTimeout: 1500 }
  const f1 = memoize(async (x: number) => {
    await sleep(50)
    return x
  }, opts)
  const f2 = memoize(async (x: number) => x, opts)
  const running = f1(1)
  await f1.close()
  await running
  const start = Date.now()
  t.is(await f2(1), 1)
  t.true(Date.now() - start < 500, `f2 waited ${Date.now() - start} ms for a lock nobody holds`)
})

// BUG: stored.ts clearLocks() calls releaseOwner(OWNER) on the per-directory DiskStore, which
// releases every lock this thread holds in the directory, those of other functions included:
// g.clearLocks() breaks f's single flight (and its cross-process byte-range lock).
test('disk: clearLocks() of one function does not release the locks of another', async (t) => {
  const path = tempDir('clearlocks')
  const ns = uniqueNamespace('cl')
  let computations = 0
  const body = async (x: number) => {
    computations++
    await sleep(200)
    return x
  }
  const f = memoize(body, { backend: 'disk', path, namespace: ns })
  const f2 = memoize(body, { backend: 'disk', path, namespace: ns }) // same entries as f
  const g = memoize(async (x: number) => x, { backend: 'disk', path, namespace: ns + '-other' })
  const first = f(1)
  await sleep(50)
  g.clearLocks()
  const second = f2(1) // should wait for f's computation of the key, then read its value
  await Promise.all([first, second])
  t.is(computations, 1)
})

// BUG: disk.rs/ipc.rs — the guest's writer sends everything queued as one frame; above MAX_FRAME
// (256 MiB) the owner's serve thread stops reading but keeps the socket open (a clone sits in
// `peers`), and the guest has no write timeout: its writer blocks forever in write(), flush()
// never resolves and every later request of that process (reads included) hangs.
test.serial('disk: a guest that queues more than 256 MiB does not hang', async (t) => {
  const { spawn } = await import('node:child_process')
  const path = tempDir('guest-frame')
  const ns = uniqueNamespace('gf')
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
    if (child.exitCode === null) child.kill('SIGKILL')
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
  t.true(done, 'the guest hung in flush() (its writer is blocked writing to the owner forever)')
  t.regex(out, /"has":true/)
})

test('native hot path: a short io buffer, overlapping buffers or a non-buffer throw ERR_INVALID_ARGUMENT and store nothing', (t) => {
  const store = openShared(uniqueNamespace('raw'), undefined, undefined)
  const h = store.handle()
  const key = Buffer.from([1, 2, 3])
  const io = Buffer.alloc(IO_BYTES)
  const scratch = Buffer.alloc(1024)
  const code = (f: () => unknown) => {
    try {
      f()
    } catch (e) {
      // Internal functions: their argument errors keep the addon's code in the message.
      return /^(ERR_[A-Z_]+):/.exec((e as Error).message)?.[1] ?? fromNative(e).code
    }
    return 'no error'
  }
  t.is(
    code(() => storeGet(h, key, 3, Buffer.alloc(8), scratch)),
    'ERR_INVALID_ARGUMENT',
  )
  t.is(
    code(() => storeGet(h, key, 3, io, io)),
    'ERR_INVALID_ARGUMENT',
  )
  t.is(
    code(() => storeGet(h, 'key' as unknown as Buffer, 3, io, scratch)),
    'ERR_INVALID_ARGUMENT',
  )
  t.is(
    code(() => storeGet(h + 1000, key, 3, io, scratch)),
    'ERR_CLOSED',
  )
  t.is(
    code(() => storeGet(h, key, 4, io, scratch)),
    'ERR_INVALID_ARGUMENT',
    'a key length beyond its buffer',
  )
  t.is(storeGet(h, key, 3, io, scratch), -1)
  t.is(
    code(() => storePut(h, io.subarray(0, 16), Buffer.from([2, 0xc0]), -1, -1, Date.now())),
    'ERR_INVALID_ARGUMENT',
  )
  t.is(storeGet(h, key, 3, io, scratch), -1, 'the refused put stored nothing')
  storePut(h, io, Buffer.from([2, 0xc0]), -1, -1, Date.now())
  t.is(storeGet(h, key, 3, io, scratch), 2)
  store.close()
})
