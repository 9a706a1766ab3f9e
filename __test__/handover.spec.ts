import test from 'ava'
import type { ExecutionContext } from 'ava'
import { join } from 'node:path'
import { memoize } from '../src-ts/index'
import { sleep, tempDir, uniqueNamespace } from './helpers/env'
import { RAW_LOCK_ERROR, spawnPeer } from './fixtures/rpc'
import type { Peer, Reply } from './fixtures/rpc'

/*
 * The owner of a disk directory goes away while its guests work: what the guests had sent and
 * seen acknowledged survives, and they never see an error of the handover.
 */

const dir = tempDir('handover')
const PEER = join(__dirname, 'fixtures', 'handover-peer.ts')
const valueOf = (key: string) => `value of ${key}`

interface WriteReply extends Reply {
  acked: string[]
  errors: string[]
  stats: number
  role: string
}

/** An owner, then `guests` guests, on a fresh directory. */
async function start(t: ExecutionContext, label: string, guests: number) {
  const path = join(dir, label)
  const namespace = uniqueNamespace(label)
  const owner = spawnPeer(PEER, [path, namespace])
  const all: Peer[] = [owner]
  t.teardown(() => {
    for (const p of all) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
  })
  t.is((await owner.request<Reply & { role: string }>({ cmd: 'hello' })).role, 'owner')
  const rest = Array.from({ length: guests }, () => spawnPeer(PEER, [path, namespace]))
  all.push(...rest)
  for (const g of rest) t.is((await g.request<Reply & { role: string }>({ cmd: 'hello' })).role, 'guest')
  return { path, namespace, owner, guests: rest, all }
}

/** The acknowledged keys a fresh handle of the directory does not read back. */
async function missing(path: string, namespace: string, acked: string[]): Promise<string[]> {
  const check = memoize((_k: string): string | undefined => undefined, { backend: 'disk', path, namespace })
  const lost = acked.filter((k) => check.peek(k) !== valueOf(k))
  await check.close()
  return lost
}

async function stop(t: ExecutionContext, peers: Peer[]) {
  for (const p of peers) if (p.child.exitCode === null && p.child.signalCode === null) await p.request({ cmd: 'exit' })
  for (const p of peers) {
    await p.exited
    t.notRegex(p.stderr(), RAW_LOCK_ERROR)
  }
}

test.serial(
  'the owner close()s while 3 guests write and flush every 25 writes, 6 runs: 0 acknowledged writes lost, no guest sees an error',
  async (t) => {
    const lost: number[] = []
    const errors: string[] = []
    const roles: string[][] = []
    let acked = 0
    for (let run = 0; run < 6; run++) {
      const { path, namespace, owner, guests, all } = await start(t, `close-${run}`, 3)
      const writing = guests.map((g, i) => g.request<WriteReply>({ cmd: 'write', prefix: `g${i}`, ms: 1500 }))
      await sleep(300 + Math.floor(Math.random() * 600))
      await owner.request({ cmd: 'close', queue: 2000 })
      const replies = await Promise.all(writing)
      await stop(t, all)
      const keys = replies.flatMap((r) => r.acked)
      acked += keys.length
      lost.push((await missing(path, namespace, keys)).length)
      errors.push(...replies.flatMap((r) => r.errors))
      roles.push(replies.map((r) => r.role).sort())
    }
    const tally = new Map<string, number>()
    for (const e of errors) tally.set(e, (tally.get(e) ?? 0) + 1)
    t.log(
      `${acked} acknowledged writes in 6 runs; lost per run: ${lost.join(', ')}; errors: ${JSON.stringify([...tally])}`,
    )
    t.deepEqual(lost, [0, 0, 0, 0, 0, 0], 'acknowledged writes lost in a handover')
    t.deepEqual(errors, [], 'guests saw errors during the handover')
    // After the handover one of the guests owns the directory.
    for (const r of roles) t.deepEqual(r, ['guest', 'guest', 'owner'])
    t.true(acked > 6 * 3 * 100, `only ${acked} acknowledged writes`)
  },
)

for (const how of ['close()s', 'is killed'] as const) {
  test.serial(`stats() in 3 guests answers while the owner ${how} and a guest takes over`, async (t) => {
    const { guests, owner, all } = await start(t, `stats-${how === 'close()s' ? 'close' : 'kill'}`, 3)
    const asking = guests.map((g) =>
      g.request<Reply & { answers: number; errors: string[]; role: string }>({ cmd: 'stats', ms: 1500 }),
    )
    await sleep(300)
    if (how === 'close()s') await owner.request({ cmd: 'close', queue: 50_000 })
    else owner.child.kill('SIGKILL')
    const replies = await Promise.all(asking)
    t.deepEqual(
      replies.flatMap((r) => r.errors),
      [],
      'stats() threw during the handover',
    )
    t.true(replies.every((r) => r.answers > 50))
    t.deepEqual(replies.map((r) => r.role).sort(), ['guest', 'guest', 'owner'])
    await stop(t, how === 'close()s' ? all : all.filter((p) => p !== owner))
  })
}
