// Scenario 3: memory hit time as the cache grows from 1 to 100,000 primitive keys.
import moize from 'moize'
import { memoize } from '../dist/index.mjs'
import { compare, loop, pattern, row, scenario } from './harness.mjs'

const SIZES = [1, 1e3, 1e5]

async function atSize(size) {
  const fn = (k) => ({ id: k })
  // Random access over keys 1..size; 256 Ki draws touch ~93% of 100,000 keys.
  const keys = pattern(size, 1 << 18).map((x) => x + 1)
  const cachette = memoize(fn)
  const map = new Map()
  const mz = moize(fn, { maxSize: Infinity })
  for (let k = 1; k <= size; k++) (cachette(k), map.set(k, fn(k)))
  // moize finds keys by a linear scan, so filling 1e5 keys through calls would take minutes:
  // fill its documented cache arrays directly (most recent first, as moize keeps them).
  for (let k = size; k >= 1; k--) (mz.cache.keys.push([k]), mz.cache.values.push(fn(k)))
  return compare([
    { name: 'cachette', run: loop('f($k).id', { f: cachette, keys }) },
    { name: 'map', run: loop('map.get($k).id', { map, keys }) },
    { name: 'moize', run: loop('f($k).id', { f: mz, keys }) },
  ])
}

export async function scaling() {
  const at = []
  for (const size of SIZES) at.push(await atSize(size))
  const first = at[0]
  const last = at[at.length - 1]
  const growth = (name) => last[name] / first[name]
  const ratio = growth('cachette') / growth('map')
  const fmt = (name) => ({ at: at.map((r) => r[name]), growth: growth(name) })
  return scenario(
    '3. memory hit scaling, 1 → 1,000 → 100,000 cached number keys (random access)',
    [
      row('cachette memoize(fn)', last, 'cachette', undefined, { scaling: fmt('cachette') }),
      row('Map.get', last, 'map', last.cachette, {
        scaling: fmt('map'),
        target: 'growth ≤ 1.5× Map',
        pass: ratio <= 1.5,
      }),
      row('moize { maxSize: Infinity }', last, 'moize', last.cachette, { scaling: fmt('moize') }),
    ],
    [{ text: "cachette's growth (1e5 / 1 key) within 1.5× of Map's growth", pass: ratio <= 1.5, value: ratio }],
    [`sizes: ${SIZES.join(', ')}; ns/op and ratio columns are at ${SIZES[SIZES.length - 1]} keys`],
  )
}
