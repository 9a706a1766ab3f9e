import test from 'ava'
import { CachetteError } from '../src-ts/index'
import { tempDir } from './helpers/env'
import { backends, counted, equalPairs, lookAlikePairs, unkeyableCases } from './helpers/store-suite'

/*
 * Keys: arguments compared by value, look-alikes kept apart, unkeyable arguments refused with
 * the path of the culprit — the same on every backend (memory walks a trie of Maps, the encoded
 * backends hash the canonical encoding; both must agree).
 */

const dir = tempDir('keys')

class Point {
  constructor(
    readonly x: number,
    readonly y: number,
  ) {}
}

const nest = (depth: number, leaf: unknown): unknown => (depth === 0 ? leaf : { d: [nest(depth - 1, leaf)] })

for (const b of backends(dir)) {
  const title = (s: string) => `${s} (${b.name})`

  test(title('memoize() compares arguments by value inside objects, arrays and later positions'), (t) => {
    const c = counted<[unknown, unknown]>()
    const f = b.memoize(c.fn)
    for (const [what, first, second] of equalPairs) {
      for (const [label, wrap] of [
        ['in an object', (v: unknown) => [{ v }, 0]],
        ['alone in an object', (v: unknown) => [{ v }]],
        ['first of two properties', (v: unknown) => [{ a: v, b: 0 }]],
        ['in an array', (v: unknown) => [[v], 0]],
        ['as the second argument', (v: unknown) => ['x', v]],
      ] as const) {
        const before = c.calls()
        const r = f(...(wrap(first) as [unknown, unknown]))
        t.deepEqual(f(...(wrap(second) as [unknown, unknown])), r, `${what} ${label}`)
        t.is(c.calls(), before + 1, `${what} ${label}: computed once`)
      }
    }
  })

  test(title('memoize() keeps look-alike values apart inside objects, arrays and later positions'), (t) => {
    for (const [what, first, second] of lookAlikePairs) {
      for (const [label, wrap] of [
        ['in an object', (v: unknown) => [{ v }, 0]],
        ['alone in an object', (v: unknown) => [{ v }]],
        ['first of two properties', (v: unknown) => [{ a: v, b: 0 }]],
        ['in an array', (v: unknown) => [[v], 0]],
        ['as the second argument', (v: unknown) => ['x', v]],
      ] as const) {
        const c = counted<[unknown, unknown]>()
        const f = b.memoize(c.fn)
        try {
          t.deepEqual(f(...(wrap(first) as [unknown, unknown])), { n: 1 }, `${what} ${label}`)
          t.deepEqual(f(...(wrap(second) as [unknown, unknown])), { n: 2 }, `${what} ${label}: must not share an entry`)
        } catch (e) {
          t.fail(`${what} ${label}: ${String(e)}`)
        }
      }
    }
  })

  test(
    title('memoize() keys an argument list by its length: no arguments, one undefined, and 40 arguments differ'),
    (t) => {
      const f = b.memoize((...args: unknown[]) => args.length)
      const forty = Array.from({ length: 40 }, (_, i) => i)
      const results: unknown[] = []
      try {
        results.push(f(), f(undefined), f(...forty), f(), f(undefined), f(...forty))
      } catch (e) {
        t.fail(String(e))
      }
      t.deepEqual(results, [0, 1, 40, 0, 1, 40])
    },
  )

  test(title('memoize() keys arguments nested deeper than 16 levels by value'), (t) => {
    const c = counted<[unknown]>()
    const f = b.memoize(c.fn)
    const r = f(nest(20, 'leaf'))
    t.deepEqual(f(nest(20, 'leaf')), r)
    t.notDeepEqual(f(nest(20, 'other')), r)
    t.is(c.calls(), 2)
  })

  test(title('memoize() keys RegExps by source and flags'), (t) => {
    const c = counted<[RegExp]>()
    const f = b.memoize(c.fn)
    const r = f(/a+b/g)
    t.deepEqual(f(/a+b/g), r)
    t.notDeepEqual(f(/a+b/i), r)
    t.notDeepEqual(f(/a+c/g), r)
    t.is(c.calls(), 3)
  })

  test(title('memoize() names the path of an unkeyable argument in ERR_UNKEYABLE_ARGUMENT'), (t) => {
    let calls = 0
    const f = b.memoize((..._args: unknown[]) => ++calls)
    const cases: [string, unknown[], string][] = [
      ...unkeyableCases(),
      ['a function as a Map value', [new Map([['k', () => 1]])], 'args[0].values()[0]'],
      ['a symbol in a Set', [new Set([1, Symbol('s')])], 'args[0].values()[1]'],
      ['a class instance deep in an object', [0, { a: [{ b: new Point(0, 0) }] }], 'args[1].a[0].b'],
      ['a key nested 1001 levels deep', [nest(501, 1)], 'args[0]'],
    ]
    for (const [what, args, path] of cases) {
      const e = t.throws(() => f(...args), { instanceOf: CachetteError }, what)
      t.is(e?.code, 'ERR_UNKEYABLE_ARGUMENT', what)
      t.true(e?.message.includes(path), `${what}: "${e?.message}" names ${path}`)
    }
    t.is(calls, 0, 'the function never ran')
  })

  test(title('the key option makes class instances keyable, compared by the value it returns'), (t) => {
    let calls = 0
    const f = b.memoize((p: Point) => (calls++, p.x + p.y), { key: (p: Point) => ({ x: p.x, y: p.y }) })
    t.is(f(new Point(1, 2)), 3)
    t.is(f(new Point(1, 2)), 3)
    t.is(f(new Point(2, 1)), 3)
    t.is(calls, 2)
    t.true(f.has(new Point(1, 2)))
    t.false(f.has(new Point(5, 5)))
  })

  test(title('the key option can map different arguments to one entry'), (t) => {
    let calls = 0
    const f = b.memoize((id: number, _traceId: string) => (calls++, { id }), { key: (id: number) => id })
    t.deepEqual(f(7, 'trace-a'), { id: 7 })
    t.deepEqual(f(7, 'trace-b'), { id: 7 })
    t.is(calls, 1)
  })

  test(title('an error thrown by the key option reaches the caller unchanged and the function does not run'), (t) => {
    const err = new Error('bad key')
    let calls = 0
    const f = b.memoize((_x: number) => ++calls, {
      key: () => {
        throw err
      },
    })
    t.throws(() => f(1), { is: err })
    t.is(calls, 0)
  })

  test(title('an unkeyable result of the key option is refused with ERR_UNKEYABLE_ARGUMENT'), (t) => {
    let calls = 0
    const f = b.memoize((_x: number) => ++calls, { key: (x: number) => ({ x, fn: () => x }) })
    const e = t.throws(() => f(1), { instanceOf: CachetteError })
    t.is(e?.code, 'ERR_UNKEYABLE_ARGUMENT')
    t.is(calls, 0)
  })
}
