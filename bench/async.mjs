// Scenario 4: async hits — awaiting a memoized async function's cached result.
import pMemoize from 'p-memoize'
import { memoize } from '../dist/index.mjs'
import { compare, loop, pattern, row, scenario } from './harness.mjs'

const KEYS = 1000

export async function asyncHit() {
  const fn = async (k) => ({ id: k })
  const keys = pattern(KEYS).map((x) => x + 1)
  const cachette = memoize(fn)
  const pm = pMemoize(fn)
  const map = new Map()
  for (let k = 1; k <= KEYS; k++) {
    map.set(k, Promise.resolve({ id: k }))
    await cachette(k)
    await pm(k)
  }
  const opts = { async: true }
  const r = await compare([
    { name: 'cachette', async: true, run: loop('(await f($k)).id', { f: cachette, keys }, opts) },
    { name: 'map', async: true, run: loop('(await map.get($k)).id', { map, keys }, opts) },
    { name: 'pm', async: true, run: loop('(await f($k)).id', { f: pm, keys }, opts) },
  ])
  const c = r.cachette
  const ratio = c / r.map
  return scenario(
    `4. async hit: await memoized(k), ${KEYS} keys`,
    [
      row('cachette memoize(async fn)', r, 'cachette'),
      row('await map.get(k) (resolved promise)', r, 'map', c, { target: '≤ 1.3×', pass: ratio <= 1.3 }),
      row('p-memoize', r, 'pm', c),
    ],
    [{ text: 'cachette ≤ 1.3× await Map.get', pass: ratio <= 1.3, value: ratio }],
  )
}
