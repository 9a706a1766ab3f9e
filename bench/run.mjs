// npm run bench: cachette against the pure-JS and embedded-store caches, all in one run.
// BENCH_ONLY=1,6 runs some scenarios; BENCH_QUICK=1 runs shorter rounds (not for publishing).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { asyncHit } from './async.mjs'
import { diskHit, diskMiss } from './disk.mjs'
import { integrityOverhead } from './integrity.mjs'
import { openStores } from './disk-stores.mjs'
import { MISS_ROUNDS, ROUNDS, sinkValue } from './harness.mjs'
import { objectHit, primitiveHit } from './memory.mjs'
import { missStore } from './miss.mjs'
import { machine, render, summary } from './report.mjs'
import { pgScenario, redisScenarios } from './remote.mjs'
import { scaling } from './scaling.mjs'

const PEERS = [
  'fast-memoize',
  'moize',
  'memoizee',
  'lru-cache',
  'p-memoize',
  'lmdb',
  'classic-level',
  'better-sqlite3',
  'cacache',
  'msgpackr',
  'ioredis',
  'pg',
]
const version = (p) =>
  JSON.parse(readFileSync(new URL(`../node_modules/${p}/package.json`, import.meta.url), 'utf8')).version

const only = process.env.BENCH_ONLY?.split(',').map(Number)
const want = (i) => !only || only.includes(i)
const m = machine()
const head = [
  `cachette benchmark, ${m.date}`,
  `machine: ${m.cpu}, ${m.cores} cores, ${m.memory}, Node ${m.node}, ${m.os}; load average at start ${m.load}`,
  `method: warm-up, then ${ROUNDS} timed rounds per scenario (${MISS_ROUNDS} for 5), cases interleaved, order rotated each round; median ns/op;`,
  '        ± = half the range of the middle rounds; ratio = cachette time ÷ peer time (below 1: cachette faster)',
  `peers: ${PEERS.map((p) => `${p}@${version(p)}`).join(', ')}`,
].join('\n')
console.log(head + '\n')

const started = Date.now()
const results = []
async function step(i, f, ...args) {
  if (!want(i)) return
  const s = await f(...args)
  results.push(s)
  console.log(render(s) + '\n')
}

await step(1, primitiveHit, 'number')
await step(1, primitiveHit, 'string')
await step(2, objectHit)
await step(3, scaling)
await step(4, asyncHit)
await step(5, missStore)
if (want(6) || want(7)) {
  const stores = openStores()
  try {
    await step(6, diskHit, stores)
    await step(7, diskMiss, stores)
  } finally {
    await stores.close()
  }
}

if (want(8) || want(9)) {
  for (const s of await redisScenarios()) {
    results.push(s)
    console.log(render(s) + '\n')
  }
}
await step(10, pgScenario)
await step(11, integrityOverhead)

const tail = `${summary(results)}\n\ntotal ${((Date.now() - started) / 1000).toFixed(0)} s (sink ${sinkValue() > 0 ? 'ok' : '?'})`
console.log(tail)

const md = [
  '# cachette benchmark: latest run',
  '',
  `- CPU: ${m.cpu}`,
  `- cores: ${m.cores}`,
  `- memory: ${m.memory}`,
  `- Node: ${m.node}`,
  `- OS: ${m.os}`,
  `- date: ${m.date}`,
  `- load average at start: ${m.load}`,
  `- command: \`npm run bench\`${only ? ` (BENCH_ONLY=${only.join(',')})` : ''}${process.env.BENCH_QUICK === '1' ? ' (BENCH_QUICK=1)' : ''}`,
  '',
  '```',
  head,
  '',
  ...results.map((s) => render(s) + '\n'),
  tail,
  '```',
  '',
].join('\n')
mkdirSync(new URL('./results/', import.meta.url), { recursive: true })
writeFileSync(new URL('./results/latest.md', import.meta.url), md)
console.log('\nwrote bench/results/latest.md')
