/*
 * A reproducible corpus of argument tuples of every kind keys take (T21): tuple `i` is the same
 * in every process. Tuples are distinct by value by construction: each ends with a marker made of
 * `i` alone (an integer, a float, a string, a BigInt, a Date or an array), so two tuples are
 * equal only if their indices are. A twin tuple (`twin(i)`) differs from tuple `i` by one
 * look-alike only (NaN for null, 1n for 1, '\uFFFD' for '\uD800', a Map for {}…).
 */

/** mulberry32: a small seeded PRNG, so every process generates the same corpus. */
function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const CHARS = [
  'a',
  'b',
  'Z',
  '0',
  ' ',
  'é',
  '\u0000',
  '\uD800',
  '\uDBFF',
  '\uDC00',
  '\uFFFD',
  '😀',
  '\u{10FFFF}',
  '"',
  '\\',
]
const KEYS = ['a', 'b', 'id', 'user', '', 'é', '\uD800', '0', '1', 'constructor', 'toString', 'x y']
const SPECIAL = [0, -0, NaN, Infinity, -Infinity, Number.MAX_SAFE_INTEGER, Number.MIN_VALUE, -1]

function leaf(r: () => number): unknown {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]
  switch (Math.floor(r() * 14)) {
    case 0:
      return Math.floor(r() * 2 ** 32) - 2 ** 31
    case 1:
      return (r() - 0.5) * 10 ** Math.floor(r() * 20)
    case 2:
      return pick(SPECIAL)
    case 3: {
      let s = ''
      for (let n = Math.floor(r() * 8); n > 0; n--) s += pick(CHARS)
      return s
    }
    case 4:
      return BigInt(Math.floor(r() * 2 ** 40) - 2 ** 39) * 10n ** BigInt(Math.floor(r() * 30))
    case 5:
      return new Date(Math.floor((r() - 0.5) * 2 ** 44))
    case 6:
      return pick([undefined, null, true, false])
    case 7:
      return Uint8Array.from({ length: Math.floor(r() * 6) }, () => Math.floor(r() * 256))
    case 8:
      return Float64Array.from({ length: Math.floor(r() * 3) }, () => r() * 100)
    case 9:
      return Int16Array.from({ length: Math.floor(r() * 3) }, () => Math.floor(r() * 65536) - 32768)
    case 10:
      return Buffer.from([Math.floor(r() * 256), Math.floor(r() * 256)].slice(0, Math.floor(r() * 3)))
    case 11:
      return pick([/a+/, /a+/g, /a+/gi, /[\uD800]/u, /x/m])
    case 12:
      return pick(['1', 1, 1n, '\uD800', '\uFFFD', 'null', 'undefined', 'NaN'])
    default:
      return Math.floor(r() * 10)
  }
}

function value(r: () => number, depth: number): unknown {
  const n = Math.floor(r() * 4)
  switch (depth > 2 ? 0 : Math.floor(r() * 6)) {
    case 1:
      return Array.from({ length: n }, () => value(r, depth + 1))
    case 2: {
      const o: Record<string, unknown> = {}
      for (let j = 0; j < n; j++) o[KEYS[Math.floor(r() * KEYS.length)]] = value(r, depth + 1)
      return o
    }
    case 3:
      return new Map(Array.from({ length: n }, () => [leaf(r), value(r, depth + 1)] as [unknown, unknown]))
    case 4:
      return new Set(Array.from({ length: n }, () => leaf(r)))
    default:
      return leaf(r)
  }
}

/** The marker that makes tuple `i` distinct from every other: `i` alone, in one of six kinds. */
function marker(i: number): unknown {
  switch (i % 6) {
    case 0:
      return i
    case 1:
      return i + 0.5
    case 2:
      return `#${i}`
    case 3:
      return BigInt(i)
    case 4:
      return new Date(i)
    default:
      return [i]
  }
}

/** Tuple `i` of the corpus: 0 to 3 random values of mixed kinds, then `i`'s marker. */
export function tuple(i: number): unknown[] {
  const r = rng(i * 2654435761)
  const out = Array.from({ length: Math.floor(r() * 4) }, () => value(r, 0))
  out.push(marker(i))
  return out
}

/** Look-alike pairs: values cachette keeps apart although they print, compare or coerce alike. */
export const LOOK_ALIKES: [string, unknown, unknown][] = [
  ['NaN / null', NaN, null],
  ['1n / 1', 1n, 1],
  ["'1' / 1", '1', 1],
  ['undefined / null', undefined, null],
  ["'\\uD800' / '\\uFFFD'", '\uD800', '\uFFFD'],
  ["'\\uD800' / '\\uDBFF'", '\uD800', '\uDBFF'],
  ['Map / {}', new Map(), {}],
  ['Set / []', new Set(), []],
  ['-0 / 0', -0, 0],
  ['Date(0) / 0', new Date(0), 0],
  ["'' / []", '', []],
  ['[undefined] / []', [undefined], []],
  ['[[]] / []', [[]], []],
  ['{ a: 1 } / Map { a: 1 }', { a: 1 }, new Map([['a', 1]])],
  ["'true' / true", 'true', true],
  ['Infinity / -Infinity', Infinity, -Infinity],
]

/** Tuple `i` with its first argument replaced by one side of look-alike pair `i % LOOK_ALIKES.length`. */
export function twin(i: number, side: 0 | 1): unknown[] {
  const t = tuple(i)
  const pair = LOOK_ALIKES[i % LOOK_ALIKES.length]
  return [pair[1 + side], ...t]
}
