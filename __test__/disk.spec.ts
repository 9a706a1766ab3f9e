import test from 'ava'
import { execFile } from 'node:child_process'
import { statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { CachetteError, memoize } from '../src-ts/index'
import type { MemoizeOptions, Serializer } from '../src-ts/index'
import { sleep, tempDir, uniqueNamespace } from './helpers/env'
import { track, waitFor } from './helpers/store-suite'

/*
 * The disk backend: entries survive the process and are read by others; bad input (results
 * that cannot be encoded, a directory that cannot be written, entries written by another
 * serializer) gets a clear error or the documented fallback, and no other entry is damaged.
 */

const dir = tempDir('disk')
const INDEX = join(__dirname, '..', 'src-ts', 'index.ts')
const run = promisify(execFile)

/** Disk options with a fresh namespace. */
const disk = (extra: Omit<MemoizeOptions, 'key'> = {}): MemoizeOptions => ({
  backend: 'disk',
  path: dir,
  namespace: uniqueNamespace('disk'),
  ...extra,
})

/** Runs `body` in a child process (tsx, with `memoize`, `path`, `namespace` in scope); returns its stdout as JSON. */
async function inChild(body: string, namespace: string): Promise<unknown> {
  const script = `
    const { memoize } = require(${JSON.stringify(INDEX)})
    const path = process.argv[1], namespace = process.argv[2]
    ;(async () => { ${body} })().then(
      (r) => process.stdout.write(JSON.stringify(r)),
      (e) => { process.stderr.write(String(e && e.stack || e)); process.exit(1) },
    )
  `
  const { stdout } = await run(process.execPath, ['-r', require.resolve('tsx/cjs'), '-e', script, dir, namespace], {
    timeout: 60_000,
  })
  return JSON.parse(stdout)
}

/** Collects the process warnings whose message mentions `needle` while `body` runs. */
async function warningsDuring(needle: string, body: () => unknown): Promise<string[]> {
  const seen: string[] = []
  const listener = (w: Error) => {
    if (w.message.includes(needle)) seen.push(`${w.name}: ${w.message}`)
  }
  process.on('warning', listener)
  try {
    await body()
    await sleep(20) // warnings are emitted on the next tick
  } finally {
    process.off('warning', listener)
  }
  return seen
}

test('the cache directory is created with mode 0700', (t) => {
  const path = join(dir, 'created', 'cache')
  const f = track(memoize((x: number) => x, { backend: 'disk', path, namespace: 'mode' }))
  f(1)
  t.is(statSync(path).mode & 0o777, 0o700)
})

test('a value written and flushed by another process is read here without computing, Map and Date intact', async (t) => {
  const namespace = uniqueNamespace('from-child')
  const written = await inChild(
    `
    const f = memoize((k) => ({ k, when: new Date(1_700_000_000_000), tags: new Map([['a', 1n]]) }), { backend: 'disk', path, namespace })
    f('key')
    await f.close()
    return 'written'
    `,
    namespace,
  )
  t.is(written, 'written')
  const reader = track(
    memoize((_k: string): unknown => t.fail('must read the child process entry'), {
      backend: 'disk',
      path: dir,
      namespace,
    }),
  )
  t.deepEqual(reader('key'), { k: 'key', when: new Date(1_700_000_000_000), tags: new Map([['a', 1n]]) })
})

test('a value flushed here is read by another process while this one keeps the directory open', async (t) => {
  const opts = disk({ durability: 'sync' })
  const f = track(memoize((k: string) => ({ k, big: 2n ** 70n }), opts))
  f('key')
  await f.flush()
  const seen = await inChild(
    `
    let computed = 0
    const g = memoize((k) => { computed++; return 'wrong' }, { backend: 'disk', path, namespace })
    const v = g('key')
    await g.close()
    return { computed, k: v.k, big: String(v.big) }
    `,
    opts.namespace!,
  )
  t.deepEqual(seen, { computed: 0, k: 'key', big: String(2n ** 70n) })
})

test("an async function's entry read by a fresh handle comes back as a Promise, a sync function's as a value", async (t) => {
  const asyncOpts = disk()
  const syncOpts = disk()
  const a = track(memoize(async (x: number) => x + 1, asyncOpts))
  const s = track(memoize((x: number) => x + 1, syncOpts))
  await a(1)
  s(1)
  const a2 = track(memoize((_x: number): Promise<number> => t.fail('must not compute'), asyncOpts))
  const s2 = track(memoize((_x: number): number => t.fail('must not compute'), syncOpts))
  const hit = a2(1)
  t.true(hit instanceof Promise)
  t.is(await hit, 2)
  t.is(s2(1), 2)
})

test('namespaces in one directory never share entries, and clear() of one leaves the other', (t) => {
  const a = track(memoize((x: number) => `a${x}`, disk()))
  const b = track(memoize((x: number) => `b${x}`, disk()))
  t.is(a(1), 'a1')
  t.is(b(1), 'b1')
  a.clear()
  t.false(a.has(1))
  t.true(b.has(1))
  t.is(b.stats().size, 1)
})

/** A result the default serializer cannot encode, and one it should not silently alter. */
const unencodable: [string, () => unknown][] = [
  ['a symbol inside the result', () => ({ id: Symbol('s') })],
  ['a function inside the result', () => ({ id: 1, format: () => 'x' })],
]

for (const [what, make] of unencodable) {
  test(`${what}: the value is returned, not stored, counted in errors and warned about; other entries stay`, async (t) => {
    const opts = disk()
    let calls = 0
    const f = track(memoize((k: string) => (calls++, k === 'bad' ? make() : { k }), opts))
    f('good')
    let bad: unknown
    const warnings = await warningsDuring(opts.namespace!, () => {
      bad = f('bad')
    })
    t.is(typeof bad, 'object')
    t.false(f.has('bad'), 'not stored')
    t.is(f.stats().errors, 1)
    t.is(warnings.length, 1)
    t.regex(warnings[0], /could not be encoded/)
    f('bad')
    t.is(calls, 3, 'computed again: nothing was stored')
    t.deepEqual(f('good'), { k: 'good' })
    t.is(calls, 3)
  })
}

class Secret {
  constructor(readonly value: string) {}
}

/** JSON, except that it refuses to encode a Secret. */
const refusing: Serializer = {
  encode(v) {
    if ((v as { secret?: unknown })?.secret instanceof Secret) throw new Error('a Secret must not be written to disk')
    return Buffer.from(JSON.stringify(v))
  },
  decode: (b) => JSON.parse(Buffer.from(b).toString()),
}

test('a custom serializer that throws: the value is returned and not stored, other entries stay', (t) => {
  let calls = 0
  const f = track(
    memoize(
      (k: string) => (calls++, k === 'secret' ? { secret: new Secret('s') } : { k }),
      disk({ serializer: refusing }),
    ),
  )
  f('plain')
  const r = f('secret')
  t.true(r.secret instanceof Secret)
  t.false(f.has('secret'))
  t.is(f.stats().errors, 1)
  t.true(f.has('plain'))
  f('secret')
  t.is(calls, 3)
})

test("onBackendError: 'throw' turns an unserializable result into ERR_UNSERIALIZABLE_RESULT and stores nothing", (t) => {
  let calls = 0
  const f = track(
    memoize(
      (k: string) => (calls++, k === 'secret' ? { secret: new Secret('s') } : { k }),
      disk({ serializer: refusing, onBackendError: 'throw' }),
    ),
  )
  f('plain')
  const e = t.throws(() => f('secret'), { instanceOf: CachetteError })
  t.is(e?.code, 'ERR_UNSERIALIZABLE_RESULT')
  t.regex(String((e?.cause as Error)?.message), /must not be written/)
  t.false(f.has('secret'))
  t.true(f.has('plain'))
  t.throws(() => f('secret'), { instanceOf: CachetteError })
  t.is(calls, 3)
})

test('an unwritable cache path: the function works uncached and one warning names ERR_BACKEND_UNAVAILABLE', async (t) => {
  const file = join(dir, 'a-regular-file')
  writeFileSync(file, 'not a directory')
  const namespace = uniqueNamespace('unwritable')
  let calls = 0
  let f!: ReturnType<typeof memoize<(x: number) => number>>
  const warnings = await warningsDuring(namespace, () => {
    f = track(memoize((x: number) => (calls++, x * 2), { backend: 'disk', path: join(file, 'cache'), namespace }))
    t.is(f(2), 4)
    t.is(f(2), 4)
  })
  t.is(calls, 2, 'nothing is cached')
  t.false(f.has(2))
  t.true(f.stats().errors >= 1)
  t.is(warnings.length, 1)
  t.regex(warnings[0], /ERR_BACKEND_UNAVAILABLE/)
})

const serializers = ['json', 'msgpack', 'v8'] as const

for (const writer of serializers) {
  for (const reader of serializers.filter((s) => s !== writer)) {
    test(`an entry written with serializer '${writer}' reads as a miss with '${reader}' and is recomputed`, (t) => {
      const namespace = uniqueNamespace('foreign')
      const w = track(
        memoize((_k: string) => ({ by: writer }), { backend: 'disk', path: dir, namespace, serializer: writer }),
      )
      w('k')
      w('other')
      let calls = 0
      const r = track(
        memoize((_k: string) => (calls++, { by: reader }), {
          backend: 'disk',
          path: dir,
          namespace,
          serializer: reader,
        }),
      )
      t.false(r.has('k'))
      t.is(r.peek('k'), undefined)
      t.deepEqual(r('k'), { by: reader })
      t.deepEqual(r('k'), { by: reader })
      t.is(calls, 1)
      t.deepEqual(w('other'), { by: writer }, 'the entry it did not touch is intact')
    })
  }
}

test('an entry its serializer cannot decode is treated as a miss, without throwing', (t) => {
  const broken: Serializer = {
    encode: (v) => Buffer.from(JSON.stringify(v)),
    decode: () => {
      throw new Error('damaged')
    },
  }
  let calls = 0
  const f = track(memoize((x: number) => (calls++, x), disk({ serializer: broken })))
  t.is(f(1), 1)
  t.false(f.has(1))
  t.is(f(1), 1)
  t.is(calls, 2)
})

test('flush() resolves once the write is durable, for both durability modes', async (t) => {
  for (const durability of ['process', 'sync'] as const) {
    const opts = disk({ durability })
    const f = track(memoize((x: number) => ({ x }), opts))
    f(1)
    await t.notThrowsAsync(f.flush())
    await f.close()
    const g = track(memoize((_x: number): { x: number } => t.fail('must read the flushed value'), opts))
    t.deepEqual(g(1), { x: 1 }, durability)
  }
})

test('close() of one handle leaves other handles of the directory working', async (t) => {
  const opts = disk()
  const a = track(memoize((x: number) => x, opts))
  const b = track(memoize((x: number) => x * 10, disk()))
  a(1)
  await a.close()
  t.is(b(1), 10)
  await waitFor(() => b.has(1))
  t.throws(() => a(1), { instanceOf: CachetteError, code: 'ERR_CLOSED' })
})

test('a process exits even when its cache directory was removed while a store is open', async (t) => {
  const path = join(tempDir('disk-removed'), 'cache')
  const script = `
    const { rmSync } = require('node:fs')
    const { memoize } = require(${JSON.stringify(INDEX)})
    const f = memoize((x) => x, { backend: 'disk', path: process.argv[1], namespace: 'gone' })
    f(1)
    process.on('exit', () => rmSync(process.argv[1], { recursive: true, force: true }))
  `
  const started = Date.now()
  const exit = await run(process.execPath, ['-r', require.resolve('tsx/cjs'), '-e', script, path], {
    timeout: 20_000,
  }).then(
    () => 'exited',
    (e: { killed?: boolean; code?: unknown }) => (e.killed ? 'hung: killed after 20 s' : `failed: ${String(e.code)}`),
  )
  t.is(exit, 'exited', `after ${Date.now() - started} ms`)
})

test('clearLocks() of one function leaves the locks of the other functions of the directory', async (t) => {
  // Locks are released per function, not for every lock this thread holds in the directory.
  const namespace = uniqueNamespace('clear-locks')
  let computations = 0
  const body = async (x: number) => {
    computations++
    await sleep(200)
    return x
  }
  const f = track(memoize(body, { backend: 'disk', path: dir, namespace }))
  const f2 = track(memoize(body, { backend: 'disk', path: dir, namespace })) // the entries of f
  const g = track(memoize(async (x: number) => x, { backend: 'disk', path: dir, namespace: namespace + '-other' }))
  const first = f(1)
  await waitFor(() => computations === 1) // f holds the key's lock
  g.clearLocks()
  const second = f2(1) // waits for f's computation of the key, then reads its value
  t.deepEqual(await Promise.all([first, second]), [1, 1])
  t.is(computations, 1)
})
