import { appendFileSync, mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { ExecutionContext } from 'ava'

/** Where each run's figures go, one JSON line each; `scripts/chaos.mjs` turns them into `bench/results/chaos.md`. */
export const FIGURES_FILE = process.env.CACHETTE_CHAOS_FIGURES ?? join(__dirname, '..', '..', '..', 'bench', 'results', '.chaos-figures.jsonl')

/** True under `npm run test:soak`: the full counts of `../shared/research/reliability.md` §5. */
export const SOAK = process.env.CACHETTE_SOAK === '1'

/** `ci` under `npm run test:chaos`, `soak` under `npm run test:soak`. */
export const count = (ci: number, soak: number): number => (SOAK ? soak : ci)

/**
 * Reports one figure of a chaos test: prints `figure: <name> = <value> (<criterion>)`, records it for
 * the report, and fails the test when `pass` is false. `test` is the reliability plan's number (`T11`).
 */
export function figure(
  t: ExecutionContext,
  test: string,
  name: string,
  value: number | string,
  criterion: string,
  pass: boolean,
): void {
  const line = `figure: ${name} = ${value} (${criterion})`
  console.log(line)
  t.log(line)
  mkdirSync(dirname(FIGURES_FILE), { recursive: true })
  appendFileSync(FIGURES_FILE, JSON.stringify({ test, name, value, criterion, pass, mode: SOAK ? 'soak' : 'ci' }) + '\n')
  t.true(pass, `${name} = ${value}, wanted ${criterion}`)
}

/** The p-th percentile (0–100) of `xs`, by nearest rank. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]
}
