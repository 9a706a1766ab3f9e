import test from 'ava'
import { memoize } from '../src-ts/index'
import type { Memoized } from '../src-ts/index'
import { setTestTime } from '../src-ts/clock'
import { lastToken, Node, prune, UNSUPPORTED, walk } from '../src-ts/key-trie'
import { PlainBackend } from '../src-ts/backends/memory-plain'
import { Engine } from '../src-ts/engine'
import { methodsOf } from '../src-ts/methods'
import { resolveOptions } from '../src-ts/options'
import { sleep, tempDir, uniqueNamespace } from './helpers/env'
import { backends, counted, track, waitFor } from './helpers/store-suite'

/*
 * The memory backend: values held as they are (no copy, no decoding), in the plain
 * implementation (no expiry, no bounds) and the expiring/bounded one; and `shared: true`, one
 * encoded cache per namespace for the whole process.
 */

const memories = backends(tempDir('memory')).filter((b) => !b.encoded)

for (const b of memories) {
  const title = (s: string) => `${s} (${b.name})`

  test(title('a hit returns the very object the function returned'), (t) => {
    const made: { id: number }[] = []
    const f = b.memoize((id: number) => {
      const o = { id }
      made.push(o)
      return o
    })
    const first = f(1)
    t.is(f(1), first)
    t.is(f(1), made[0])
    t.is(f.peek(1), first)
  })

  test(title('concurrent callers get the very same pending Promise'), async (t) => {
    const f = b.memoize(async (x: { id: number }) => {
      await sleep(10)
      return x.id
    })
    const p = f({ id: 1 })
    t.is(f({ id: 1 }), p)
    t.is(await p, 1)
  })

  test(title('an undefined result is cached and counted as a hit'), (t) => {
    let calls = 0
    const f = b.memoize((_k: string): undefined => void calls++)
    t.is(f('a'), undefined)
    t.is(f('a'), undefined)
    t.true(f.has('a'))
    t.is(calls, 1)
    t.is(f.stats().hits, 1)
    t.is(f.stats().size, 1)
  })

  test(title('numbers around the integer fast path are keyed apart and hit'), (t) => {
    const keys = [
      0,
      -0,
      1,
      -1,
      1.5,
      2 ** 24 - 1,
      2 ** 24,
      2 ** 31,
      2 ** 32,
      Number.MAX_SAFE_INTEGER,
      Infinity,
      -Infinity,
      NaN,
    ]
    const c = counted<[number]>()
    const f = b.memoize(c.fn)
    const first = keys.map((k) => f(k))
    t.deepEqual(
      first.map((r) => r.n),
      keys.map((_, i) => i + 1),
      'every key computed once, in order',
    )
    t.deepEqual(
      keys.map((k) => f(k)),
      first,
      'and every key hits its own entry',
    )
    t.is(f.stats().size, keys.length)

    // The same numbers as object properties, before another property (a path through the key
    // trie) and last (where the entry sits): each keyed apart, each hit.
    const g = b.memoize(counted<[{ a: number; b: string }]>().fn)
    const h = b.memoize(counted<[{ a: string; b: number }]>().fn)
    const viaG = keys.map((k) => g({ a: k, b: 'x' }))
    const viaH = keys.map((k) => h({ b: k, a: 'x' }))
    t.deepEqual(
      viaG.map((r) => r.n),
      keys.map((_, i) => i + 1),
    )
    t.deepEqual(
      keys.map((k) => g({ b: 'x', a: k })),
      viaG,
      'properties in another order hit the same entries',
    )
    t.deepEqual(
      keys.map((k) => h({ a: 'x', b: k })),
      viaH,
    )
  })

  test(title('a function that calls itself keeps its entries right when an inner call throws'), (t) => {
    // The inner call shares the outer call's key path; its failure must not damage that path.
    const boom = new RangeError('inner')
    const f: (a: number, n: number) => string = b.memoize((a: number, n: number): string => {
      if (n === 0) throw boom
      return f(a, n - 1)
    })
    t.is(
      t.throws(() => f(1, 2)),
      boom,
      'the original error, from every level',
    )
    let inner = 0
    const g: Memoized<(o: { n: number }) => string> = b.memoize((o: { n: number }): string => {
      if (o.n === 4) {
        inner++
        throw boom
      }
      try {
        return g({ n: o.n - 1 })
      } catch {
        return 'fallback'
      }
    })
    t.is(g({ n: 5 }), 'fallback')
    t.is(g({ n: 5 }), 'fallback', 'a hit')
    t.is(inner, 1)
    t.true(g.has({ n: 5 }))
    t.is(g.peek({ n: 5 }), 'fallback')
    t.is(g.stats().size, 1)
    g.set([{ n: 5 }], 'NEW')
    t.is(g({ n: 5 }), 'NEW', 'one argument list, one entry')
    t.is(g.peek({ n: 5 }), 'NEW')
  })

  test(title('deleting object-keyed entries leaves their neighbours, and they can be stored again'), (t) => {
    const c = counted<[{ id: number; kind: string }]>()
    const f = b.memoize(c.fn)
    for (let id = 0; id < 100; id++) for (const kind of ['a', 'b']) f({ id, kind })
    t.is(c.calls(), 200)
    for (let id = 0; id < 100; id += 2) t.true(f.delete({ kind: 'a', id }))
    t.false(f.delete({ id: 0, kind: 'a' }), 'already deleted')
    t.is(f.stats().size, 150)
    for (let id = 0; id < 100; id++) f({ id, kind: 'b' })
    for (let id = 1; id < 100; id += 2) f({ id, kind: 'a' })
    t.is(c.calls(), 200, 'the neighbours of the deleted entries still hit')
    for (let id = 0; id < 100; id += 2) t.false(f.has({ id, kind: 'a' }))
    for (let id = 0; id < 100; id++) for (const kind of ['a', 'b']) f.delete({ id, kind })
    t.is(f.stats().size, 0)
    t.deepEqual(f({ id: 7, kind: 'a' }), { n: 201 }, 'stored again after its path was pruned')
    t.deepEqual(f({ kind: 'a', id: 7 }), { n: 201 })
  })

  test(title('deleting a key while its Promise is pending keeps the late result out of the cache'), async (t) => {
    let calls = 0
    const f = b.memoize(async (_k: string) => {
      calls++
      await sleep(20)
      return calls
    })
    const p = f('k')
    t.true(f.delete('k'))
    t.is(await p, 1)
    t.false(f.has('k'))
    t.is(await f('k'), 2)
  })

  test(title('clear() while a Promise is pending keeps the late result out of the cache'), async (t) => {
    const f = b.memoize(async (x: { id: number }) => {
      await sleep(20)
      return x.id
    })
    const p = f({ id: 1 })
    f.clear()
    t.is(await p, 1)
    t.false(f.has({ id: 1 }))
    t.is(f.stats().size, 0)
  })

  test(title('clear() while a Promise is pending that later rejects leaves the size at 0'), async (t) => {
    // The late rejection must not erase anything from the container clear() detached.
    const f = b.memoize(async (_k: number | { id: number }) => {
      await sleep(20)
      throw new Error('boom')
    })
    const pending = [f(1), f({ id: 1 })]
    f.clear()
    for (const p of pending) await t.throwsAsync(p, { message: 'boom' })
    await sleep(5)
    t.is(f.stats().size, 0)
  })

  test.serial(title('with({ maxAge }) called while the key is still computing shares that computation'), async (t) => {
    // On the fake clock (process-wide: hence serial): the computation is older than maxAge.
    t.teardown(() => setTestTime(undefined))
    let calls = 0
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const f = b.memoize(async (x: number) => {
      calls++
      await gate
      return x
    })
    const young = f.with({ maxAge: 50 })
    const t0 = Date.now()
    setTestTime(t0)
    const first = f(1)
    setTestTime(t0 + 1000)
    const second = young(1)
    release()
    t.deepEqual(await Promise.all([first, second]), [1, 1])
    t.is(calls, 1, 'the maxAge call started a second computation')
    t.like(f.stats(), { misses: 1, computations: 1, waits: 1 })
  })

  test(
    title(
      'a sync computation that calls clear() of its own cache returns its value and counts no error (integer keys)',
    ),
    (t) => {
      const f: Memoized<(n: number) => number> = b.memoize((n: number) => {
        if (n === 1) f.clear()
        return n * 2
      })
      t.is(f(1), 2)
      t.is(f.stats().errors, 0, 'the store failed after the clear()')
      // The same through dependsOn: clearing a dependency clears the dependent while it computes.
      const dep = b.memoize((n: number) => n)
      const h = b.memoize(
        (n: number) => {
          dep.clear()
          return n + 1
        },
        { dependsOn: [dep] },
      )
      t.is(h(5), 6)
      t.is(h.stats().errors, 0, 'the store failed after the clear() through dependsOn')
      t.is(h(6), 7)
    },
  )

  test(
    title('a Promise-returning computation that calls clear() of its own cache resolves to its value (integer keys)'),
    async (t) => {
      const g: Memoized<(n: number) => Promise<number>> = b.memoize((n: number) => {
        if (n === 1) g.clear()
        return Promise.resolve(n * 2)
      })
      t.is(await g(1), 2)
      t.is(g.stats().errors, 0)
      const dep = b.memoize((n: number) => n)
      const h = b.memoize(
        (n: number) => {
          dep.clear()
          return Promise.resolve(n + 1)
        },
        { dependsOn: [dep] },
      )
      t.is(await h(5), 6)
      t.is(h.stats().errors, 0)
    },
  )

  test(title('maxEntries evicts the least recently used object-argument entry'), (t) => {
    const c = counted<[{ id: number }]>()
    const f = b.memoize(c.fn, { maxEntries: 2 })
    f({ id: 1 })
    f({ id: 2 })
    f({ id: 1 })
    f({ id: 3 })
    t.deepEqual(
      [1, 2, 3].map((id) => f.has({ id })),
      [true, false, true],
    )
    t.is(f.stats().size, 2)
  })
}

