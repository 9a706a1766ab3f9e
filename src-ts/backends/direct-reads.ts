import { readFileSync } from 'node:fs'
import { rootCertificates } from 'node:tls'
import { threadId } from 'node:worker_threads'
import type { Direct } from '../native'
import { now } from '../clock'

/*
 * Direct reads: the hit path of the `redis` store on one server, read over a connection of this
 * JS thread, made by `ioredis` when the application has it installed (an optional peer
 * dependency), instead of through the core's I/O thread. A hit then costs what the client's own
 * GET costs, plus the core's check of the entry and the decoding. (The same lane to PostgreSQL
 * through `pg` measured no faster than the core's pool, so SQL hits all go through the core.)
 *
 * A lane never decides anything: whenever it cannot answer (no client library, not connected
 * yet, the connection lost or refused, an error, no reply within RESPONSE_MS) a read answers
 * `undefined` and the store asks the core, which reports failures as every other operation does.
 */

/** A read's answer: the bytes stored, `null` when absent, `undefined` when the core must be asked. */
export type Answer = Buffer | null | undefined

/** How this thread reads one namespace's entries itself. */
export interface DirectReads {
  /** The stored bytes of the key whose digest starts `io`, or `undefined`: ask the core. */
  read(io: Buffer): Promise<Answer> | undefined
  close(): void
}

/** Longest wait for a reply before the lane gives the read to the core. */
const RESPONSE_MS = 5000
/** How long after a lost connection a lane stays off. */
const RETRY_MS = 1000
/** How long after a refused login, database or certificate a lane stays off. */
const REFUSED_RETRY_MS = 30_000
/** The name a lane's connection shows on the server (Redis `CLIENT LIST`). */
export const CLIENT_NAME = `cachette-direct-${process.pid}-${threadId}`

/** An optional peer dependency, or null when the application does not have it. */
function optional<T>(name: string): T | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(name) as T
  } catch {
    return null
  }
}

/** The CAs a TLS lane trusts: Node's, plus the file `SSL_CERT_FILE` names, as the core does. */
function trusted(): string[] | undefined {
  const file = process.env.SSL_CERT_FILE
  if (file === undefined || file === '') return undefined
  try {
    return [...rootCertificates, readFileSync(file, 'utf8')]
  } catch {
    return undefined
  }
}

interface Socketish {
  ref(): void
  unref(): void
}

/**
 * One connection of this thread to one server, shared by every namespace on it. Its socket holds
 * the event loop only while a read is pending, so an idle process exits.
 */
abstract class Lane {
  users = 0
  private pending = 0
  private retryAt = 0

  protected abstract socket(): Socketish | undefined
  /** Connected and logged in. */
  protected abstract get ready(): boolean
  /** Starts connecting (if not already). */
  protected abstract connect(): void
  abstract close(): void

  /** Runs `send` on a ready connection; `undefined` (ask the core) while there is none. */
  /** Whether the connection can take a request now; if not, connects (once its rest is over). */
  protected available(): boolean {
    if (this.ready) return true
    if (now() >= this.retryAt) this.connect()
    return false
  }

  protected request<T>(send: () => Promise<T>): Promise<T | undefined> | undefined {
    if (!this.available()) return undefined
    if (this.pending++ === 0) this.socket()?.ref()
    const done = (a: T | undefined): T | undefined => {
      if (--this.pending === 0) this.socket()?.unref()
      return a
    }
    return send().then(done, () => done(undefined))
  }

  /** The connection went: stay off for a while (longer when the server refused us). */
  protected rest(refused: boolean): void {
    this.retryAt = now() + (refused ? REFUSED_RETRY_MS : RETRY_MS)
  }

  protected idle(): void {
    if (this.pending === 0) this.socket()?.unref()
  }
}

/** What a lane uses of ioredis (typed here: the library is an optional peer dependency). */
interface RedisClient {
  status: string
  connect(): Promise<void>
  getBuffer(key: string): Promise<Buffer | null>
  mgetBuffer(keys: string[]): Promise<(Buffer | null)[]>
  disconnect(): void
  on(event: string, listener: (e: Error) => void): void
}
type IORedis = new (url: string, options: object) => RedisClient

