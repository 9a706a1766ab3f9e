import test from 'ava'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { encodeKey } from '../../src-ts/key'
import { IO_BYTES, openShared } from '../../src-ts/native'
import { count, figure } from './helpers/figures'
import { LOOK_ALIKES, tuple, twin } from './helpers/tuples'

/*
 * T21: keys of generated argument tuples. A corpus of distinct tuples of mixed kinds (ints,
 * floats, -0, NaN, strings with lone surrogates, BigInts, Dates, Maps, Sets, nested objects and
 * arrays, undefined and null, typed arrays, Buffers, RegExps), each tuple also with two twins
 * that differ by one look-alike, gets no digest collision; look-alikes get different keys; and a
 * child process computes the same digests for a sample.
 */

const NAMESPACE = 't21-collisions'
const TUPLES = count(340_000, 1_000_000) // ×3 with the twins: over 10⁶ distinct tuples in CI
const SAMPLE = 500

function digester(namespace: string): (args: unknown[]) => Buffer {
  const store = openShared(namespace)
  const io = Buffer.alloc(IO_BYTES)
  return (args) => {
    store.hash(encodeKey(args), io)
    return io
  }
}

/** The three corpus tuples of index `i`: the tuple and its two look-alike twins. */
const triple = (i: number): unknown[][] => [tuple(i), twin(i, 0), twin(i, 1)]

test('T21: 10⁶ distinct argument tuples of mixed kinds get no digest collision, look-alikes stay apart, and another process computes the same digests', (t) => {
  const digest = digester(NAMESPACE)
  // The store key is the digest's first 16 bytes: a collision there alone is counted too.
  const seen = new Map<string, number>()
  let prefixCollisions = 0
  let fullCollisions = 0
  const started = process.hrtime.bigint()
  for (let i = 0; i < TUPLES; i++) {
    const three = triple(i)
    for (let j = 0; j < 3; j++) {
      const d = digest(three[j])
      const prefix = d.latin1Slice(0, 16)
      const before = seen.get(prefix)
      if (before === undefined) {
        seen.set(prefix, i * 3 + j)
        continue
      }
      prefixCollisions++
      const other = triple(Math.floor(before / 3))[before % 3]
      if (Buffer.from(digest(other)).equals(digest(three[j]))) fullCollisions++
      t.log(`collision: tuple ${i * 3 + j} and ${before}`)
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const n = TUPLES * 3
  figure(
    t,
    'T21',
    `digest collisions among ${n.toLocaleString('en')} distinct tuples (256-bit)`,
    fullCollisions,
    '= 0',
    fullCollisions === 0,
  )
  figure(
    t,
    'T21',
    `store-key collisions among ${n.toLocaleString('en')} tuples (first 128 bits)`,
    prefixCollisions,
    '= 0',
    prefixCollisions === 0,
  )
  figure(t, 'T21', 'encode + hash rate (tuples/s, generation included)', Math.round(n / seconds), 'reported', true)

  let apart = 0
  for (const [what, a, b] of LOOK_ALIKES) {
    for (const wrap of [
      (v: unknown) => [v],
      (v: unknown) => [{ v }],
      (v: unknown) => [[v], 0],
      (v: unknown) => [new Map([['k', v]])],
    ]) {
      const same = Buffer.from(digest(wrap(a))).equals(digest(wrap(b)))
      if (same) t.log(`look-alikes share a key: ${what}`)
      else apart++
    }
  }
  const pairs = LOOK_ALIKES.length * 4
  figure(
    t,
    'T21',
    'look-alike pairs with different keys (alone, in an object, in an array, in a Map)',
    `${apart}/${pairs}`,
    `= ${pairs}/${pairs}`,
    apart === pairs,
  )

  // Another process, another V8 isolate and another load of the addon: the same digests.
  const indices = Array.from({ length: SAMPLE }, (_, k) => Math.floor((k * TUPLES) / SAMPLE))
  const out = execFileSync(
    process.execPath,
    ['--import=tsx', join(__dirname, 'fixtures', 'digests.ts'), NAMESPACE, ...indices.map(String)],
    { encoding: 'utf8', maxBuffer: 64 << 20 },
  )
  const theirs = out.trim().split('\n')
  const ours = indices.flatMap((i) => triple(i).map((args) => digest(args).toString('hex', 0, 32)))
  const mismatches = ours.filter((d, k) => theirs[k] !== d).length
  t.is(theirs.length, ours.length)
  figure(
    t,
    'T21',
    `digests that differ in a child process (of ${ours.length} sampled)`,
    mismatches,
    '= 0',
    mismatches === 0,
  )
})
