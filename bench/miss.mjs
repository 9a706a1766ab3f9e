// Scenario 5: memory misses + stores: every call a new key, the cache growing from empty each round.
import { LRUCache } from 'lru-cache'
import { memoize } from '../dist/index.mjs'
import { compare, MISS_ROUNDS, row, scenario } from './harness.mjs'

const OPS = 50_000

export async function missStore() {
  const fn = (k) => ({ id: k })
  const ofn = (o) => ({ id: o.id })
  const objs = Array.from({ length: OPS }, (_, i) => ({ id: i, kind: 'user' }))
  const lruMemo = (cache, arg) => {
    const k = JSON.stringify(arg)
    let v = cache.get(k)
    if (v === undefined) cache.set(k, (v = fn(arg)))
    return v
  }
  const lruMemoObj = (cache, arg) => {
    const k = JSON.stringify(arg)
    let v = cache.get(k)
    if (v === undefined) cache.set(k, (v = ofn(arg)))
    return v
  }
  const common = { ops: OPS }
  const r = await compare(
    [
      {
        ...common,
        name: 'cachette',
        setup: () => memoize(fn),
        run(n, f) {
          let s = 0
          for (let i = 1; i <= n; i++) s += f(i).id
          return s
        },
      },
      {
        ...common,
        name: 'lru',
        setup: () => new LRUCache({ max: OPS }),
        run(n, c) {
          let s = 0
          for (let i = 1; i <= n; i++) s += lruMemo(c, i).id
          return s
        },
      },
      {
        ...common,
        name: 'lruRaw',
        setup: () => new LRUCache({ max: OPS }),
        run(n, c) {
          let s = 0
          for (let i = 1; i <= n; i++) {
            let v = c.get(i)
            if (v === undefined) c.set(i, (v = fn(i)))
            s += v.id
          }
          return s
        },
      },
      {
        ...common,
        name: 'map',
        setup: () => new Map(),
        run(n, m) {
          let s = 0
          for (let i = 1; i <= n; i++) {
            let v = m.get(i)
            if (v === undefined) m.set(i, (v = fn(i)))
            s += v.id
          }
          return s
        },
      },
      {
        ...common,
        name: 'cachetteObj',
        setup: () => memoize(ofn),
        run(n, f) {
          let s = 0
          for (let i = 0; i < n; i++) s += f(objs[i]).id
          return s
        },
      },
      {
        ...common,
        name: 'lruObj',
        setup: () => new LRUCache({ max: OPS }),
        run(n, c) {
          let s = 0
          for (let i = 0; i < n; i++) s += lruMemoObj(c, objs[i]).id
          return s
        },
      },
    ],
    { rounds: MISS_ROUNDS },
  ) // allocation-bound: GC pauses land in some rounds, so more of them
  const p = r.cachette / r.lru
  const o = r.cachetteObj / r.lruObj
  return scenario(
    `5. memory miss + store, ${OPS.toLocaleString('en')} new keys per round into an empty cache`,
    [
      row('cachette memoize(fn), number arg', r, 'cachette'),
      row('lru-cache + JSON.stringify key', r, 'lru', r.cachette, { target: '≤ 1.0×', pass: p <= 1 }),
      row('lru-cache, number key as is', r, 'lruRaw', r.cachette),
      row('Map get + set', r, 'map', r.cachette),
      row('cachette memoize(fn), object arg', r, 'cachetteObj'),
      row('lru-cache + JSON.stringify key (object)', r, 'lruObj', r.cachetteObj, { target: '≤ 1.0×', pass: o <= 1 }),
    ],
    [
      { text: 'miss+store, number arg: cachette ≤ 1.0× lru-cache + JSON.stringify', pass: p <= 1, value: p },
      { text: 'miss+store, object arg: cachette ≤ 1.0× lru-cache + JSON.stringify', pass: o <= 1, value: o },
    ],
    [`object arg: { id: i, kind: 'user' }; lru-cache { max: ${OPS} } never evicts here; cachette is unbounded`],
  )
}
