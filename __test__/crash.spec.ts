import test from 'ava'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { runCycle, WRITER } from './helpers/crash-cycles'
import type { Cycle, Report } from './helpers/crash-cycles'
import { tempDir, uniqueNamespace } from './helpers/env'
import { RAW_LOCK_ERROR, runFixture } from './fixtures/rpc'

/*
 * kill -9 at random moments: each cycle's child reopens the directory, checks it against the
 * expected-state log the previous children kept, reports, then writes until it is killed.
 */

const dir = tempDir('crash')

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
