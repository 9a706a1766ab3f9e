import { closeSync, lstatSync, openSync, readdirSync, statSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { memoize } from '../../src-ts/index'

/*
 * The files of a disk cache directory, for tests that damage them or check their modes.
 */

/** uid 65534, the user tests make "other users'" files with (they run as root). */
export const NOBODY = 65534

/** Whether this process may make files of another user. */
export const isRoot = process.getuid?.() === 0

/** The names in `dir` that end with `suffix`, sorted. */
export function filesEnding(dir: string, suffix: string): string[] {
  return readdirSync(dir)
    .filter((n) => n.endsWith(suffix))
    .sort()
}

/** The permission bits of every file and directory under `dir` (links not followed), by relative path. */
export function modes(dir: string, prefix = ''): Record<string, number> {
  const out: Record<string, number> = {}
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    const st = lstatSync(p)
    out[prefix + name] = st.mode & 0o7777
    if (st.isDirectory()) Object.assign(out, modes(p, `${prefix}${name}/`))
  }
  return out
}

/** The value `key` of round `round` has: deterministic, so any process can check a value read. */
export const valueOf = (key: number, round = 0): string => `${round}:${key}:${'v'.repeat(150)}`

/**
 * Fills `path` (namespace `namespace`) with `keys` entries of round 0, then opens it once more,
 * so that they are in SST files (an open turns the WAL into one) and not only in the WAL.
 */
export async function filledDirectory(path: string, namespace: string, keys: number): Promise<void> {
  const f = memoize((k: number) => valueOf(k), { backend: 'disk', path, namespace, onBackendError: 'throw' })
  for (let k = 0; k < keys; k++) f(k)
  await f.flush()
  await f.close()
  const g = memoize((k: number) => k, { backend: 'disk', path, namespace: 'reopen', onBackendError: 'throw' })
  g.has(0)
  await g.close()
  if (filesEnding(path, '.sst').length === 0) throw new Error(`no SST file in ${path}`)
}

/** Overwrites `bytes.length` bytes of `file` at `at`. */
export function overwrite(file: string, at: number, bytes: Buffer): void {
  const fd = openSync(file, 'r+')
  try {
    writeSync(fd, bytes, 0, bytes.length, at)
  } finally {
    closeSync(fd)
  }
}

/** Zeroes 4 KiB in the middle of the largest SST file of `dir`; returns its name. */
export function zeroMiddleOfLargestSst(dir: string): string {
  const ssts = filesEnding(dir, '.sst')
  if (ssts.length === 0) throw new Error(`no SST file in ${dir}`)
  const sst = ssts.reduce((a, b) => (statSync(join(dir, a)).size >= statSync(join(dir, b)).size ? a : b))
  const size = statSync(join(dir, sst)).size
  if (size < 64 * 1024) throw new Error(`${sst} has ${size} bytes only`)
  overwrite(join(dir, sst), Math.floor(size / 2), Buffer.alloc(4096))
  return sst
}
