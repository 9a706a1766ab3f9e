import test from 'ava'
import { CachetteError, memoize } from '../src-ts/index'
import { sleep, uniqueNamespace } from './helpers/env'
import { freePort, silentServer, startRedis } from './helpers/servers'

/*
 * backendTimeout and the circuit breaker, against servers that fail as real ones do: a listener
 * that accepts connections and never answers (a stalled server), a closed port (refused), and a
 * redis-server of this file stopped with SIGSTOP and resumed. Every operation on the server
 * ends within backendTimeout (the error says so); after 5 failures in a row the breaker fails
 * calls at once, saying so, until a probe finds the server back.
 */

/** Exactly what a call of `f` rejects with. */
async function rejection(p: Promise<unknown>): Promise<CachetteError> {
  try {
    await p
  } catch (e) {
    return e as CachetteError
  }
  throw new Error('the call resolved')
}

/** The messages of the CachetteWarnings emitted while `run` runs. */
async function warningsOf(run: () => Promise<void>): Promise<string[]> {
  const seen: string[] = []
  const on = (w: Error) => {
    if (w.name === 'CachetteWarning') seen.push(w.message)
  }
  process.on('warning', on)
  try {
    await run()
    await sleep(10) // warnings are emitted on a later tick
  } finally {
    process.off('warning', on)
  }
  return seen
}

const BREAKER = /circuit breaker opening #1\)/

for (const kind of ['redis', 'postgres', 'mysql'] as const) {
  const backend = kind === 'redis' ? 'redis' : 'sql'
  test(`${kind} that never answers: 5 calls reject naming backendTimeout, then the breaker rejects at once`, async (t) => {
    const silent = await silentServer()
    t.teardown(() => silent.close())
    let calls = 0
    const f = memoize(async (k: number) => (calls++, k), {
      backend,
      url: silent.url(kind),
      namespace: uniqueNamespace(`silent-${kind}`),
      backendTimeout: 100,
      onBackendError: 'throw',
    })
    t.teardown(() => f.close())
    for (let i = 0; i < 5; i++) {
      const e = await rejection(f(i))
      t.is(e.code, 'ERR_BACKEND_UNAVAILABLE')
      t.regex(e.message, /no answer within 100 ms \(backendTimeout\)/, `call ${i}`)
    }
    for (let i = 0; i < 3; i++) {
      const e = await rejection(f(i))
      t.is(e.code, 'ERR_BACKEND_UNAVAILABLE')
      t.regex(e.message, BREAKER)
      t.regex(e.message, /skipped until it answers again, tried once after 1000 ms/)
    }
    t.is(calls, 0)
  })
}

test("a server that never answers, under 'fallback': every call computes, each is counted, and one warning says the breaker opened, however often it reopens", async (t) => {
  const silent = await silentServer()
  t.teardown(() => silent.close())
  let calls = 0
  const f = memoize(async (k: number) => (calls++, { k }), {
    backend: 'redis',
    url: silent.url('redis'),
    namespace: uniqueNamespace('silent-fallback'),
    backendTimeout: 100,
  })
  t.teardown(() => f.close())
  let n = 0
  const warnings = await warningsOf(async () => {
    // Past the first cooldown too: the probe the silent server leaves unanswered reopens the
    // breaker, which is the same opening (no second warning).
    const end = Date.now() + 1600
    for (; n < 10 || Date.now() < end; n++) t.deepEqual(await f(n), { k: n })
  })
  t.is(calls, n)
  const s = await f.stats()
  t.true(s.errors >= n, `errors ${s.errors} of ${n} calls`)
  t.is(warnings.filter((w) => BREAKER.test(w)).length, 1, warnings.join('\n'))
  t.is(warnings.filter((w) => /no answer within 100 ms/.test(w) && !BREAKER.test(w)).length, 1, warnings.join('\n'))
})

test('a refused connection: calls reject as refused, and after 5 the breaker rejects them at once', async (t) => {
  const port = await freePort()
  const f = memoize(async (k: number) => k, {
    backend: 'redis',
    url: `redis://127.0.0.1:${port}`,
    namespace: uniqueNamespace('refused'),
    onBackendError: 'throw',
  })
  t.teardown(() => f.close())
  for (let i = 0; i < 5; i++) {
    const e = await rejection(f(i))
    t.is(e.code, 'ERR_BACKEND_UNAVAILABLE')
    t.notRegex(e.message, /no answer within|circuit breaker/, `call ${i}`)
  }
  t.regex((await rejection(f(0))).message, BREAKER)
})

test('a stopped Redis: calls reject within backendTimeout, the breaker opens, and once resumed the calls hit again', async (t) => {
  const redis = await startRedis()
  t.teardown(() => {
    redis.child.kill('SIGCONT')
    redis.stop()
  })
  let calls = 0
  const f = memoize(async (k: number) => (calls++, { k }), {
    backend: 'redis',
    url: redis.url,
    namespace: uniqueNamespace('sigstop'),
    backendTimeout: 200,
    onBackendError: 'throw',
  })
  t.teardown(() => f.close())
  t.deepEqual(await f(1), { k: 1 })
  await sleep(100) // this thread's direct connection is up: the next hit reads there
  t.deepEqual(await f(1), { k: 1 })
  redis.child.kill('SIGSTOP')
  // The first read is the direct connection's, the next ones the core's: five in all open the breaker.
  for (let i = 0; i < 5; i++) t.regex((await rejection(f(1))).message, /no answer within 200 ms \(backendTimeout\)/)
  t.regex((await rejection(f(1))).message, BREAKER)
  redis.child.kill('SIGCONT')
  // After the cooldown, a probe finds the server back: the entry stored before is a hit again.
  let back = false
  for (let i = 0; i < 100 && !back; i++) {
    back = await f(1).then(
      () => true,
      () => false,
    )
    if (!back) await sleep(100)
  }
  t.true(back, 'the calls never reached the server again')
  t.is(calls, 1, 'the entry stored before the stop was not read again')
})
