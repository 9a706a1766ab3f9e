// Timing harness: calibrate + warm up each case, then interleaved timed rounds; median ns/op.
// No forced GC between segments: a full GC shrinks V8's young generation, which then makes the
// next segment's allocations (the miss scenarios) several times slower than in a running program.

const QUICK = process.env.BENCH_QUICK === '1'
export const ROUNDS = QUICK ? 3 : 15
export const MISS_ROUNDS = QUICK ? 5 : 25
const ROUND_MS = QUICK ? 15 : 30
const CALIBRATE_MS = QUICK ? 5 : 15

/** Everything a loop returns goes here, so no loop can be optimized away. */
let sink = 0
export function consume(x) {
  sink += typeof x === 'number' && Number.isFinite(x) ? x : 1
}
export function sinkValue() {
  return sink
}

const now = () => process.hrtime.bigint()

async function timeOnce(c, n, state) {
  const t0 = now()
  const r = c.run(n, state)
  consume(c.async ? await r : r)
  return Number(now() - t0)
}

/** Half the range of the rounds after dropping the fastest and the slowest, relative to the median. */
function spread(xs) {
  const s = [...xs].sort((a, b) => a - b)
  const inner = s.length > 4 ? s.slice(1, -1) : s
  return (inner[inner.length - 1] - inner[0]) / 2 / median(xs)
}
function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/**
 * Runs `cases` (each `{ name, run(n, state) -> number|Promise<number>, async?, ops?, setup?(round) }`):
 * a case with `ops` always runs that many operations per round (after an untimed `setup`, whose
 * result is passed to `run`); the others are calibrated to ~ROUND_MS per round. Every round runs
 * every case once, in an order rotated by the round number, so slow drift (thermal, GC, page
 * cache) is spread over all cases alike. Returns `{ name -> median ns/op }`, and the spread of
 * each case's rounds under the (non-enumerable) key `spread`.
 */
export async function compare(cases, { rounds = ROUNDS } = {}) {
  const ns = new Map(cases.map((c) => [c.name, []]))
  const count = new Map()
  // Calibration doubles as warm-up: every case runs until it has been optimized and timed.
  for (const c of cases) {
    if (c.ops !== undefined) {
      for (let w = 0; w < 2; w++) {
        await timeOnce(c, c.ops, c.setup ? await c.setup(-1 - w) : undefined)
      }
      count.set(c.name, c.ops)
      continue
    }
    let n = 16
    let t = 0
    for (;;) {
      t = await timeOnce(c, n, undefined)
      if (t >= CALIBRATE_MS * 1e6) break
      n = t < 1e5 ? n * 8 : Math.ceil((n * CALIBRATE_MS * 1.3e6) / t)
    }
    // One more untimed pass at the final size: lets OSR-compiled loops settle.
    n = Math.max(1, Math.round((n * ROUND_MS * 1e6) / t))
    await timeOnce(c, n, undefined)
    count.set(c.name, n)
  }
  for (let r = 0; r < rounds; r++) {
    for (let j = 0; j < cases.length; j++) {
      const c = cases[(j + r) % cases.length]
      const state = c.setup ? await c.setup(r) : undefined
      const n = count.get(c.name)
      ns.get(c.name).push((await timeOnce(c, n, state)) / n)
    }
  }
  const out = {}
  for (const [name, xs] of ns) out[name] = median(xs)
  Object.defineProperty(out, 'spread', { value: Object.fromEntries([...ns].map(([name, xs]) => [name, spread(xs)])) })
  if (process.env.BENCH_DEBUG)
    for (const [name, xs] of ns)
      console.log(`    ${name} n=${count.get(name)}: ${xs.map((x) => x.toFixed(1)).join(' ')}`)
  return out
}

/**
 * A timing loop over `keys` (a power-of-two-long array): `expr` is summed for each key, written
 * with `$k` for the key, e.g. `loop('f($k).id', { f, keys })`. The position in `keys` carries over
 * from one run to the next, so short runs do not replay the same few keys every round. Each call
 * compiles a fresh copy, because V8 shares type feedback between closures of one source location:
 * a shared loop would turn every case's call site polymorphic and slow them down unequally.
 */
export function loop(expr, env, { async = false } = {}) {
  const mask = env.keys.length - 1
  if ((mask & (mask + 1)) !== 0) throw new Error('keys.length must be a power of two')
  const body = expr.replaceAll('$k', `keys[$pos++ & ${mask}]`)
  const src = `let $pos = 0; return ${async ? 'async ' : ''}function run(n) { let s = 0; for (let i = 0; i < n; i++) s += ${body}; return s }`
  return new Function(...Object.keys(env), src)(...Object.values(env))
}

/** A random access pattern: `size` (a power of two) indices drawn from [0, range), from a fixed seed. */
export function pattern(range, size = 1 << 16, seed = 0x9e3779b9) {
  const out = new Array(size)
  let x = seed >>> 0
  for (let i = 0; i < size; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[i] = x % range
  }
  return out
}

/** One scenario's result, printed by run.mjs. */
export function scenario(title, rows, targets = [], notes = []) {
  return { title, rows, targets, notes }
}

/** A row for case `key` of `compare`'s result `r`: the subject (cachette), or a peer with cachette's ratio to it. */
export function row(label, r, key, cachetteNs, extra = {}) {
  const ns = r[key]
  return {
    name: label,
    ns,
    spread: r.spread[key],
    ratio: cachetteNs === undefined ? undefined : cachetteNs / ns,
    ...extra,
  }
}
