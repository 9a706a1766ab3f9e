import test from 'ava'
import { spawn } from 'node:child_process'
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { CachetteError, errorCodes, memoize } from '../src-ts/index'
import { fromNative } from '../src-ts/errors'
import { IO_BYTES, openDisk, openShared, storeGet, storePut } from '../src-ts/native'
import { tempDir, uniqueNamespace } from './helpers/env'
import { freePort } from './helpers/servers'
import { track } from './helpers/store-suite'

/*
 * Error codes: every code the native binding can raise is in `errorCodes` and the README's
 * table, and each one that a path can reach is raised here, through the public API where one
 * leads to it (a `CachetteError` with the code, the native error as its `cause`), else through
 * src-ts/native (the native error carries the code itself).
 */

const dir = tempDir('errors')
const root = join(__dirname, '..')

/** `{ code }` of a native error: the binding sets it on the thrown error itself. */
const code = (e: unknown) => (e as { code?: unknown } | undefined)?.code

test('errorCodes lists exactly the codes of the README errors table', (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const documented = [...readme.matchAll(/^\| `(ERR_[A-Z_]+)` \|/gm)].map((m) => m[1])
  t.true(documented.length > 0, 'no errors table found in README.md')
  t.deepEqual([...documented].sort(), Object.keys(errorCodes).sort())
  t.is(new Set(documented).size, documented.length, 'a code is listed twice')
  for (const [k, v] of Object.entries(errorCodes)) t.is<string, string>(v, k)
})

test('errorCodes holds every code the native core and binding can raise', (t) => {
  const sources = [
    join(root, 'crates', 'cachette-core', 'src', 'error.rs'),
    ...readdirSync(join(root, 'crates', 'cachette-node', 'src')).map((f) =>
      join(root, 'crates', 'cachette-node', 'src', f),
    ),
  ].filter((f) => f.endsWith('.rs'))
  const raised = new Set(
    sources.flatMap((f) => [...readFileSync(f, 'utf8').matchAll(/"(ERR_[A-Z_]+)"/g)].map((m) => m[1])),
  )
  t.true(raised.size >= 9, `found only ${[...raised].join(', ')}`)
  for (const c of raised) t.true(c in errorCodes, `${c} is raised natively but missing from errorCodes`)
})

test('fromNative keeps every known code, the native error as cause, and maps an unknown one to ERR_BACKEND_IO', (t) => {
  // ERR_LOCK_TIMEOUT and ERR_COMPUTATION_FAILED have no path that raises them today (waits
  // that time out compute instead; a failed computation reaches the waiters as its own error):
  // this is where their mapping is held.
  for (const c of Object.keys(errorCodes)) {
    const raw = Object.assign(new Error(`native ${c}`), { code: c })
    const e = fromNative(raw)
    t.true(e instanceof CachetteError, c)
    t.is<string, string>(e.code, c)
    t.is(e.message, `native ${c}`)
    t.is(e.cause, raw)
  }
  t.like(fromNative({ code: 'ERR_LOCK_TIMEOUT', message: 'a Failure object' }), {
    code: 'ERR_LOCK_TIMEOUT',
    message: 'a Failure object',
  })
  const unknown = Object.assign(new Error('napi_pending_exception'), { code: 'GenericFailure' })
  t.like(fromNative(unknown), { code: 'ERR_BACKEND_IO', message: 'napi_pending_exception', cause: unknown })
  t.like(fromNative(new TypeError('no code')), { code: 'ERR_BACKEND_IO', message: 'no code' })
  t.like(fromNative('a string'), { code: 'ERR_BACKEND_IO', message: 'a string' })
  const already = new CachetteError('ERR_CLOSED', 'closed')
  t.is(fromNative(already), already)
})

