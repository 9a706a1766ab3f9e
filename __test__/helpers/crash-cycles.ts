import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'

/*
 * The kill -9 loop of crash.spec.ts and of the chaos suite's T11: each cycle's child
 * (fixtures/crash-writer.ts) reopens the directory, checks it against the expected-state log the
 * previous children kept, reports, then writes until it is killed.
 */

export const WRITER = join(__dirname, '..', 'fixtures', 'crash-writer.ts')

/** What a cycle's child found when it reopened the directory. */
export interface Report {
  phase: 'verified'
  cycle: number
  acked: number
  checked: number
  violations: string[]
  /** Keys whose acknowledged version was missing. */
  lost: number
  /** Keys holding a value that is neither their last acknowledged version nor a later pending one. */
  outside: number
  undecodable: number
}

export interface Cycle {
  report?: Report
  signal: string | null
  code: number | null
  stderr: string
  /** The log ended with values handed to the cache but not yet acknowledged. */
  killedMidWrite: boolean
}

const random = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1))

/**
 * Runs one cycle: most are killed 5–200 ms into their writes; every tenth at a random moment of
 * its start-up. `durability` is the writer's option.
 */
export function runCycle(
  path: string,
  namespace: string,
  logFile: string,
  cycle: number,
  durability: 'process' | 'sync' = 'process',
): Promise<Cycle> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', WRITER, path, namespace, logFile, String(cycle), 'write', durability],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
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