/**
 * A lane to one Redis server. The reads of one turn of the event loop (callers in flight
 * together) go as one `MGET`: one command to write and one reply to parse instead of one each.
 */
class RedisLane extends Lane {
  private readonly client: RedisClient
  private keys: string[] = []
  private answers: ((a: Answer) => void)[] = []

  constructor(Redis: IORedis, url: string) {
    super()
    const tls = /^(rediss|valkeys):/i.test(url)
    this.client = new Redis(url.replace(/^valkey/i, 'redis'), {
      lazyConnect: true,
      // The lane batches a turn's reads into one MGET itself: each is written at once.
      enableAutoPipelining: false,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: RESPONSE_MS,
      connectTimeout: RESPONSE_MS,
      connectionName: CLIENT_NAME,
      disableClientInfo: true,
      // Reconnecting is the next read's business (`connect`), so no timer holds the event loop.
      retryStrategy: () => null,
      ...(tls ? { tls: { ca: trusted() } } : {}),
    })
    this.client.on('error', (e: Error) =>
      this.rest(/NOAUTH|WRONGPASS|NOPERM|ERR AUTH|DB index|certificate|CERT/i.test(e.message)),
    )
    this.client.on('ready', () => this.idle())
  }

  protected socket(): Socketish | undefined {
    return (this.client as unknown as { stream?: Socketish }).stream
  }

  protected get ready(): boolean {
    return this.client.status === 'ready'
  }

  protected connect(): void {
    const s = this.client.status
    if (s === 'wait' || s === 'end' || s === 'close') this.client.connect().catch(() => undefined)
  }

  get(key: string): Promise<Answer> | undefined {
    if (!this.available()) return undefined
    if (this.keys.length === 0) queueMicrotask(() => this.send())
    this.keys.push(key)
    return new Promise<Answer>((resolve) => this.answers.push(resolve))
  }

  /** Sends the reads gathered so far: a GET for one, an MGET for several. */
  private send(): void {
    const { keys, answers } = this
    this.keys = []
    this.answers = []
    const sent = this.request(() =>
      keys.length === 1 ? this.client.getBuffer(keys[0]).then((b) => [b]) : this.client.mgetBuffer(keys),
    ) as Promise<(Buffer | null)[] | undefined> | undefined
    if (sent === undefined) return answers.forEach((a) => a(undefined))
    void sent.then((values) => answers.forEach((a, i) => a(values === undefined ? undefined : (values[i] ?? null))))
  }

  close(): void {
    this.client.disconnect()
  }
}

/** This thread's lanes, by server, shared by the namespaces that read through them. */
const lanes = new Map<string, Lane>()

function laneFor<L extends Lane>(id: string, make: () => L | null): L | null {
  let lane = lanes.get(id) as L | undefined
  if (lane === undefined) {
    const made = make()
    if (made === null) return null
    lanes.set(id, (lane = made))
  }
  lane.users++
  return lane
}

function releaser(id: string, lane: Lane): () => void {
  let released = false
  return () => {
    if (released) return
    released = true
    if (--lane.users > 0) return
    lanes.delete(id)
    lane.close()
  }
}

/** How this thread may read `d`'s entries itself, or null (the core reads them all). */
export function directReads(d: Direct | null): DirectReads | null {
  if (d === null) return null
  let u: URL
  try {
    u = new URL(d.url)
  } catch {
    return null
  }
  // Query options (TLS files, timeouts…) and `#insecure` are the core's business.
  if (u.hash !== '' || u.search !== '') return null
  const Redis = optional<IORedis>('ioredis')
  const lane = Redis && laneFor(d.url, () => new RedisLane(Redis, d.url))
  if (!lane) return null
  const prefix = d.keyPrefix
  return { read: (io) => lane.get(prefix + io.toString('hex', 0, 16)), close: releaser(d.url, lane) }
}
