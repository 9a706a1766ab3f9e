import test from 'ava'
import type { ExecutionContext } from 'ava'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir, uniqueNamespace } from '../helpers/env'
import { spawnPeer } from '../fixtures/rpc'
import type { Peer, Reply } from '../fixtures/rpc'
import { report } from './helpers/report'

/*
 * T15: the cache directory on a full disk, a 1 MiB tmpfs (a real ENOSPC; mounting needs root).
 * Half of it is taken by a ballast file, removed once the cache has filled the rest: "space is
 * back". An owner and a guest process write through memoized calls with the default
 * onBackendError 'fallback' and flush every 25 calls; then a fresh process reopens the directory.
 */

const root = tempDir('chaos-disk-full')
const PEER = join(__dirname, '..', 'fixtures', 'disk-full-peer.ts')

interface Written extends Reply {
  written: string[]
  acked: string[]
  callErrors: number
  errors: number
  warnings: number
}

/** Mounts a tmpfs of `size` on `dir`, unmounted when the test ends, passes or fails (or the process exits). */
function tmpfs(t: ExecutionContext, dir: string, size: string) {
  mkdirSync(dir, { recursive: true })
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir])
  let mounted = true
  const unmount = () => {
    if (!mounted) return
    mounted = false
    try {
      execFileSync('umount', [dir])
    } catch {
      execFileSync('umount', ['-l', dir])
    }
  }
  t.teardown(unmount)
  // Before tempDir's own exit handler, which removes the directory the tmpfs is mounted on.
  process.prependOnceListener('exit', unmount)
}

test.serial(
  'T15: a full disk: no call fails, flush() rejects while writes are dropped, writes resume once space is back, nothing damaged',
  async (t) => {
    if (process.getuid?.() !== 0) return t.fail('T15 mounts a tmpfs: run the chaos suite as root')
    const mnt = join(root, 'mnt')
    tmpfs(t, mnt, '1m')
    const ballast = join(mnt, 'ballast')
    writeFileSync(ballast, randomBytes(512 << 10))
    const path = join(mnt, 'cache')
    const namespace = uniqueNamespace('full')
    const peers: Peer[] = []
    const spawn = () => {
      const p = spawnPeer(PEER, [path, namespace])
      peers.push(p)
      return p
    }
    // Killed before the tmpfs is unmounted (teardowns run last registered first).
    t.teardown(() => {
      for (const p of peers) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
    })
    const owner = spawn()
    t.is((await owner.request<Reply & { role: string }>({ cmd: 'hello' })).role, 'owner')
    const guest = spawn()
    t.is((await guest.request<Reply & { role: string }>({ cmd: 'hello' })).role, 'guest')

    const fill = await owner.request<Written & { rejected: boolean }>({ cmd: 'fill', prefix: 'fill' })
    // The disk is full: every flush of new writes must reject (defect 2a: one resolved, its keys lost).
    const ownerFull = await owner.request<Written & { resolved: number }>({ cmd: 'write', prefix: 'of', batches: 4 })
    const guestFull = await guest.request<Written & { resolved: number }>({ cmd: 'write', prefix: 'gf', batches: 4 })
    rmSync(ballast)
    const ownerBack = await owner.request<Written & { resumedAfter: number | null }>({
      cmd: 'resume',
      prefix: 'or',
      ms: 15_000,
    })
    const guestBack = await guest.request<Written & { resumedAfter: number | null }>({
      cmd: 'resume',
      prefix: 'gr',
      ms: 15_000,
    })
    await owner.request({ cmd: 'exit' })
    await guest.request({ cmd: 'exit' })
    const codes = [await owner.exited, await guest.exited]

    const all = [fill, ownerFull, guestFull, ownerBack, guestBack]
    const acked = all.flatMap((r) => r.acked)
    const written = all.flatMap((r) => r.written)
    const verifier = spawn()
    const check = await verifier.request<Reply & { missing: number; wrong: number; undecodable: number }>({
      cmd: 'verify',
      keys: acked,
    })
    const reread = await verifier.request<Reply & { missing: number; wrong: number; undecodable: number }>({
      cmd: 'verify',
      keys: written,
    })
    // The writes whose flush() said writes resumed: stored for real?
    const back = await Promise.all(
      [ownerBack, guestBack].map((r) =>
        verifier.request<Reply & { missing: number }>({ cmd: 'verify', keys: r.acked }).then((v) => v.missing),
      ),
    )
    await verifier.request({ cmd: 'exit' })
    codes.push(await verifier.exited)
    t.log(
      `filled after ${fill.written.length} writes (${fill.acked.length} acknowledged); ${acked.length} acknowledged, ${written.length} written in all; ${reread.missing} of those not stored`,
    )
    for (const p of peers) if (p.stderr().includes('Error')) t.log(p.stderr().slice(0, 2000))

    report(t, 'T15', 'the disk filled up (a flush() rejected)', fill.rejected ? 'yes' : 'no', 'yes', fill.rejected)
    const crashes = codes.filter((c) => c !== 0).length
    report(t, 'T15', 'crashes', crashes, '= 0', crashes === 0)
    const callErrors = all.reduce((n, r) => n + r.callErrors, 0)
    report(t, 'T15', "user-visible errors of calls under 'fallback'", callErrors, '= 0', callErrors === 0)
    report(t, 'T15', 'stats().errors after ENOSPC, owner', ownerFull.errors, '> 0', ownerFull.errors > 0)
    report(t, 'T15', 'stats().errors after ENOSPC, guest', guestFull.errors, '> 0', guestFull.errors > 0)
    report(t, 'T15', 'warnings, owner', ownerBack.warnings, '= 1', ownerBack.warnings === 1)
    report(t, 'T15', 'warnings, guest', guestBack.warnings, '= 1', guestBack.warnings === 1)
    const resolvedFull = ownerFull.resolved + guestFull.resolved
    report(
      t,
      'T15',
      'flush() resolved while its writes were dropped (8 tried)',
      resolvedFull,
      '= 0',
      resolvedFull === 0,
    )
    // Resumed: a flush() resolved, and the writes it covered are there after a reopen.
    for (const [who, r, missing] of [
      ['owner', ownerBack, back[0]],
      ['guest', guestBack, back[1]],
    ] as const) {
      const ms = missing === 0 ? r.resumedAfter : null
      report(
        t,
        'T15',
        `writes resume after space is freed, ${who} (ms)`,
        ms ?? 'never',
        '< 10000',
        ms !== null && ms < 10_000,
      )
    }
    report(t, 'T15', 'acknowledged writes missing after reopen', check.missing, '= 0', check.missing === 0)
    const corrupt = reread.wrong + reread.undecodable
    report(t, 'T15', 'corrupt entries on reopen', corrupt, '= 0', corrupt === 0)
  },
)
