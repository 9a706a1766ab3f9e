import test from 'ava'
import type { ExecutionContext } from 'ava'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { memoize } from '../src-ts/index'
import { sleep, tempDir, uniqueNamespace } from './helpers/env'
import type { FnSpec, Value } from './fixtures/worker-peer'

/*
 * worker_threads sharing one cache: `shared: true` memory, and `backend: 'disk'` (one RocksDB
 * handle per process, shared by its threads). Workers run fixtures/worker-peer.ts through tsx.
 */

const dir = tempDir('workers')
const PEER = join(__dirname, 'fixtures', 'worker-peer.ts')
// Worker entry points are not loaded through `--import` hooks on every Node version: register
// tsx's CommonJS hook inside the worker, then load the TypeScript fixture.
const BOOT = `require(${JSON.stringify(require.resolve('tsx/cjs'))}); require(${JSON.stringify(PEER)})`

type Reply = { id: number; error?: string; [k: string]: unknown }
type Stats = ReturnType<ReturnType<typeof memoize>['stats']>

interface Peer {
  worker: Worker
  threadId: number
  request<R = Reply>(cmd: Record<string, unknown>, onArmed?: () => void): Promise<R & Reply>
}

/** Starts `n` worker threads sharing one control SharedArrayBuffer; resolves once they are ready. */
async function startWorkers(t: ExecutionContext, n: number) {
  const ctl = new Int32Array(new SharedArrayBuffer(16))
  const peers = await Promise.all(
    Array.from({ length: n }, () => {
      const worker = new Worker(BOOT, { eval: true, workerData: { ctl: ctl.buffer } })
      t.teardown(() => worker.terminate())
      const waiting = new Map<number, { resolve(r: Reply): void; reject(e: Error): void; armed?: () => void }>()
      let nextId = 1
      worker.on('error', (e) => {
        for (const w of waiting.values()) w.reject(e)
      })
      return new Promise<Peer>((resolve, reject) => {
        worker.once('error', reject)
        worker.on('message', (m: Reply & { ready?: number; armed?: number }) => {
          if (m.ready !== undefined) {
            resolve({
              worker,
              threadId: m.ready,
              request(cmd, onArmed) {
                const id = nextId++
                return new Promise((res, rej) => {
                  waiting.set(id, { resolve: res as (r: Reply) => void, reject: rej, armed: onArmed })
                  worker.postMessage({ ...cmd, id })
                })
              },
            })
            return
          }
          if (m.armed !== undefined) return waiting.get(m.armed)?.armed?.()
          const w = waiting.get(m.id)
          if (w === undefined) return
          waiting.delete(m.id)
          if (m.error !== undefined) w.reject(new Error(`worker: ${m.error}`))
          else w.resolve(m)
        })
      })
    }),
  )
  return { peers, ctl }
}

