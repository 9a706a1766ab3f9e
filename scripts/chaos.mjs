// Runs the chaos suite and writes bench/results/chaos.md from the figures its tests report.
//   node scripts/chaos.mjs          the CI counts (`npm run test:chaos`)
//   node scripts/chaos.mjs --soak   the full counts (`npm run test:soak`)
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const soak = process.argv.includes('--soak')
const figures = join(root, 'bench', 'results', '.chaos-figures.jsonl')
rmSync(figures, { force: true })

const started = Date.now()
const ava = spawnSync('npx', ['ava', '--config', 'ava.chaos.config.mjs', ...process.argv.slice(2).filter((a) => a !== '--soak')], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, CACHETTE_SOAK: soak ? '1' : '0', CACHETTE_CHAOS_FIGURES: figures },
})
const minutes = ((Date.now() - started) / 60000).toFixed(1)

const rows = existsSync(figures)
  ? readFileSync(figures, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l))
  : []
const cell = (s) => String(s).replaceAll('|', '\\|')
const table = rows
  .map((r) => `| ${r.test} | ${cell(r.name)} | ${cell(r.value)} | ${cell(r.criterion)} | ${r.pass ? 'pass' : '**FAIL**'} |`)
  .join('\n')
const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
const md = `# Chaos suite results

Written by \`npm run ${soak ? 'test:soak' : 'test:chaos'}\` (${soak ? 'full soak counts' : 'CI counts'}) on ${new Date().toISOString().slice(0, 10)}.
Machine: ${cpu}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}.
Run time: ${minutes} min; ${rows.filter((r) => r.pass).length} of ${rows.length} figures within their criterion.
Test numbers are those of the reliability plan (\`docs/chaos.md\` says what each one does).

| test | figure | value | criterion | |
|---|---|---:|---|---|
${table}
`
writeFileSync(join(root, 'bench', 'results', soak ? 'chaos-soak.md' : 'chaos.md'), md)
rmSync(figures, { force: true })
console.log(`chaos: ${rows.length} figures, written to bench/results/${soak ? 'chaos-soak.md' : 'chaos.md'}`)
process.exit(ava.status ?? 1)
