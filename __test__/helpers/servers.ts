import test from 'ava'
import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sleep } from './env'

/*
 * The servers the remote tests run against: the ones named by CACHETTE_REDIS_URL,
 * CACHETTE_PG_URL and CACHETTE_MYSQL_URL (default: the standard local ports), plus Redis
 * servers the tests start themselves on free loopback ports (a 3-master cluster, and a server
 * to stop mid-run).
 */

export const REDIS_URL = process.env.CACHETTE_REDIS_URL ?? 'redis://127.0.0.1:6379'
export const PG_URL = process.env.CACHETTE_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
export const MYSQL_URL = process.env.CACHETTE_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test'

/** True when something accepts TCP connections at the host and port of `url`. */
export function reachable(url: string, ms = 1000): Promise<boolean> {
  const u = new URL(url)
  const port = Number(u.port) || { redis: 6379, postgres: 5432, mysql: 3306 }[u.protocol.slice(0, -1)] || 0
  return new Promise((resolve) => {
    const s = new Socket()
    const done = (ok: boolean) => {
      s.destroy()
      resolve(ok)
    }
    s.setTimeout(ms, () => done(false))
    s.once('error', () => done(false))
    s.connect(port, u.hostname, () => done(true))
  })
}

/** A free loopback port (for a Redis Cluster node, its bus port +10000 is checked too). */
export async function freePort(withBus = false): Promise<number> {
  const tryListen = (port: number) =>
    new Promise<boolean>((resolve) => {
      const srv = createServer()
      srv.once('error', () => resolve(false))
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)))
    })
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 25_000)
    if ((await tryListen(port)) && (!withBus || (await tryListen(port + 10_000)))) return port
  }
}

function redisCli(port: number, ...args: string[]): string {
  const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8' })
  return (r.stdout ?? '') + (r.stderr ?? '')
}

async function waitPing(port: number, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!redisCli(port, 'PING').includes('PONG')) {
    if (Date.now() > end) throw new Error(`redis-server on port ${port} did not answer PING within ${ms} ms`)
    await sleep(50)
  }
}

async function waitListening(port: number, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await reachable(`redis://127.0.0.1:${port}`, 200))) {
    if (Date.now() > end) throw new Error(`nothing listens on port ${port} after ${ms} ms`)
    await sleep(50)
  }
}

/** A redis-server this test process started; `stop()` kills it by pid. */
export interface RedisProcess {
  port: number
  url: string
  child: ChildProcess
  /** `SHUTDOWN NOSAVE`, as an operator would. */
  shutdown(): Promise<void>
  /** Starts the server again on the same port. */
  restart(): Promise<void>
  stop(): void
}

/** Starts a redis-server on `port` (default: a free one); `tls`: `extra` sets the ports, readiness is its TLS port. */
export async function startRedis(extra: string[] = [], port?: number, tls = false): Promise<RedisProcess> {
  const p = port ?? (await freePort(extra.includes('--cluster-enabled')))
  const dir = mkdtempSync(join(tmpdir(), `cachette-redis-${p}-`))
  const ports = tls ? [] : ['--port', String(p)]
  const args = [...ports, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extra]
  const launch = () => spawn('redis-server', args, { stdio: 'ignore' })
  const r: RedisProcess = {
    port: p,
    url: `redis://127.0.0.1:${p}`,
    child: launch(),
    async shutdown() {
      redisCli(p, 'SHUTDOWN', 'NOSAVE')
      if (r.child.exitCode === null) await new Promise((res) => r.child.once('exit', res))
    },
    async restart() {
      r.child = launch()
      await (tls ? waitListening(p) : waitPing(p))
    },
    stop() {
      if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    },
  }
  process.once('exit', () => r.stop())
  await (tls ? waitListening(p) : waitPing(p))
  return r
}

/**
 * A redis-server speaking only TLS on a free port, with a certificate for 127.0.0.1 signed by a CA
 * made here with openssl (`ca`: its certificate file).
 */
