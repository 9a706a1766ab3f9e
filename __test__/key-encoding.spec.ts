import test from 'ava'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { encodeKey } from '../src-ts/key'
import { IO_BYTES, openShared } from '../src-ts/native'

const doc = readFileSync(join(__dirname, '..', 'docs', 'key-encoding.md'), 'utf8')

function digest(namespace: string, args: unknown[]): string {
  const io = Buffer.alloc(IO_BYTES)
  openShared(namespace).hash(encodeKey(args), io)
  return io.toString('hex', 0, 32)
}

test('the JavaScript encoder produces the bytes and digest that docs/key-encoding.md states', (t) => {
  const encoding = /encoding = ([0-9a-f ]+)\n/.exec(doc)![1].replace(/ /g, '')
  const expected = /digest {3}= ([0-9a-f]{64})/.exec(doc)![1]
  t.is(Buffer.from(encodeKey([1, 'a'])).toString('hex'), encoding)
  t.is(digest('docs', [1, 'a']), expected)
})

test('every key vector of docs/key-vectors.tsv encodes and hashes as stated (the Rust core is tested on the same file)', (t) => {
  const vectors = readFileSync(join(__dirname, '..', 'docs', 'key-vectors.tsv'), 'utf8')
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.split('\t'))
  t.true(vectors.length >= 10)
  for (const [ns, expr, encoding, expected] of vectors) {
    const args = new Function(`return ${expr}`)() as unknown[]
    t.is(Buffer.from(encodeKey(args)).toString('hex'), encoding, expr)
    t.is(digest(ns, args), expected, `${ns} ${expr}`)
  }
})

test('look-alike arguments get different digests', (t) => {
  const pairs: [unknown, unknown][] = [
    [NaN, null],
    [1n, 1],
    ['1', 1],
    [undefined, null],
    [new Map(), {}],
    [new Set(), []],
    ['\uD800', '\uFFFD'],
    [-0, 0],
    [new Date(0), 0],
    // prettier-ignore
    // eslint-disable-next-line no-sparse-arrays
    [[, 1], [undefined, 1]],
    [Buffer.from([1]), new Uint8Array([1])],
    [/a/g, '/a/g'],
  ]
  for (const [a, b] of pairs) t.not(digest('n', [a]), digest('n', [b]), `${String(a)} vs ${String(b)}`)
})

test('plain objects are keyed regardless of property order, arrays by order', (t) => {
  t.is(digest('n', [{ a: 1, b: [1, 2] }]), digest('n', [{ b: [1, 2], a: 1 }]))
  t.not(digest('n', [[1, 2]]), digest('n', [[2, 1]]))
})

test('the namespace is part of every digest', (t) => {
  t.not(digest('users', [1]), digest('orders', [1]))
})