for (const b of backends(tempDir('memory-bounds'))) {
  test(`an async value larger than maxValueBytes is returned but not stored (${b.name})`, async (t) => {
    let calls = 0
    const f = b.memoize(async (n: number) => (calls++, 'y'.repeat(n)), { maxValueBytes: 100 })
    t.is((await f(1000)).length, 1000)
    await sleep(5)
    t.false(f.has(1000))
    t.is((await f(1000)).length, 1000)
    t.is(calls, 2)
    t.is(await f(10), 'y'.repeat(10))
    t.true(f.has(10))
  })
}

test('shared: true gives every memoized function of a namespace the same entries', (t) => {
  const namespace = uniqueNamespace('shared-ns')
  const writer = track(memoize((x: number) => ({ x, by: 'writer' }), { shared: true, namespace }))
  const reader = track(memoize((x: number) => ({ x, by: 'reader' }), { shared: true, namespace }))
  const other = track(
    memoize((x: number) => ({ x, by: 'other' }), { shared: true, namespace: uniqueNamespace('shared-ns') }),
  )
  writer(1)
  t.deepEqual(reader(1), { x: 1, by: 'writer' })
  t.deepEqual(other(1), { x: 1, by: 'other' }, 'another namespace has its own entries')
  reader.delete(1)
  t.false(writer.has(1))
})

