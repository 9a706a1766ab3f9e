import test from 'ava'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { memoize } from '../../src-ts/index'
import { encodeKey } from '../../src-ts/key'
import { IO_BYTES, IO_START, openRemote } from '../../src-ts/native'
import type { Remote } from '../../src-ts/native'
import { tempDir } from '../helpers/env'
import { digestOf, envelopeFor, resealFor, sqliteEntries } from '../helpers/raw-entries'
import { count, figure } from './helpers/figures'

/*
 * T16(c): the native entry decoder fuzzed through the addon (`remoteOpen`, which checks every
 * entry a Redis or PostgreSQL direct read brings back, and the same envelope code every store
 * reads with). Random bytes, genuine envelopes with bits flipped, truncated or extended, and
 * envelopes mutated with their checksum made valid again: 0 panics, 0 payload ranges outside the
 * input, 0 flipped envelopes accepted, the longest decode well under 10 ms. With an integrityKey,
 * entries that pass the envelope's own checks but were forged, altered or copied from another key
 * are rejected, every one, while genuine ones are accepted.
 */

const dir = tempDir('chaos-fuzz')
const CASES = Number(process.env.CACHETTE_FUZZ_CASES ?? count(100_000, 1_000_000))
const NAMESPACE = 'chaos-fuzz'
const TABLE = 'fuzz'
const URL = `sqlite://${join(dir, 'fuzz.sqlite')}`
const KEY = 'fuzzing integrity key, 32 bytes or more'
const GENUINE = 64

/** A seeded PRNG (mulberry32): a failing case can be replayed. */
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
const SEED = Number(process.env.CACHETTE_FUZZ_SEED ?? 14)
const r = rng(SEED)
const int = (n: number) => Math.floor(r() * n)
const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)))

function withCrc(b: Buffer): Buffer {
  if (b.length >= 4) b.writeUInt32BE(crc32(b.subarray(0, b.length - 4)), b.length - 4)
  return b
}

/** Ways to damage a genuine envelope; `crc` tells whether the damage keeps a valid checksum. */
const damage: [string, boolean, (b: Buffer) => Buffer][] = [
  [
    'bits flipped',
    false,
    (b) => {
      const out = Buffer.from(b)
      for (let n = 1 + int(8); n > 0; n--) out[int(out.length)] ^= 1 << int(8)
      return out
    },
  ],
  ['truncated', false, (b) => b.subarray(0, int(b.length))],
  ['extended', false, (b) => Buffer.concat([b, bytes(1 + int(16))])],
  [
    'a header byte changed, checksum fixed',
    true,
    (b) => {
      const out = Buffer.from(b)
      out[int(Math.min(out.length - 4, 28))] = int(256)
      return withCrc(out)
    },
  ],
  [
    'a payload byte changed, checksum fixed',
    true,
    (b) => {
      const out = Buffer.from(b)
      out[28 + int(Math.max(1, out.length - 32))] ^= 1 + int(255)
      return withCrc(out)
    },
  ],
  [
    'random length, checksum fixed',
    true,
    (b) => withCrc(Buffer.concat([b.subarray(0, 4 + int(b.length)), bytes(int(8))])),
  ],
]

/** One decode: what `open` answered and how long it took. */
function decode(remote: Remote, io: Buffer, input: Buffer): { end: number; start: number; ns: number; threw?: string } {
  const t0 = process.hrtime.bigint()
  try {
    const end = remote.open(io, input)
    return { end, start: io.readUInt32LE(IO_START), ns: Number(process.hrtime.bigint() - t0) }
  } catch (e) {
    return { end: -1, start: 0, ns: Number(process.hrtime.bigint() - t0), threw: (e as Error).message }
  }
}

