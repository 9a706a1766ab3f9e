import test from 'ava'
import { randomInt } from 'node:crypto'
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { memoize } from '../../src-ts/index'
import { tempDir } from '../helpers/env'
import { count, figure } from './helpers/figures'

/*
 * T16 (a) of the reliability plan: bytes flipped in the files of a closed disk cache directory.
 * Whatever the damage, the directory opens (repaired, or set aside and recreated), no read
 * returns another value or throws, and writes made afterwards are kept.
 */

const dir = tempDir('chaos-disk-damage')
let n = 0
const fresh = (label: string) => join(dir, `${label}-${n++}`)
const valueOf = (key: string) => `value of ${key}`

/** Flips `k` random bytes of `file` (XOR with a random non-zero byte). */
function flip(file: string, k: number): void {
  const bytes = readFileSync(file)
  if (bytes.length === 0) return
  for (let i = 0; i < k; i++) bytes[randomInt(bytes.length)] ^= randomInt(1, 256)
  writeFileSync(file, bytes)
}

test('T16 (a): bytes flipped in the SST, WAL, MANIFEST or CURRENT file of a closed directory: it opens, no wrong value, no read throws', async (t) => {
  const keys = 600
  const template = fresh('template')
  // Entries in SST files (an open turns the WAL into one) and in the WAL.
  for (let round = 0; round < 2; round++) {
    const f = memoize((k: number) => valueOf(String(k)), {
      backend: 'disk',
      path: template,
      namespace: 't16',
      onBackendError: 'throw',
    })
    for (let k = round * 400; k < Math.min(keys, (round + 1) * 400); k++) f(k)
    await f.flush()
    await f.close()
  }
  const kinds: [string, (name: string) => boolean][] = [
    ['SST', (n) => n.endsWith('.sst')],
    ['WAL', (n) => n.endsWith('.log')],
    ['MANIFEST', (n) => n.startsWith('MANIFEST-')],
    ['CURRENT', (n) => n === 'CURRENT'],
  ]
  for (const [kind, pick] of kinds) t.true(readdirSync(template).some(pick), `no ${kind} file in the template`)
  const trials = count(100, 1000)
  let wrong = 0
  let failedOpens = 0
  let threw = 0
  let intact = 0
  let repaired = 0
  let quarantined = 0
  let lostAfter = 0
  const started = Date.now()
  for (let trial = 0; trial < trials; trial++) {
    const path = fresh('trial')
    cpSync(template, path, { recursive: true, filter: (src) => !src.endsWith('.owner.sock') })
    const [kind, pick] = kinds[trial % kinds.length]
    for (const name of readdirSync(path).filter(pick)) flip(join(path, name), 1 + randomInt(8))
    let f: ReturnType<typeof memoize<(k: number) => string>>
    try {
      f = memoize((k: number) => valueOf(String(k)), {
        backend: 'disk',
        path,
        namespace: 't16',
        onBackendError: 'throw',
      })
      f.has(-1)
    } catch (e) {
      failedOpens++
      t.log(`trial ${trial} (${kind}): open failed: ${(e as Error).message}`)
      continue
    }
    let found = 0
    for (let k = 0; k < keys; k++) {
      try {
        const v = f.peek(k)
        if (v !== undefined && v !== valueOf(String(k))) {
          wrong++
          t.log(`trial ${trial} (${kind}): key ${k} read ${JSON.stringify(v)}`)
        }
        if (v !== undefined) found++
      } catch (e) {
        threw++
        if (threw <= 5) t.log(`trial ${trial} (${kind}): key ${k}: ${(e as Error).message}`)
      }
    }
    // Written again, then read: the directory works after the damage.
    for (let k = 0; k < 50; k++) f(k)
    await f.flush()
    for (let k = 0; k < 50; k++) {
      const v = f.peek(k)
      if (v === undefined) lostAfter++
      else if (v !== valueOf(String(k))) wrong++
    }
    await f.close()
    if (found === keys) intact++
    if (existsSync(join(path, 'lost'))) repaired++
    if (readdirSync(path).some((n) => n.startsWith('.corrupt-'))) quarantined++
    rmSync(path, { recursive: true, force: true })
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(1)
  figure(t, 'T16a', `wrong values (${trials} trials × ${keys} keys, ${seconds} s)`, wrong, '0', wrong === 0)
  figure(
    t,
    'T16a',
    'failed opens (open succeeds, or the directory is repaired or set aside)',
    failedOpens,
    '0',
    failedOpens === 0,
  )
  figure(t, 'T16a', 'reads that threw', threw, '0', threw === 0)
  figure(t, 'T16a', 'entries written and flushed after the damage, then missing', lostAfter, '0', lostAfter === 0)
  figure(
    t,
    'T16a',
    'trials where every entry survived / some files went to lost/ / the database was set aside',
    `${intact} / ${repaired} / ${quarantined}`,
    'reported',
    true,
  )
})