test('shared: true hands out copies: mutating a result does not change the cache', (t) => {
  const f = track(memoize((x: number) => ({ list: [x] }), { shared: true, namespace: uniqueNamespace('copies') }))
  const r = f(1)
  r.list.push(99)
  t.deepEqual(f(1), { list: [1] })
  t.not(f(1), f(1))
})

test('the key trie keeps no empty path after an argument it does not cover, nor after a prune', (t) => {
  const root = new Node(null, null)
  t.is(walk(root, [1, { a: 2, b: [3, new Date(4)] }], true), UNSUPPORTED)
  t.is(root.size + root.kids, 0, 'the nodes made before the Date are gone')
  const n = walk(root, [1, { a: 2, b: 3 }], true) as Node
  n.set(lastToken, 'entry')
  t.true(root.size + root.kids > 0)
  prune(n, lastToken)
  t.is(root.size + root.kids, 0, 'pruning the only entry empties the trie')
})

test('a lookup key of the plain memory store walks no path into the key trie: read and delete of an absent object argument leave it empty', (t) => {
  const store = new PlainBackend()
  t.is(store.read(store.key([{ id: 1, k: 'x' }], true)), undefined)
  t.false(store.delete(store.key([{ id: 2, k: 'y' }], true)))
  t.is(store.router.root.size, 0)
  t.is(store.router.root.kids, 0)
})