test('the native hot path refuses a short io buffer, overlapping buffers or a non-buffer with ERR_INVALID_ARGUMENT and stores nothing', (t) => {
  const store = openShared(uniqueNamespace('raw'), undefined, undefined)
  t.teardown(() => store.close())
  const h = store.handle()
  const key = Buffer.from([1, 2, 3])
  const io = Buffer.alloc(IO_BYTES)
  const scratch = Buffer.alloc(1024)
  const invalid = { code: 'ERR_INVALID_ARGUMENT' }
  t.throws(() => storeGet(h, key, 3, Buffer.alloc(8), scratch), invalid, 'a short io buffer')
  t.throws(() => storeGet(h, key, 3, io, io), invalid, 'io and scratch overlap')
  t.throws(() => storeGet(h, 'key' as unknown as Buffer, 3, io, scratch), invalid, 'a string for a key')
  t.throws(() => storeGet(h, key, 4, io, scratch), invalid, 'a key length beyond its buffer')
  t.throws(() => storeGet(h + 1000, key, 3, io, scratch), { code: 'ERR_CLOSED' }, 'a handle nobody opened')
  t.is(storeGet(h, key, 3, io, scratch), -1)
  t.throws(() => storePut(h, io.subarray(0, 16), Buffer.from([2, 0xc0]), -1, -1, Date.now()), invalid)
  t.is(storeGet(h, key, 3, io, scratch), -1, 'the refused put stored nothing')
  storePut(h, io, Buffer.from([2, 0xc0]), -1, -1, Date.now())
  t.is(storeGet(h, key, 3, io, scratch), 2)
})

test('a native store used after close() throws ERR_CLOSED', (t) => {
  const store = openShared(uniqueNamespace('closed-store'), undefined, undefined)
  const h = store.handle()
  store.close()
  const io = Buffer.alloc(IO_BYTES)
  for (const [what, call] of [
    ['size()', () => store.size()],
    ['handle()', () => store.handle()],
    ['clear()', () => store.clear()],
    ['storeGet() with its old handle', () => storeGet(h, Buffer.from([1]), 1, io, Buffer.alloc(64))],
  ] as const) {
    const e = t.throws(call, { code: 'ERR_CLOSED' }, what)
    t.is(fromNative(e).code, 'ERR_CLOSED', what)
  }
})

test('a closed memoized function throws CachetteError ERR_CLOSED on every call', async (t) => {
  const plain = memoize((x: number) => x)
  const shared = memoize((x: number) => x, { shared: true, namespace: uniqueNamespace('closed') })
  for (const f of [plain, shared]) {
    t.is(f(1), 1)
    await f.close()
    t.throws(() => f(1), { instanceOf: CachetteError, code: 'ERR_CLOSED' })
    t.throws(() => f(2), { instanceOf: CachetteError, code: 'ERR_CLOSED' })
  }
})

test("an unwritable disk path with onBackendError: 'throw' fails at memoize() time with ERR_BACKEND_UNAVAILABLE", (t) => {
  const file = join(dir, 'a-regular-file')
  writeFileSync(file, 'not a directory')
  const path = join(file, 'cache')
  let calls = 0
  const e = t.throws(
    () => memoize((x: number) => (calls++, x), { backend: 'disk', path, namespace: 'x', onBackendError: 'throw' }),
    { instanceOf: CachetteError, code: 'ERR_BACKEND_UNAVAILABLE' },
  )
  t.true(e?.message.includes(path), e?.message)
  t.is(code(e?.cause), 'ERR_BACKEND_UNAVAILABLE', 'the native error carries the code too')
  t.is(calls, 0)
  t.throws(() => openDisk(path, 'x'), { code: 'ERR_BACKEND_UNAVAILABLE' }, 'the native call')
})

test("a Redis URL on a port nothing listens on: with onBackendError: 'throw', each call rejects with ERR_BACKEND_UNAVAILABLE", async (t) => {
  const port = await freePort()
  let calls = 0
  const f = memoize(async (k: number) => (calls++, k), {
    backend: 'redis',
    url: `redis://127.0.0.1:${port}`,
    namespace: uniqueNamespace('down'),
    onBackendError: 'throw',
  })
  t.teardown(() => f.close())
  for (const k of [1, 2]) {
    const e = await t.throwsAsync(f(k), { instanceOf: CachetteError, code: 'ERR_BACKEND_UNAVAILABLE' })
    t.regex(e?.message ?? '', new RegExp(`127\\.0\\.0\\.1:${port}`))
  }
  t.is(calls, 0)
})

