import test from 'ava'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { configure, memoize } from '../src-ts/index'
import type { MemoizeOptions } from '../src-ts/index'
import { tempDir, uniqueNamespace } from './helpers/env'
import { track } from './helpers/store-suite'

/*
 * Options are validated once, at memoize() time: misuse throws a TypeError there, naming the
 * option, and never at the first call. configure() sets defaults and the master switch.
 */

const dir = tempDir('options')
const named = (x: number) => x

/** [what, options, message the TypeError must match] */
const invalid: [string, unknown, RegExp][] = [
  ['an unknown option', { ttll: 5 }, /^unknown option 'ttll'/],
  ['a url on the memory backend', { url: 'redis://localhost' }, /^url applies to backends 'redis' and 'sql'/],
  ['tags (a later version)', { tags: ['a'] }, /^unknown option 'tags' \(not available in this version\)/],
  ['options that are not an object', null, /^options must be an object/],
  ["ttl '10 minutes'", { ttl: '10 minutes' }, /^ttl must be a non-negative number of ms or a string like '90s'/],
  ['ttl -1', { ttl: -1 }, /^ttl must be a non-negative number/],
  ['ttl NaN', { ttl: NaN }, /^ttl must be a non-negative number/],
  ['ttl 0', { ttl: 0 }, /^ttl must be greater than 0/],
  ["backend 'nope'", { backend: 'nope' }, /^backend must be 'memory', 'disk', 'redis' or 'sql' \(got "nope"\)/],
  ["backend 'sql' without a url", { backend: 'sql' }, /^backend 'sql' needs a url/],
  ['a redis url on sql', { backend: 'sql', url: 'redis://h' }, /^url of backend 'sql' must start with postgres:\/\//],
  [
    'a postgres url on redis',
    { backend: 'redis', url: 'postgres://h/db' },
    /^url of backend 'redis' must start with redis:\/\//,
  ],
  ['a url that is not one', { backend: 'redis', url: 'localhost:6379' }, /^url must be a URL string/],
  ['an empty url list', { backend: 'redis', url: [] }, /^url must be a URL string/],
  ['several sql urls', { backend: 'sql', url: ['sqlite://a', 'sqlite://b'] }, /^backend 'sql' takes one url/],
  [
    'a table that is not an identifier',
    { backend: 'sql', url: 'sqlite://x.db', table: 'cache; DROP TABLE users' },
    /^table must be a plain SQL identifier/,
  ],
  ['a table on redis', { backend: 'redis', table: 't' }, /^table applies to backend 'sql'/],
  ['a prefix with a hash tag brace', { backend: 'redis', prefix: 'a{b}' }, /^prefix must be a string without \{ or \}/],
  ['a prefix with a lone surrogate', { backend: 'redis', prefix: 'p\uD800:' }, /^prefix must be well-formed Unicode/],
  [
    'a prefix on sql',
    { backend: 'sql', url: 'sqlite://x.db', prefix: 'p' },
    /^cluster and prefix apply to backend 'redis'/,
  ],
  ["cluster 'yes'", { backend: 'redis', cluster: 'yes' }, /^cluster must be a boolean/],
  ['a lease under 100 ms', { backend: 'redis', lease: 10 }, /^lease must be at least 100 ms/],
  ['backendTimeout 0', { backend: 'redis', backendTimeout: 0 }, /^backendTimeout must be at least 1 ms/],
  [
    "backendTimeout 'soon'",
    { backend: 'sql', url: 'sqlite://x.db', backendTimeout: 'soon' },
    /^backendTimeout must be a non-negative number of ms or a string like '90s'/,
  ],
  ['backendTimeout -5', { backend: 'redis', backendTimeout: -5 }, /^backendTimeout must be a non-negative number/],
  [
    'backendTimeout on the memory backend',
    { backendTimeout: 100 },
    /^backendTimeout applies to backends 'redis' and 'sql'/,
  ],
  [
    'maxEntries on redis',
    { backend: 'redis', maxEntries: 5 },
    /^maxEntries and maxBytes bound the memory backend; bound backend 'redis' with a ttl/,
  ],
  ['a redis url the client refuses', { backend: 'redis', url: 'redis://h:notaport' }, /redis:\/\/h:notaport/],
  ['maxEntries 0', { maxEntries: 0 }, /^maxEntries must be a positive integer if specified$/],
  ['maxEntries 1.5', { maxEntries: 1.5 }, /^maxEntries must be a positive integer if specified$/],
  ["maxEntries '10'", { maxEntries: '10' }, /^maxEntries must be a positive integer if specified$/],
  ['maxBytes -1', { maxBytes: -1 }, /^maxBytes must be a positive integer if specified$/],
  ['maxValueBytes 0.5', { maxValueBytes: 0.5 }, /^maxValueBytes must be a positive integer if specified$/],
  [
    'shared with disk',
    { backend: 'disk', path: dir, shared: true, namespace: 'x' },
    /^shared applies to backend 'memory' only/,
  ],
  ["shared 'yes'", { shared: 'yes' }, /^shared must be a boolean/],
  ['staleWhileRevalidate without ttl', { staleWhileRevalidate: true }, /^staleWhileRevalidate needs a ttl/],
  [
    "staleWhileRevalidate 'soon'",
    { ttl: 10, staleWhileRevalidate: 'soon' },
    /^staleWhileRevalidate must be a non-negative number/,
  ],
  [
    "serializer 'yaml'",
    { serializer: 'yaml' },
    /^serializer must be 'msgpack', 'v8', 'json' or an object with encode and decode functions/,
  ],
  ['a serializer without decode', { serializer: { encode: () => new Uint8Array() } }, /^serializer must be/],
  ['key that is not a function', { key: 'id' }, /^key must be a function/],
  ["cacheUndefined 'no'", { cacheUndefined: 'no' }, /^cacheUndefined must be a boolean/],
  ["onBackendError 'ignore'", { onBackendError: 'ignore' }, /^onBackendError must be 'fallback' or 'throw'/],
  ["durability 'fast'", { durability: 'fast' }, /^durability must be 'process' or 'sync'/],
  [
    'dependsOn that is not an array of memoized functions',
    { dependsOn: [{}] },
    /^dependsOn must be an array of memoized functions/,
  ],
  ['an empty namespace', { namespace: '' }, /^namespace must be a non-empty string/],
  ['an empty path', { backend: 'disk', path: '' }, /^path must be a non-empty string/],
  ["lockTimeout '1 minute'", { lockTimeout: '1 minute' }, /^lockTimeout must be a non-negative number/],
  [
    'an integrityKey on the memory backend',
    { integrityKey: 'k'.repeat(32) },
    /^integrityKey applies to backends 'disk', 'redis' and 'sql'/,
  ],
  [
    'an integrityKey with shared: true',
    { shared: true, namespace: 'x', integrityKey: 'k'.repeat(32) },
    /^integrityKey applies to backends 'disk', 'redis' and 'sql'/,
  ],
  [
    'an integrityKey of 31 bytes',
    { backend: 'redis', integrityKey: 'k'.repeat(31) },
    /^integrityKey must be a string or Uint8Array of at least 32 bytes/,
  ],
  [
    'an integrityKey of 31 bytes in a Buffer',
    { backend: 'disk', path: dir, namespace: 'x', integrityKey: Buffer.alloc(31, 1) },
    /^integrityKey must be a string or Uint8Array of at least 32 bytes/,
  ],
  [
    'an integrityKey that is a number',
    { backend: 'sql', url: 'sqlite://x.db', integrityKey: 12345 },
    /^integrityKey must be a string or Uint8Array of at least 32 bytes/,
  ],
]

for (const [what, options, message] of invalid) {
  test(`memoize() throws a TypeError at once for ${what}`, (t) => {
    let calls = 0
    const fn = (x: number) => (calls++, x)
    t.throws(() => memoize(fn, options as MemoizeOptions), { instanceOf: TypeError, message })
    t.is(calls, 0)
  })
}

test('memoize() throws a TypeError for an anonymous function on disk or shared without a namespace', (t) => {
  t.throws(() => memoize((x: number) => x, { backend: 'disk', path: dir }), {
    instanceOf: TypeError,
    message: /anonymous function on backend 'disk' needs a namespace option/,
  })
  t.throws(() => memoize((x: number) => x, { shared: true }), {
    instanceOf: TypeError,
    message: /anonymous function on a shared memory cache needs a namespace option/,
  })
  t.notThrows(() =>
    track(memoize((x: number) => x, { backend: 'disk', path: dir, namespace: uniqueNamespace('anon') })),
  )
})

test('memoize() throws a TypeError when given something other than a function', (t) => {
  t.throws(() => memoize(42 as unknown as () => void), { instanceOf: TypeError, message: 'memoize() takes a function' })
})

test('memoize() accepts every documented duration form', (t) => {
  for (const ttl of [1, 1.5, '500ms', '90s', '10m', '1h', '2d', '0.5s'] as const) {
    t.notThrows(() => memoize(named, { ttl, staleWhileRevalidate: '1m', lockTimeout: '5s' }), String(ttl))
  }
})

test('with() throws a TypeError for an unknown per-call option or a bad maxAge', (t) => {
  const f = memoize(named)
  t.throws(() => f.with({ maxage: 5 } as never), { instanceOf: TypeError, message: "unknown per-call option 'maxage'" })
  t.throws(() => f.with({ maxAge: 'soon' } as never), { instanceOf: TypeError, message: /^maxAge must be/ })
  t.throws(() => f.with(null as never), { instanceOf: TypeError, message: 'with() takes an options object' })
})

test('configure({ enabled: false }) makes later memoized functions call through', (t) => {
  let calls = 0
  let f: ReturnType<typeof memoize<(x: number) => number>>
  configure({ enabled: false })
  try {
    f = memoize((x: number) => (calls++, x))
  } finally {
    configure({ enabled: true })
  }
  f(1)
  f(1)
  t.is(calls, 2)
  t.false(f.has(1))
  const g = memoize((x: number) => (calls++, x))
  g(1)
  g(1)
  t.is(calls, 3, 'enabled again for functions memoized afterwards')
})

test('configure() defaults apply to later memoize() calls and their own options win', async (t) => {
  const namespace = uniqueNamespace('configured')
  let f: ReturnType<typeof memoize<(x: number) => number>>
  let g: ReturnType<typeof memoize<(x: number) => { x: number }>>
  configure({ backend: 'disk', path: dir })
  try {
    f = track(memoize((x: number) => x, { namespace }))
    g = memoize((x: number) => ({ x }), { backend: 'memory' })
  } finally {
    configure({ backend: undefined, path: undefined })
  }
  f(1)
  await f.flush()
  const reader = track(
    memoize((_x: number): number => t.fail('must read what f stored on disk'), {
      backend: 'disk',
      path: dir,
      namespace,
    }),
  )
  t.is(reader(1), 1)
  t.is(g(1), g(1), 'g holds its values in memory (a disk hit would be a copy)')
})

test('configure() with an invalid option throws a TypeError and changes nothing', (t) => {
  let calls = 0
  let f: ReturnType<typeof memoize<(x: number) => number>>
  try {
    t.throws(() => configure({ enabled: false, ttl: 'forever' as never }), {
      instanceOf: TypeError,
      message: /^ttl must be/,
    })
    f = memoize((x: number) => (calls++, x))
  } finally {
    configure({ enabled: true }) // other tests of this file must not see a half-applied configure()
  }
  f(1)
  f(1)
  t.is(calls, 1, 'caching is still enabled')
  t.throws(() => configure({ enabled: 'no' as never }), {
    instanceOf: TypeError,
    message: 'enabled must be a boolean if specified',
  })
})

/** Runs a memoized function twice in a child process; returns how many times it computed. */
function computationsInChild(env: NodeJS.ProcessEnv): number {
  const script = `
    const { memoize } = require(${JSON.stringify(join(__dirname, '..', 'src-ts', 'index.ts'))})
    let calls = 0
    const f = memoize((x) => (calls++, x))
    const g = memoize(function onDisk(x) { calls++; return x }, { backend: 'disk', path: process.argv[1] })
    f(1); f(1); g(1); g(1)
    g.close().then(() => process.stdout.write(String(calls)))
  `
  const childEnv = { ...process.env, ...env }
  if (env.CACHETTE_DISABLE === undefined) delete childEnv.CACHETTE_DISABLE
  const out = execFileSync(
    process.execPath,
    ['-r', require.resolve('tsx/cjs'), '-e', script, tempDir('options-child')],
    {
      env: childEnv,
      encoding: 'utf8',
      timeout: 60_000,
    },
  )
  return Number(out.trim())
}

test('CACHETTE_DISABLE=1 turns caching off in a process, on memory and on disk', (t) => {
  t.is(computationsInChild({}), 2, 'without it, each function computes once')
  t.is(computationsInChild({ CACHETTE_DISABLE: '1' }), 4)
  t.is(computationsInChild({ CACHETTE_DISABLE: 'true' }), 4)
})
