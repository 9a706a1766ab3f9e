import test from 'ava'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { memoize } from '../../src-ts/index'
import { tempDir } from '../helpers/env'
import { RAW_LOCK_ERROR } from '../fixtures/rpc'
import { count, figure } from './helpers/figures'

/*
 * T17 of the reliability plan: other processes open a disk cache directory while its owner
 * lives, and the owner goes away (killed, or closed) while guests have requests in flight.
 * Every process runs the disk-loop fixture with `onBackendError: 'throw'`, so any failure is seen.
 */

const dir = tempDir('chaos-disk-openers')
const LOOP = join(__dirname, '..', 'fixtures', 'disk-loop.ts')
const valueOf = (key: string) => `value of ${key}`
let n = 0
const fresh = (label: string) => join(dir, `${label}-${n++}`)

interface Report {
  pid: number
  role: string
  calls: number
  wrong: number
  errors: string[]
}

/** Starts the disk-loop fixture (see its header); `ready` resolves with its first role. */
function loop(path: string, prefix: string, ms: number, shared = 0, stopFile = '') {
  const args = [path, 't17', prefix, String(ms), String(shared), ...(stopFile ? [stopFile] : [])]
  const child = spawn(process.execPath, ['--import', 'tsx', LOOP, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const exit = new Promise<string>((resolve) => child.once('exit', (c, s) => resolve(String(c ?? s))))
  const lines = createInterface({ input: child.stdout })
  const failed = exit.then((code) => Promise.reject(new Error(`exited ${code}: ${stderr}`)))
  failed.catch(() => undefined)
  const ready = Promise.race([new Promise<string>((r) => lines.once('line', (l) => r(l.split(' ')[1]))), failed])
  const report = Promise.race([
    new Promise<Report>((r) => lines.on('line', (l) => l.startsWith('{') && r(JSON.parse(l) as Report))),
    failed,
  ])
  report.catch(() => undefined)
  return { child, ready, report, exit, stderr: () => stderr }
}

test.serial(
  'T17: 50 openers in other processes while the owner lives: no crash, no raw LOCK error, every read right',
  async (t) => {
    const path = fresh('openers')
    // This process owns the directory and holds the keys every opener peeks at.
    const shared = memoize((k: string) => valueOf(k), {
      backend: 'disk',
      path,
      namespace: 't17',
      onBackendError: 'throw',
    })
    for (let i = 0; i < 50; i++) shared(`shared-${i}`)
    await shared.flush()
    const openers = count(50, 200)
    const wave = 10
    let crashes = 0
    let rawLock = 0
    let wrong = 0
    let errors = 0
    let guests = 0
    for (let from = 0; from < openers; from += wave) {
      const procs = Array.from({ length: Math.min(wave, openers - from) }, (_, i) =>
        loop(path, `opener${from + i}`, 0, 50),
      )
      for (const p of procs) {
        const [report, code] = await Promise.all([p.report.catch((e: Error) => e), p.exit])
        if (code !== '0' || report instanceof Error) {
          crashes++
          t.log(`opener ${p.child.pid}: exit ${code}: ${String(report)}`)
          continue
        }
        if (report.role === 'guest') guests++
        wrong += report.wrong
        errors += report.errors.length
        for (const e of report.errors) t.log(`opener ${report.pid}: ${e}`)
        if (RAW_LOCK_ERROR.test(p.stderr()) || report.errors.some((e) => RAW_LOCK_ERROR.test(e))) rawLock++
      }
    }
    figure(t, 'T17', `openers that crashed (of ${openers})`, crashes, '0', crashes === 0)
    figure(t, 'T17', 'openers whose output or errors hold raw RocksDB LOCK text', rawLock, '0', rawLock === 0)
    figure(t, 'T17', 'wrong values read by the openers', wrong, '0', wrong === 0)
    figure(t, 'T17', 'errors the openers met', errors, '0', errors === 0)
    figure(
      t,
      'T17',
      'openers that worked as guests of the live owner',
      `${guests}/${openers}`,
      `${openers}/${openers}`,
      guests === openers,
    )
    await shared.close()
  },
)

for (const how of ['killed', 'closed'] as const) {
  test.serial(
    `T17: the owner ${how === 'killed' ? 'is killed (SIGKILL)' : 'closes the directory'} while 3 guests have requests in flight: the guests keep working`,
    async (t) => {
      const trials = count(3, 20)
      let errors = 0
      let wrong = 0
      let owners = 0
      let calls = 0
      for (let trial = 0; trial < trials; trial++) {
        const path = fresh(`owner-${how}`)
        // A closing owner stops once told to (the fixture closes every handle, then exits).
        const stop = `${path}.stop`
        const owner = loop(path, 'owner', 60_000, 50, stop)
        t.is(await owner.ready, 'owner')
        const guests = [0, 1, 2].map((i) => loop(path, `guest${i}`, 4000, 50))
        t.deepEqual(await Promise.all(guests.map((g) => g.ready)), ['guest', 'guest', 'guest'])
        await new Promise((r) => setTimeout(r, 1000))
        if (how === 'killed') owner.child.kill('SIGKILL')
        else writeFileSync(stop, '')
        await owner.exit
        const reports = await Promise.all(guests.map((g) => g.report))
        for (const r of reports) {
          errors += r.errors.length
          wrong += r.wrong
          calls += r.calls
          for (const e of r.errors.slice(0, 3)) t.log(`trial ${trial}, guest ${r.pid}: ${e}`)
        }
        // (Guests that finish first close, and hand the directory on: count that one took it.)
        if (reports.some((r) => r.role === 'owner')) owners++
        await Promise.all(guests.map((g) => g.exit))
      }
      figure(
        t,
        'T17',
        `owner ${how}: errors the guests met (${calls} calls, ${trials} trials)`,
        errors,
        '0',
        errors === 0,
      )
      figure(t, 'T17', `owner ${how}: wrong values the guests read`, wrong, '0', wrong === 0)
      figure(
        t,
        'T17',
        `owner ${how}: trials where a guest took the directory over`,
        `${owners}/${trials}`,
        `${trials}/${trials}`,
        owners === trials,
      )
    },
  )
}
