import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A temp dir of this test file, removed when the process exits. */
export function tempDir(label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `cachette-${label}-`))
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
  return dir
}

let n = 0
/** A namespace no other test uses. */
export function uniqueNamespace(label: string): string {
  return `${label}-${process.pid}-${n++}`
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