test('T16(c): random, bit-flipped and re-checksummed envelopes through the native decoder: no panic, no flipped entry accepted; with an integrityKey every forged or swapped entry is rejected', async (t) => {
  // Genuine entries, written through the store with and without the key, read back raw.
  const keyed = memoize((k: number) => ({ k, s: 'x'.repeat(k) }), {
    backend: 'sql',
    url: URL,
    table: TABLE,
    namespace: NAMESPACE,
    integrityKey: KEY,
  })
  t.teardown(() => keyed.close())
  for (let k = 0; k < GENUINE; k++) await keyed(k)
  const raw = sqliteEntries(join(dir, 'fuzz.sqlite'), TABLE)
  const digests = Array.from({ length: GENUINE }, (_, k) => digestOf(NAMESPACE, [k]))
  const byKey = new Map((await raw.list()).map((e) => [e.key.toString('hex'), e.bytes]))
  const signed = digests.map((d) => byKey.get(d.subarray(0, 16).toString('hex'))!)
  await raw.close()
  t.is(signed.filter(Boolean).length, GENUINE)
  const plain = digests.map((d, k) =>
    envelopeFor(d, Buffer.concat([Buffer.from([0x0a]), Buffer.from(JSON.stringify({ k }))])),
  )

  const unkeyedRemote = openRemote([URL], false, TABLE, NAMESPACE, 5000)
  const keyedRemote = openRemote([URL], false, TABLE, NAMESPACE, 5000, Buffer.from(KEY))
  t.teardown(() => {
    unkeyedRemote.close()
    keyedRemote.close()
  })
  const io = Buffer.alloc(IO_BYTES)
  const ioFor = (remote: Remote, k: number) => {
    remote.hash(encodeKey([k]), io)
    return io
  }

  let panics = 0
  let outOfRange = 0
  let flippedAccepted = 0
  let maxNs = 0
  const forged = { cases: 0, accepted: 0 }
  const genuine = { cases: 0, accepted: 0 }
  const rss0 = process.memoryUsage().rss
  for (let i = 0; i < CASES; i++) {
    const k = int(GENUINE)
    const kind = i % 4
    let input: Buffer
    let remote = unkeyedRemote
    let mustReject = false
    let mustAccept = false
    let isForgery = false
    if (kind === 0) {
      input = bytes(int(8) === 0 ? int(4096) : int(200))
      // A random prefix that looks like an envelope now and then: magic, version and flags.
      if (int(2) === 0 && input.length > 4) input.set([0xca, 0xc7, 2, int(4)])
    } else if (kind === 1 || kind === 2) {
      const [, crcFixed, f] = damage[int(damage.length)]
      const original = kind === 1 ? plain[k] : signed[k]
      input = f(original)
      remote = kind === 1 ? unkeyedRemote : keyedRemote
      // (A bit flipped twice gives the original back: that one is genuine.)
      mustReject = !crcFixed && !input.equals(original)
      isForgery = kind === 2 && !input.equals(signed[k])
    } else {
      remote = keyedRemote
      const choice = int(4)
      if (choice === 0) {
        input = signed[k] // genuine: accepted
        mustAccept = true
      } else if (choice === 1) {
        const other = (k + 1 + int(GENUINE - 1)) % GENUINE
        input = resealFor(signed[other], digests[k]) // another key's entry under k, envelope checks made to match
        isForgery = true
      } else if (choice === 2) {
        input = plain[k] // an envelope written without the key
        isForgery = true
      } else {
        input = envelopeFor(digests[k], Buffer.concat([bytes(1 + int(64)), bytes(32)])) // a made-up tag
        isForgery = true
      }
    }
    const d = decode(remote, ioFor(remote, k), input)
    // A decode that looks slow is timed twice more and its fastest time kept: a slow input is
    // slow every time, a pause of the machine (GC, another process) is not.
    let ns = d.ns
    for (let again = 0; again < 2 && ns > 1e6; again++) ns = Math.min(ns, decode(remote, ioFor(remote, k), input).ns)
    if (ns > maxNs) maxNs = ns
    if (d.threw !== undefined) {
      panics++
      t.log(`case ${i}: threw ${d.threw}`)
      continue
    }
    const accepted = d.end >= 0
    if (accepted && (d.start > d.end || d.end > input.length)) outOfRange++
    if (accepted && mustReject) flippedAccepted++
    if (isForgery) {
      forged.cases++
      if (accepted) forged.accepted++
    }
    if (mustAccept) {
      genuine.cases++
      if (accepted) genuine.accepted++
    }
  }
  const rssGrowth = (process.memoryUsage().rss - rss0) / 2 ** 20
  const n = CASES.toLocaleString('en')
  figure(t, 'T16c', `decoder panics or throws in ${n} cases (seed ${SEED})`, panics, '= 0', panics === 0)
  figure(t, 'T16c', 'accepted entries with a payload range outside the input', outOfRange, '= 0', outOfRange === 0)
  figure(
    t,
    'T16c',
    'bit-flipped, truncated or extended envelopes accepted',
    flippedAccepted,
    '= 0',
    flippedAccepted === 0,
  )
  const rejected = forged.cases - forged.accepted
  figure(
    t,
    'T16c',
    'integrityKey: forged, altered or swapped entries rejected',
    `${rejected}/${forged.cases}`,
    '100 %',
    forged.accepted === 0 && forged.cases > 0,
  )
  figure(
    t,
    'T16c',
    'integrityKey: genuine entries accepted',
    `${genuine.accepted}/${genuine.cases}`,
    '100 %',
    genuine.accepted === genuine.cases && genuine.cases > 0,
  )
  // Time and memory last: a failed figure ends the test, and the checks above matter more.
  figure(
    t,
    'T16c',
    'longest decode (ms, through the addon; the fastest of 3 timings of any input over 1 ms)',
    Number((maxNs / 1e6).toFixed(3)),
    '< 10 ms',
    maxNs < 10e6,
  )
  figure(t, 'T16c', 'RSS growth over the run (MiB)', Number(rssGrowth.toFixed(1)), '< 64 MiB', rssGrowth < 64)
})
