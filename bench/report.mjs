// Text table of the results, and the machine they were measured on.
import { readFileSync } from 'node:fs'
import { arch, cpus, loadavg, platform, release, totalmem } from 'node:os'

export function machine() {
  let model = cpus()[0]?.model?.trim()
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))
    if (m) model = m[1].trim()
  } catch {
    // not Linux: os.cpus() it is
  }
  return {
    cpu: model || 'unknown CPU',
    cores: cpus().length,
    memory: `${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    node: process.version,
    os: `${platform()} ${release()} ${arch()}`,
    date: new Date().toISOString(),
    load: loadavg()
      .map((x) => x.toFixed(2))
      .join(' '),
  }
}

const ns = (x) => (x < 10 ? x.toFixed(2) : x < 1000 ? x.toFixed(1) : Math.round(x).toLocaleString('en'))
const ratio = (x) => (x === undefined ? '' : `${x >= 0.1 ? x.toFixed(2) : x.toPrecision(2)}×`)
const pct = (x) => (x === undefined ? '' : `${(x * 100).toFixed(0)}%`)
const verdict = (r) => (r.pass === undefined ? '' : r.pass ? 'PASS' : 'MISS')

function table(header, lines) {
  const all = [header, ...lines]
  const w = header.map((_, i) => Math.max(...all.map((l) => l[i].length)))
  const fmt = (l) =>
    '  ' +
    l
      .map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i])))
      .join('   ')
      .trimEnd()
  return [fmt(header), '  ' + '-'.repeat(w.reduce((a, b) => a + b + 3, -3)), ...lines.map(fmt)].join('\n')
}

export function render(s) {
  const out = [s.title]
  if (s.rows.some((r) => r.scaling)) {
    const growthOf = (r) => r.scaling.growth
    const base = growthOf(s.rows[0])
    out.push(
      table(
        ['implementation', 'ns/op @1', '@1e3', '@1e5', 'growth', 'cachette growth ÷ its', 'target', ''],
        s.rows.map((r, i) => [
          r.name,
          ...r.scaling.at.map(ns),
          `${growthOf(r).toFixed(2)}×`,
          i === 0 ? '' : ratio(base / growthOf(r)),
          r.target ?? '',
          verdict(r),
        ]),
      ),
    )
  } else {
    out.push(
      table(
        ['implementation', 'ns/op', '±', 'cachette ÷ peer', 'target', ''],
        s.rows.map((r) => [r.name, ns(r.ns), pct(r.spread), ratio(r.ratio), r.target ?? '', verdict(r)]),
      ),
    )
  }
  for (const n of s.notes) out.push(`  note: ${n}`)
  return out.join('\n')
}

export function summary(scenarios) {
  const lines = ['Targets (ratio = cachette time ÷ peer time; below 1 means cachette is faster):']
  for (const s of scenarios)
    for (const t of s.targets) lines.push(`  ${t.pass ? 'PASS' : 'MISS'}  ${t.text}  (${ratio(t.value)})`)
  return lines.join('\n')
}
