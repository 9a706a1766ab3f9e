// Scenarios 1 and 2: memory hits, one primitive argument and one object argument compared by value.
import fastMemoize from 'fast-memoize'
import { LRUCache } from 'lru-cache'
import memoizee from 'memoizee'
import moize from 'moize'
import { memoize } from '../dist/index.mjs'
import { compare, loop, pattern, row, scenario } from './harness.mjs'

const KEYS = 1000

/** `kind` 'number': ids 1..1000 (array-index keys, fast-memoize's best case); 'string': 'user:1'.. */
export async function primitiveHit(kind) {
  const fn = kind === 'number' ? (k) => ({ id: k }) : (k) => ({ id: k.length })
  const ids = Array.from({ length: KEYS }, (_, i) => (kind === 'number' ? i + 1 : `user:${i + 1}`))
  const keys = pattern(KEYS).map((x) => ids[x])
  const cachette = memoize(fn)
  const fast = fastMemoize(fn)
  const mz = moize(fn, { maxSize: KEYS })
  const mee = memoizee(fn, { primitive: true })
  const lru = new LRUCache({ max: KEYS, memoMethod: fn })
  for (const k of ids) (cachette(k), fast(k), mz(k), mee(k), lru.memo(k))
  const r = await compare([
    { name: 'cachette', run: loop('f($k).id', { f: cachette, keys }) },
    { name: 'fast', run: loop('f($k).id', { f: fast, keys }) },
    { name: 'moize', run: loop('f($k).id', { f: mz, keys }) },
    { name: 'memoizee', run: loop('f($k).id', { f: mee, keys }) },
    { name: 'lru', run: loop('lru.memo($k).id', { lru, keys }) },
  ])
  const c = r.cachette
  const ratio = c / r.fast
  const label = kind === 'number' ? 'number keys 1..1000' : "string keys 'user:1'..'user:1000'"
  return scenario(
    `1${kind === 'number' ? 'a' : 'b'}. memory hit, one primitive argument (${KEYS} cached ${label}, random access)`,
    [
      row('cachette memoize(fn)', r, 'cachette'),
      row('fast-memoize', r, 'fast', c, { target: '≤ 1.2×', pass: ratio <= 1.2 }),
      row(`moize { maxSize: ${KEYS} }`, r, 'moize', c),
      row('memoizee { primitive: true }', r, 'memoizee', c),
      row(`lru-cache memo() { max: ${KEYS} }`, r, 'lru', c),
    ],
    [{ text: `memory hit, ${kind} arg: cachette ≤ 1.2× fast-memoize`, pass: ratio <= 1.2, value: ratio }],
  )
}

export async function objectHit() {
  const fn = (o) => ({ id: o.id, kind: o.kind })
  // 64 Ki distinct objects, each equal to one of 1000 keys: every call gets a fresh but equal literal.
  const keys = pattern(KEYS).map((x) => ({ id: x, kind: 'user' }))
  const cachette = memoize(fn)
  const fast = fastMemoize(fn)
  const mz = moize(fn, { isDeepEqual: true, maxSize: KEYS })
  const lru = new LRUCache({ max: KEYS })
  const lruMemo = (arg) => {
    const k = JSON.stringify(arg)
    let v = lru.get(k)
    if (v === undefined) lru.set(k, (v = fn(arg)))
    return v
  }
  for (let k = 0; k < KEYS; k++) {
    const a = { id: k, kind: 'user' }
    ;(cachette({ ...a }), fast({ ...a }), mz({ ...a }), lruMemo({ ...a }))
  }
  const r = await compare([
    { name: 'cachette', run: loop('f($k).id', { f: cachette, keys }) },
    { name: 'lru', run: loop('f($k).id', { f: lruMemo, keys }) },
    { name: 'fast', run: loop('f($k).id', { f: fast, keys }) },
    { name: 'moize', run: loop('f($k).id', { f: mz, keys }) },
  ])
  const c = r.cachette
  const ratio = c / r.lru
  return scenario(
    `2. memory hit, one object argument by value ({ id: 0..999, kind: 'user' }, a fresh equal object per call)`,
    [
      row('cachette memoize(fn)', r, 'cachette'),
      row('lru-cache + JSON.stringify key', r, 'lru', c, { target: '≤ 0.25× (4× faster)', pass: ratio <= 0.25 }),
      row('fast-memoize (JSON.stringify)', r, 'fast', c),
      row(`moize { isDeepEqual, maxSize: ${KEYS} }`, r, 'moize', c),
    ],
    [
      {
        text: 'memory hit, object arg: cachette ≥ 4× faster than lru-cache + JSON.stringify',
        pass: ratio <= 0.25,
        value: ratio,
      },
    ],
  )
}