/** Waits until `cond` holds; throws after `ms` ("did not hang" bound). */
async function until(what: string, cond: () => boolean, ms = 10_000) {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

/** Resolves with `p`, or rejects when it takes longer than `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)
    }),
  ])
}

test.serial("worker_threads with shared: true see each other's entries", async (t) => {
  const namespace = uniqueNamespace('shared-see')
  // The main thread holds the namespace open too, and must never compute.
  const main = memoize(
    (key: string): Value => {
      throw new Error(`the main thread computed ${key}`)
    },
    { shared: true, namespace },
  )
  const { peers, ctl } = await startWorkers(t, 2)
  const spec: FnSpec = { backend: 'memory', namespace, mode: 'async' }

  const first = await peers[0].request<{ value: Value; stats: Stats }>({ cmd: 'call', spec, key: 'k' })
  t.like(first.value, { key: 'k', by: peers[0].threadId })
  t.is(first.stats.computations, 1)
  t.is(Atomics.load(ctl, 1), 1)

  const seen = await peers[1].request<{ value: Value | null; has: boolean }>({ cmd: 'peek', spec, key: 'k' })
  t.true(seen.has)
  t.deepEqual(seen.value, first.value)
  const second = await peers[1].request<{ value: Value; stats: Stats }>({ cmd: 'call', spec, key: 'k' })
  t.deepEqual(second.value, first.value)
  t.is(second.stats.hits, 1)
  t.is(second.stats.computations, 0)

  // The function is async: a value read in another thread comes back as a Promise.
  t.true(main.has('k'))
  t.deepEqual(await main.peek('k'), first.value)
  t.deepEqual(await main('k'), first.value)
  t.like(main.stats(), { hits: 1, computations: 0 })
  t.false(main.has('other'))
  t.is(Atomics.load(ctl, 1), 1, 'a thread recomputed a shared entry')
})

const departures: [string, (p: Peer) => Promise<unknown>][] = [
  ['terminated', (p) => p.worker.terminate()],
  [
    'closing its function and ending by itself',
    async (p) => {
      const exited = new Promise((resolve) => p.worker.once('exit', resolve))
      await p.request({ cmd: 'exit' })
      return exited
    },
  ],
]

for (const [how, leave] of departures) {
  test.serial(
    `shared: true entries outlive the worker that computed them: a worker started after it has gone gets a hit (${how})`,
    async (t) => {
      // A pool that recycles its workers must not lose the cache with them. Nothing else (the
      // main thread included) holds the namespace open in between.
      const namespace = uniqueNamespace('outlive')
      const spec: FnSpec = { backend: 'memory', namespace, mode: 'async' }
      const first = await startWorkers(t, 1)
      const one = first.peers[0]
      const computed = await one.request<{ value: Value; stats: Stats }>({ cmd: 'call', spec, key: 'k' })
      t.like(computed.stats, { computations: 1, hits: 0 })
      await within(leave(one), 10_000, `the first worker ${how}`)

      const second = await startWorkers(t, 1)
      const two = second.peers[0]
      t.not(two.threadId, one.threadId)
      const again = await two.request<{ value: Value; stats: Stats }>({ cmd: 'call', spec, key: 'k' })
      t.like(again.stats, { hits: 1, computations: 0 }, 'the second worker computed the key again')
      t.deepEqual(again.value, computed.value)
      t.is(Atomics.load(second.ctl, 1), 0)
      await two.request({ cmd: 'close' })
    },
  )
}

type StampedeReply = { values: Value[]; startedAt: number; stats: Stats }

/** `trials` stampedes of `workers` × `callers` on fresh keys: each must compute once. */
async function stampede(t: ExecutionContext, spec: FnSpec, trials: number, callers: number) {
  const { peers, ctl } = await startWorkers(t, 4)
  // Trials in which every worker called before the one computation had finished.
  let contended = 0
  for (let trial = 1; trial <= trials; trial++) {
    Atomics.store(ctl, 1, 0)
    const key = `${spec.mode}-trial-${trial}`
    // Every worker reports "armed" and blocks on ctl[0]; then all are released at once.
    let armed = 0
    let allArmed!: () => void
    const armedAll = new Promise<void>((resolve) => (allArmed = resolve))
    const done = Promise.all(
      peers.map((p) =>
        p.request<StampedeReply>({ cmd: 'stampede', spec, key, callers, gen: trial }, () => {
          if (++armed === peers.length) allArmed()
        }),
      ),
    )
    done.catch(() => undefined)
    await within(armedAll, 10_000, `arming trial ${trial}`)
    Atomics.store(ctl, 0, trial)
    Atomics.notify(ctl, 0)
    const replies = await within(done, 30_000, `stampede trial ${trial}`)
    t.is(Atomics.load(ctl, 1), 1, `trial ${trial}: computed ${Atomics.load(ctl, 1)} times`)
    const values = replies.flatMap((r) => r.values)
    t.is(values.length, peers.length * callers)
    t.is(values[0].key, key)
    t.true(peers.some((p) => p.threadId === values[0].by))
    for (const v of values) t.deepEqual(v, values[0], `trial ${trial}: callers got different values`)
    t.true(replies.every((r) => r.stats.errors === 0))
    if (replies.every((r) => r.startedAt <= values[0].at)) contended++
  }
  // The barrier works (generous: a loaded machine may start a worker late now and then).
  t.true(
    contended >= trials / 2,
    `only ${contended} of ${trials} trials had every worker calling during the computation`,
  )
  await Promise.all(peers.map((p) => p.request({ cmd: 'close' })))
}

test.serial(
  'a stampede across 4 workers computes once (shared: true, async function, 16 callers each, 10 trials)',
  async (t) => {
    await stampede(t, { backend: 'memory', namespace: uniqueNamespace('stampede-async'), mode: 'async' }, 10, 16)
  },
)

test.serial('a stampede across 4 workers computes once (shared: true, sync function, 10 trials)', async (t) => {
  await stampede(t, { backend: 'memory', namespace: uniqueNamespace('stampede-sync'), mode: 'sync' }, 10, 4)
})

test.serial(
  "a stampede across 4 workers computes once (backend: 'disk', async function, 16 callers each, 10 trials)",
  async (t) => {
    const path = join(dir, 'stampede-disk')
    await stampede(t, { backend: 'disk', path, namespace: uniqueNamespace('stampede-disk'), mode: 'async' }, 10, 16)
  },
)

test.serial("a stampede across 4 workers computes once (backend: 'disk', sync function, 10 trials)", async (t) => {
  const path = join(dir, 'stampede-disk-sync')
  await stampede(t, { backend: 'disk', path, namespace: uniqueNamespace('stampede-disk-sync'), mode: 'sync' }, 10, 4)
})

const takeovers: [string, Omit<FnSpec, 'namespace'>][] = [
  ['shared: true, async function', { backend: 'memory', mode: 'async' }],
  ['shared: true, sync function blocking its thread', { backend: 'memory', mode: 'sync' }],
  ["backend: 'disk', async function", { backend: 'disk', path: join(dir, 'takeover-async'), mode: 'async' }],
  [
    "backend: 'disk', sync function blocking its thread",
    { backend: 'disk', path: join(dir, 'takeover-sync'), mode: 'sync' },
  ],
]

for (const [label, partial] of takeovers) {
  test.serial(`a terminated worker's claim is released and a waiter takes over (${label})`, async (t) => {
    const spec: FnSpec = { ...partial, namespace: uniqueNamespace('takeover') }
    const { peers, ctl } = await startWorkers(t, 2)
    const [a, b] = peers

    // A starts computing the key and never finishes.
    const aCall = a.request({ cmd: 'call', spec, key: 'k', behavior: 'block' })
    aCall.catch(() => undefined)
    await until("A's computation to start", () => Atomics.load(ctl, 2) === a.threadId)

    // B asks for the same key and waits for A (its lockTimeout is 60 s).
    let bDone = false
    const bCall = b.request<{ value: Value; stats: Stats }>({ cmd: 'call', spec, key: 'k', behavior: 'slow' })
    void bCall.finally(() => (bDone = true)).catch(() => undefined)
    await sleep(300)
    t.false(bDone, 'B did not wait for the computation A holds')
    t.is(Atomics.load(ctl, 1), 1)

    await within(a.worker.terminate(), 10_000, 'worker.terminate()')
    const r = await within(bCall, 10_000, "B's call after A was terminated")
    t.like(r.value, { key: 'k', by: b.threadId })
    t.is(r.stats.computations, 1)
    t.is(Atomics.load(ctl, 1), 2, 'A computed once and B took over once')

    // The value B computed is the cached one.
    const again = await b.request<{ value: Value | null; has: boolean }>({ cmd: 'peek', spec, key: 'k' })
    t.true(again.has)
    t.deepEqual(again.value, r.value)
    await b.request({ cmd: 'close' })
  })
}

test.serial(
  "shared: true: a call waiting for another worker's lock when its function is closed neither hangs nor leaks the lock",
  async (t) => {
    const namespace = uniqueNamespace('close-wait')
    const spec: FnSpec = { backend: 'memory', namespace, mode: 'sync' }
    const { peers, ctl } = await startWorkers(t, 1)
    const [a] = peers
    // A holds the key's lock and never finishes.
    const aCall = a.request({ cmd: 'call', spec, key: 'k', behavior: 'block' })
    aCall.catch(() => undefined)
    await until("A's computation to start", () => Atomics.load(ctl, 2) === a.threadId)

    // f waits for A's lock without blocking this thread.
    const f = memoize(async (_k: string) => 'main', { shared: true, namespace, lockTimeout: 20_000 })
    let settled = false
    const pending = f('k')
    void pending.finally(() => (settled = true)).catch(() => undefined)
    await sleep(100)
    t.false(settled, "f did not wait for A's lock")
    await f.close()

    // A's lock is released when it is terminated: f's pending wait takes it, after close().
    await within(a.worker.terminate(), 10_000, 'worker.terminate()')
    t.is(await within(pending, 10_000, "f's pending call after close()"), 'main', 'it computes, storing nothing')

    // Another function of the namespace in this thread gets the key at once: nobody holds its lock.
    const g = memoize((_k: string) => 'g', { shared: true, namespace, lockTimeout: 1500 })
    t.teardown(() => g.close())
    t.is(g('k'), 'g')
    t.is(g.stats().waits, 0, 'g waited for the lock the closed function took (a timed-out wait counts one)')
    t.is(g.stats().computations, 1, 'the closed function stored nothing: g computes')
  },
)