test('has(), peek() and delete() of absent object arguments, and sync null results with cacheUndefined: false, leave the plain memory key trie empty', (t) => {
  // What memoize() builds for plain memory (an engine on a PlainBackend, and its methods), with
  // the store in reach; misses and lookups never take the memoized function's fast path.
  let store!: PlainBackend
  let calls = 0
  const engine = new Engine(
    (_o: { id: number; k: string }) => (calls++, null),
    resolveOptions('nulls', { cacheUndefined: false }),
    () => (store = new PlainBackend()),
  )
  const methods = methodsOf(engine)
  for (let id = 0; id < 20; id++) {
    t.false(methods.has({ id, k: 'x' }))
    t.is(methods.peek({ id, k: 'x' }), undefined)
    t.false(methods.delete({ id, k: 'x' }))
  }
  t.is(store.router.root.size + store.router.root.kids, 0, 'a lookup made a trie path')
  for (let id = 0; id < 20; id++) t.is(engine.call(undefined, [{ id, k: 'x' }], undefined), null)
  t.is(calls, 20)
  t.is(methods.size(), 0)
  t.is(store.router.root.size + store.router.root.kids, 0, 'an unstored null result left its trie path')
})

test('shared: true stores a result whose sub-objects are shared many times over, each checked once', (t) => {
  // 40 levels of { a: o, b: o }: 2^40 paths through 41 objects. A check that walked every path
  // would never finish.
  const f = track(
    memoize(
      (n: number) => {
        let o: Record<string, unknown> = { leaf: n }
        for (let i = 0; i < 40; i++) o = { a: o, b: o }
        return o
      },
      { shared: true, namespace: uniqueNamespace('dag') },
    ),
  )
  f(1)
  let o = f(1) as Record<string, unknown>
  for (let i = 0; i < 40; i++) o = o.a as Record<string, unknown>
  t.deepEqual(o, { leaf: 1 })
  t.is(f.stats().hits, 1)
})

test.serial('a background refresh that returns null stores nothing when cacheUndefined is false', async (t) => {
  t.teardown(() => setTestTime(undefined))
  let n = 0
  const results = [1, null, 3]
  const f = memoize((_k: string) => results[n++], { ttl: '1m', staleWhileRevalidate: '1h', cacheUndefined: false })
  const t0 = Date.now()
  setTestTime(t0)
  t.is(f('a'), 1)
  setTestTime(t0 + 60_001)
  t.is(f('a'), 1, 'a stale hit; its background refresh returns null')
  await waitFor(() => n === 2)
  await waitFor(() => !f.has('a'))
  t.is(f('a'), 3, 'the null was not cached: this call computes')
  t.is(n, 3)
})

test('shared: true counts encoded values against maxBytes, not a per-entry overhead', (t) => {
  // 20 values of ~2 bytes fit in 1000 bytes.
  const f = track(memoize((x: number) => x, { shared: true, namespace: uniqueNamespace('bytes'), maxBytes: 1000 }))
  for (let i = 0; i < 20; i++) f(i)
  t.is(f.stats().size, 20)
})

test('shared: true: a nested call of the same key through another function of the namespace does not wait for its own lock', (t) => {
  // Locks are held per thread; the inner call must see that its own thread holds the key.
  const namespace = uniqueNamespace('nested')
  const g = track(memoize((x: number) => x, { shared: true, namespace, lockTimeout: 300 }))
  const f = track(memoize((x: number) => g(x) + 1, { shared: true, namespace, lockTimeout: 300 }))
  t.is(f(1), 2)
  t.is(g.stats().waits, 0, 'the inner call waited for a lock (a timed-out wait counts one)')
})

test('shared: true: close() during a computation releases its lock for the other functions of the namespace', async (t) => {
  const namespace = uniqueNamespace('close-leak')
  const opts = { shared: true, namespace, lockTimeout: 1500 }
  const f1 = track(
    memoize(async (x: number) => {
      await sleep(50)
      return x
    }, opts),
  )
  const f2 = track(memoize(async (x: number) => x, opts))
  const running = f1(1)
  await f1.close()
  t.is(await running, 1)
  t.is(await f2(1), 1)
  t.is(f2.stats().waits, 0, 'f2 waited for a lock nobody holds')
  t.is(f2.stats().computations, 1, 'the closed function stored nothing: f2 computes')
})
