import test from 'ava'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir, uniqueNamespace } from '../helpers/env'
import { runCycle, WRITER } from '../helpers/crash-cycles'
import type { Report } from '../helpers/crash-cycles'
import { runFixture } from '../fixtures/rpc'
import { count } from './helpers/figures'
import { report } from './helpers/report'

/*
 * T11: a writer process killed with SIGKILL at a random moment (5–200 ms into its writes; every
 * tenth cycle during its start-up), over and over. Each cycle's child first reopens the
 * directory and checks it against the expected-state log (`pending k v` appended before a write,
 * `acked k v` after the flush() that covers it resolved), then writes until it is killed.
 */

const dir = tempDir('chaos-disk-kill')
const CYCLES = count(100, 1000)

for (const durability of ['process', 'sync'] as const) {
  test.serial(`T11: a writer killed at random, ${CYCLES} cycles, durability '${durability}'`, async (t) => {
    const path = join(dir, durability)
    const namespace = uniqueNamespace(`kill-${durability}`)
    const logFile = join(dir, `${durability}.log`)
    let openFailures = 0
    let undecodable = 0
    let outside = 0
    let lost = 0
    let midWrite = 0
    const notes: string[] = []
    const add = (r: Report | undefined) => {
      if (!r) return
      undecodable += r.undecodable
      outside += r.outside
      lost += r.lost
      if (r.violations.length > 0) notes.push(`cycle ${r.cycle}: ${r.violations.slice(0, 3).join('; ')}`)
    }
    const started = Date.now()
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const c = await runCycle(path, namespace, logFile, cycle, durability)
      // Every cycle dies by our SIGKILL: one that exits by itself, or never reopens the
      // directory within 20 s, failed to open it.
      const startup = cycle % 10 === 9
      if (c.signal !== 'SIGKILL' || (!startup && !c.report)) {
        openFailures++
        notes.push(`cycle ${cycle}: exit ${c.code ?? c.signal}, ${c.stderr.slice(0, 300)}`)
      }
      if (c.killedMidWrite) midWrite++
      add(c.report)
    }
    // A last reopen after the last kill.
    const final = await runFixture(WRITER, [path, namespace, logFile, String(CYCLES), 'verify-only', durability])
    if (final.code !== 0) {
      openFailures++
      notes.push(`final reopen: exit ${final.code}, ${final.stderr.slice(0, 300)}`)
    } else add(JSON.parse(final.stdout) as Report)
    const ackedLines = readFileSync(logFile, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('acked')).length
    for (const n of notes.slice(0, 20)) t.log(n)
    t.log(
      `${CYCLES} cycles in ${((Date.now() - started) / 1000).toFixed(0)} s; ${ackedLines} acknowledged writes; ${midWrite} kills with a write in flight`,
    )

    const mode = `durability '${durability}'`
    report(t, 'T11', `open failures, ${mode}`, openFailures, '= 0', openFailures === 0)
    report(t, 'T11', `undecodable reads, ${mode}`, undecodable, '= 0', undecodable === 0)
    report(t, 'T11', `values outside {last acked, pending}, ${mode}`, outside, '= 0', outside === 0)
    report(t, 'T11', `lost acknowledged writes, ${mode}`, lost, '= 0', lost === 0)
    // The run saw what it claims to: acknowledged writes, and kills in the middle of writes.
    report(t, 'T11', `acknowledged writes, ${mode}`, ackedLines, `≥ ${CYCLES * 10}`, ackedLines >= CYCLES * 10)
    report(t, 'T11', `kills with a write in flight, ${mode}`, midWrite, `≥ ${CYCLES / 10}`, midWrite >= CYCLES / 10)
  })
}