export async function startTlsRedis(): Promise<{ server: RedisProcess; ca: string; port: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'cachette-tls-'))
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
  const ssl = (...args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`)
  }
  const ca = ['-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=cachette test CA']
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', ...ca)
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1')
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n')
  const sign = ['-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'ext.cnf']
  ssl('x509', '-req', '-in', 'server.csr', '-out', 'server.crt', ...sign)
  const port = await freePort()
  const file = (name: string) => join(dir, name)
  const server = await startRedis(
    [
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--tls-cert-file',
      file('server.crt'),
      '--tls-key-file',
      file('server.key'),
      '--tls-ca-cert-file',
      file('ca.crt'),
      '--tls-auth-clients',
      'no',
    ],
    port,
    true,
  )
  return { server, ca: file('ca.crt'), port }
}

/** A 3-master Redis Cluster on loopback ports. */
export async function startCluster(): Promise<{ urls: string[]; nodes: RedisProcess[]; stop(): void }> {
  const nodes: RedisProcess[] = []
  for (let i = 0; i < 3; i++) {
    const port = await freePort(true)
    nodes.push(
      await startRedis(
        ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '5000'],
        port,
      ),
    )
  }
  const create = spawnSync(
    'redis-cli',
    ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'],
    { encoding: 'utf8' },
  )
  if (create.status !== 0) throw new Error(`redis-cli --cluster create failed:\n${create.stdout}\n${create.stderr}`)
  const end = Date.now() + 15_000
  while (!nodes.every((n) => redisCli(n.port, 'CLUSTER', 'INFO').includes('cluster_state:ok'))) {
    if (Date.now() > end) throw new Error('the test cluster did not reach cluster_state:ok')
    await sleep(100)
  }
  return { urls: nodes.map((n) => n.url), nodes, stop: () => nodes.forEach((n) => n.stop()) }
}

/**
 * A loopback listener that accepts every connection and never reads or writes: a stalled server
 * (`url('redis')`, `url('postgres')`, `url('mysql')` point at it). `close()` drops its sockets.
 */
export async function silentServer(): Promise<{ port: number; url(kind: string): string; close(): void }> {
  const held = new Set<Socket>()
  const srv = createServer((s) => {
    held.add(s)
    s.on('error', () => undefined)
    s.on('close', () => held.delete(s))
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as { port: number }).port
  const urls: Record<string, string> = {
    redis: `redis://127.0.0.1:${port}`,
    postgres: `postgres://postgres@127.0.0.1:${port}/test`,
    mysql: `mysql://root@127.0.0.1:${port}/test`,
  }
  return {
    port,
    url: (kind) => urls[kind],
    close() {
      for (const s of held) s.destroy()
      srv.close()
    },
  }
}

/** Whether `url`'s host and port accept a TCP connection, decided synchronously (at test registration). */
export function reachableSync(url: string): boolean {
  const probe = `require('node:net').connect(${JSON.stringify(new URL(url).port || '0')}, ${JSON.stringify(
    new URL(url).hostname,
  )}).on('connect', () => process.exit(0)).on('error', () => process.exit(1)).setTimeout(1000, () => process.exit(1))`
  return spawnSync(process.execPath, ['-e', probe], { timeout: 5000 }).status === 0
}

const checked = new Map<string, boolean>()
/**
 * Whether the tests of `name` at `url` can run. A missing server is said loudly and its tests are
 * skipped, except under `CI=true`, where a test that fails says which server is missing.
 */
export function serverAvailable(name: string, url: string): boolean {
  let ok = checked.get(url)
  if (ok === undefined) {
    ok = reachableSync(url)
    checked.set(url, ok)
    if (!ok && process.env.CI === 'true') {
      test(`${name} is reachable at ${url}`, (t) => t.fail(`${name} is not running; under CI=true it must be`))
    } else if (!ok) {
      process.stderr.write(`\n*** cachette tests: ${name} is not reachable at ${url}: its tests are SKIPPED ***\n\n`)
    }
  }
  return ok
}
