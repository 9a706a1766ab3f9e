import test from 'ava'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { tempDir, uniqueNamespace } from './helpers/env'
import { RAW_LOCK_ERROR, runFixture } from './fixtures/rpc'

/*
 * kill -9 at random moments: each cycle's child reopens the directory, checks it against the
 * expected-state log the previous children kept, reports, then writes until it is killed.
 */

const dir = tempDir('crash')
const WRITER = join(__dirname, 'fixtures', 'crash-writer.ts')

interface Report {
  phase: 'verified'
  cycle: number
  acked: number
  checked: number
  violations: string[]
  undecodable: number
}

interface Cycle {
  report?: Report
  signal: string | null
  code: number | null
  stderr: string
  /** The log ended with values handed to the cache but not yet acknowledged. */
  killedMidWrite: boolean
}

const random = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1))

/** Runs one cycle: most are killed 5–200 ms into their writes; every tenth at a random moment of its start-up. */
function runCycle(path: string, namespace: string, logFile: string, cycle: number): Promise<Cycle> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', WRITER, path, namespace, logFile, String(cycle)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stderr = ''
    let report: Report | undefined
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const kill = () => child.kill('SIGKILL')
    const duringStartup = cycle % 10 === 9
    const timers = [
      // "did not hang": a cycle that never reopens the cache is killed and reported.
      setTimeout(kill, 20_000),
      ...(duringStartup ? [setTimeout(kill, random(0, 400))] : []),
    ]
    createInterface({ input: child.stdout }).on('line', (line) => {
      const msg = JSON.parse(line) as Report
      if (msg.phase !== 'verified') return
      report = msg
      if (!duringStartup) timers.push(setTimeout(kill, random(5, 200)))
    })
    child.once('error', reject)
    child.once('close', (code, signal) => {
      for (const t of timers) clearTimeout(t)
      const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').trimEnd() : ''
      const last = log.slice(log.lastIndexOf('\n') + 1)
      resolve({ report, code, signal, stderr, killedMidWrite: last.startsWith('pending') })
    })
  })
}

test('a writer killed with SIGKILL at a random moment, 100 cycles: the cache always reopens, 0 acknowledged writes lost, 0 values that were never written', async (t) => {
  const path = join(dir, 'cache')
  const namespace = uniqueNamespace('crash')
  const logFile = join(dir, 'expected-state.log')
  const cycles: Cycle[] = []
  for (let cycle = 0; cycle < 100; cycle++) {
    const c = await runCycle(path, namespace, logFile, cycle)
    cycles.push(c)
    const startup = cycle % 10 === 9
    // Every cycle dies by our SIGKILL; an exit of its own means it failed (e.g. could not open).
    t.is(c.signal, 'SIGKILL', `cycle ${cycle} exited by itself (code ${c.code}):\n${c.stderr}`)
    if (!startup) t.truthy(c.report, `cycle ${cycle} did not reopen the cache within 20 s:\n${c.stderr}`)
    if (c.report) {
      t.deepEqual(c.report.violations, [], `cycle ${cycle}`)
      t.is(c.report.undecodable, 0, `cycle ${cycle} read undecodable values`)
    }
    t.notRegex(c.stderr, RAW_LOCK_ERROR)
  }

  // A last reopen after the 100th kill.
  const final = await runFixture(WRITER, [path, namespace, logFile, '100', 'verify-only'])
  t.is(final.code, 0, final.stderr)
  const report = JSON.parse(final.stdout) as Report
  t.deepEqual(report.violations, [])
  t.is(report.undecodable, 0)

  // The test saw what it claims to: writes acknowledged across the run, kills in the middle of writes.
  t.is(report.acked, 200, 'every key should have been acknowledged at least once')
  t.true(report.checked >= report.acked)
  const log = readFileSync(logFile, 'utf8')
  const ackedLines = log.split('\n').filter((l) => l.startsWith('acked')).length
  t.true(ackedLines >= 90 * 20, `only ${ackedLines} acknowledged writes in 100 cycles`)
  const midWrite = cycles.filter((c) => c.killedMidWrite).length
  t.true(midWrite >= 10, `only ${midWrite} of 100 kills hit a write in flight`)
  t.log(
    `${ackedLines} acknowledged writes; ${midWrite} kills with a write in flight; ${cycles.filter((c) => c.report).length} cycles verified`,
  )
})