test('a Redis URL the core cannot use is a TypeError at memoize() time with an ERR_INVALID_OPTION cause', (t) => {
  // A URL that parses as a URL but names no Redis database.
  const url = 'redis://127.0.0.1:6379/notadb'
  const e = t.throws(() => memoize(async (k: number) => k, { backend: 'redis', url, namespace: 'x' }), {
    instanceOf: TypeError,
    message: /redis:\/\/127\.0\.0\.1:6379\/notadb/,
  })
  t.false(e instanceof CachetteError)
  t.is(code(e?.cause), 'ERR_INVALID_OPTION')
  t.is(fromNative(e?.cause).code, 'ERR_INVALID_OPTION')
})

test('an argument without value identity throws CachetteError ERR_UNKEYABLE_ARGUMENT naming it, before the function runs', (t) => {
  let calls = 0
  const f = memoize((_o: { user: { session: unknown } }) => ++calls)
  const e = t.throws(() => f({ user: { session: () => 1 } }), {
    instanceOf: CachetteError,
    code: 'ERR_UNKEYABLE_ARGUMENT',
  })
  t.regex(e?.message ?? '', /args\[0\]\.user\.session/)
  t.is(calls, 0)
})

test("a result that cannot be encoded, with onBackendError: 'throw', throws CachetteError ERR_UNSERIALIZABLE_RESULT and stores nothing", (t) => {
  let calls = 0
  const f = track(
    memoize((_k: string) => (calls++, { format: () => 'x' }), {
      shared: true,
      namespace: uniqueNamespace('unserializable'),
      onBackendError: 'throw',
    }),
  )
  t.throws(() => f('k'), { instanceOf: CachetteError, code: 'ERR_UNSERIALIZABLE_RESULT' })
  t.false(f.has('k'))
  t.throws(() => f('k'), { instanceOf: CachetteError, code: 'ERR_UNSERIALIZABLE_RESULT' })
  t.is(calls, 2)
})

test("a store that fails inside (an SQL table of another layout), with onBackendError: 'throw', rejects with ERR_BACKEND_IO", async (t) => {
  // A table of the configured name that is not cachette's: the statements on it fail.
  const file = join(dir, 'foreign.sqlite')
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Database = require('better-sqlite3') as new (file: string) => { exec(sql: string): void; close(): void }
  const db = new Database(file)
  db.exec('CREATE TABLE not_a_cache (x INTEGER)')
  db.close()
  let calls = 0
  const f = memoize(async (k: number) => (calls++, k), {
    backend: 'sql',
    url: 'sqlite://' + file,
    table: 'not_a_cache',
    namespace: uniqueNamespace('foreign-table'),
    onBackendError: 'throw',
  })
  t.teardown(() => f.close())
  const e = await t.throwsAsync(f(1), { instanceOf: CachetteError, code: 'ERR_BACKEND_IO' })
  t.regex(e?.message ?? '', /expires_at/)
  t.is(calls, 0)
})

test.serial(
  "a disk directory whose owner process does not answer: with onBackendError: 'throw', memoize() fails with ERR_STORE_LOCKED",
  async (t) => {
    const path = join(dir, 'owned')
    const dist = require.resolve('../dist/index.js')
    // The owner holds the directory but its socket is gone: no guest can reach it.
    const owner = spawn(
      process.execPath,
      [
        '-e',
        `const { memoize } = require(${JSON.stringify(dist)})
         const f = memoize((x) => x, { backend: 'disk', path: ${JSON.stringify(path)}, namespace: 'owner' })
         f(1)
         process.stdout.write('ready\\n')
         setInterval(() => {}, 1000)`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    t.teardown(() => {
      if (owner.exitCode === null && owner.signalCode === null) owner.kill('SIGKILL')
    })
    const lines = createInterface({ input: owner.stdout })[Symbol.asyncIterator]()
    t.is((await lines.next()).value, 'ready')
    rmSync(join(path, '.owner.sock'))
    let calls = 0
    // Blocks for the 10 s election timeout.
    const e = t.throws(
      () =>
        memoize((x: number) => (calls++, x), {
          backend: 'disk',
          path,
          namespace: 'guest',
          onBackendError: 'throw',
        }),
      { instanceOf: CachetteError, code: 'ERR_STORE_LOCKED' },
    )
    t.true(e?.message.includes(path), e?.message)
    t.is(code(e?.cause), 'ERR_STORE_LOCKED')
    t.is(calls, 0)
  },
)
