import { readFileSync } from 'node:fs'
import * as net from 'node:net'
import * as tls from 'node:tls'
import { threadId } from 'node:worker_threads'

import type { Direct } from './native'

/*
 * Direct reads: the hit path of the `redis` and `sql` (PostgreSQL) backends, read over a
 * connection owned by this JS thread instead of the core's I/O thread. A hit then costs one
 * round trip and no thread hand-off, as a plain client's GET or SELECT does. Only that one read
 * goes this way; everything else (leases, commits, waiting, clears) goes through the core.
 *
 * A lane never decides anything: whenever it cannot answer (not connected yet, the connection
 * lost or refused, a server error, no reply within RESPONSE_MS), a read answers `undefined` and
 * the caller asks the core, which reports failures as every other operation does. What a lane
 * reads is checked by the core (`remoteOpen`) like any other entry.
 */

/** A read's answer: the bytes stored, `null` when absent, `undefined` when the core must be asked. */
export type Answer = Buffer | null | undefined

/** How long a pending read may wait for its reply before the connection is dropped. */
const RESPONSE_MS = 5000
/** How long after a lost connection the lane stays off. */
const RETRY_MS = 1000
/** How long after a refused handshake (credentials, database, certificate) the lane stays off. */
const REFUSED_RETRY_MS = 30_000
/**
 * The name a lane's connection shows on the server (Redis `CLIENT LIST`, PostgreSQL
 * `application_name`): `cachette-direct-<pid>-<thread id>`.
 */
export const CLIENT_NAME = `cachette-direct-${process.pid}-${threadId}`

const IDLE = 0
const CONNECTING = 1
const READY = 2
const DOWN = 3

/** The parts of a URL a lane connects with. */
export interface Target {
  host: string
  port: number
  tls: boolean
}

/**
 * One connection of this thread to one server, shared by every namespace on it. Requests are
 * pipelined: those of one tick are written together (a sequential caller pays no more than a
 * tick for it), and all are answered in order.
 */
export abstract class Lane {
  users = 0
  protected socket: net.Socket | null = null
  /** The TCP connection under `socket` (itself, or the one a TLS upgrade wraps): what holds the event loop. */
  private tcp: net.Socket | null = null
  private state = IDLE
  private retryAt = 0
  private readonly waiting: Array<(a: Answer) => void> = []
  private out: Array<string | Buffer> = []
  private lastProgress = 0
  private watchdog: NodeJS.Timeout | null = null

  constructor(private readonly target: Target) {}

  /** Queues a request, or answers `undefined` at once when the lane cannot take it now. */
  protected request(bytes: string | Buffer): Promise<Answer> | undefined {
    if (this.state !== READY) {
      this.connect()
      return undefined
    }
    if (this.out.length === 0) process.nextTick(() => this.flush())
    this.out.push(bytes)
    if (this.waiting.length === 0) {
      this.lastProgress = Date.now()
      this.tcp!.ref()
    }
    return new Promise<Answer>((resolve) => this.waiting.push(resolve))
  }

  /** Answers the oldest pending request. */
  protected answer(a: Answer): void {
    const resolve = this.waiting.shift()
    if (this.waiting.length === 0) this.tcp?.unref()
    resolve?.(a)
  }

  protected get isReady(): boolean {
    return this.state === READY
  }

  /** The connection is open (and, for TLS, secured): send the handshake. */
  protected abstract opened(socket: net.Socket): void
  /** Bytes arrived: the handshake's replies until `ready()`, then the answers of requests. */
  protected abstract received(chunk: Buffer): void

  /** The handshake succeeded: requests may flow. */
  protected ready(): void {
    this.state = READY
    // From now on the watchdog times replies: no per-write timer.
    this.socket?.setTimeout(0)
  }

  /** Drops the connection: every pending request is answered `undefined`, and the lane rests. */
  protected drop(): void {
    const s = this.socket
    const tcp = this.tcp
    this.socket = null
    this.tcp = null
    if (this.state !== IDLE) {
      this.state = DOWN
      this.retryAt = Date.now() + RETRY_MS
    }
    this.out = []
    if (this.watchdog !== null) clearInterval(this.watchdog)
    this.watchdog = null
    s?.destroy()
    tcp?.destroy()
    while (this.waiting.length > 0) this.answer(undefined)
  }

  /** The server refused the handshake: the core answers every read for a while. */
  protected refuse(): void {
    this.drop()
    if (this.state === DOWN) this.retryAt = Date.now() + REFUSED_RETRY_MS
  }

  /** Closes the lane for good (its last namespace closed). */
  close(): void {
    this.state = IDLE
    this.drop()
  }

  /** Upgrades the connection to TLS (PostgreSQL asks for it in-band). */
  protected secure(options: tls.ConnectionOptions): void {
    const plain = this.socket!
    plain.removeAllListeners('data')
    plain.setTimeout(0)
    const tcp = this.tcp
    this.listen(tls.connect({ ...options, socket: plain }), 'secureConnect')
    this.tcp = tcp
  }

  private flush(): void {
    const out = this.out
    this.out = []
    if (this.socket === null || out.length === 0) return
    this.socket.write(
      out.length === 1 ? out[0]! : typeof out[0] === 'string' ? out.join('') : Buffer.concat(out as Buffer[]),
    )
  }

  private connect(): void {
    if (this.state === CONNECTING || this.state === READY) return
    if (this.state === DOWN && Date.now() < this.retryAt) return
    this.state = CONNECTING
    const { host, port } = this.target
    const socket = this.target.tls
      ? tls.connect({ host, port, servername: net.isIP(host) === 0 ? host : undefined, ca: trusted() })
      : net.connect({ host, port })
    this.listen(socket, this.target.tls ? 'secureConnect' : 'connect')
  }

  private listen(socket: net.Socket, openEvent: string): void {
    this.socket = socket
    this.tcp = socket
    socket.setNoDelay(true)
    socket.unref()
    socket.setTimeout(RESPONSE_MS, () => {
      // Connecting or handshaking too long: give up for now.
      if (this.state !== READY) this.drop()
    })
    socket.once(openEvent, () => {
      if (this.socket !== socket) return
      this.opened(socket)
    })
    socket.on('data', (chunk: Buffer) => {
      if (this.socket !== socket) return
      this.lastProgress = Date.now()
      try {
        this.received(chunk)
      } catch {
        // Bytes no reply looks like: this connection cannot be trusted to stay in step.
        this.drop()
      }
    })
    const lost = () => {
      if (this.socket === socket) this.drop()
    }
    socket.on('error', (e: Error & { code?: string }) => {
      // A certificate this thread does not trust will not become trusted by retrying.
      if (this.socket === socket && this.state !== READY && isCertificateError(e.code)) this.refuse()
      else lost()
    })
    socket.on('close', lost)
    if (this.watchdog === null) {
      this.watchdog = setInterval(() => {
        if (this.waiting.length > 0 && Date.now() - this.lastProgress > RESPONSE_MS) this.drop()
      }, 1000)
      this.watchdog.unref()
    }
  }
}

/** Bytes received and not yet parsed: a frame split across chunks is joined once, when complete. */
export class Inbox {
  private parts: Buffer[] = []
  private size = 0
  private need = 0

  /** Adds a chunk: all the bytes not yet parsed, or null while the frame they start is incomplete. */
  add(chunk: Buffer): Buffer | null {
    if (this.parts.length === 0) return chunk
    this.parts.push(chunk)
    this.size += chunk.length
    if (this.size < this.need) return null
    const b = Buffer.concat(this.parts, this.size)
    this.clear()
    return b
  }

  /** Keeps `rest`, the start of a frame of `need` bytes (0: not known yet). */
  keep(rest: Buffer, need: number): void {
    if (rest.length === 0) return
    this.parts = [rest]
    this.size = rest.length
    this.need = need
  }

  clear(): void {
    this.parts = []
    this.size = 0
    this.need = 0
  }
}

/**
 * The CAs a TLS lane trusts: Node's, plus the file `SSL_CERT_FILE` names, which the core's TLS
 * trusts too (undefined: Node's alone).
 */
function trusted(): string[] | undefined {
  const file = process.env.SSL_CERT_FILE
  if (file === undefined || file === '') return undefined
  try {
    return [...tls.rootCertificates, readFileSync(file, 'utf8')]
  } catch {
    return undefined
  }
}

function isCertificateError(code: string | undefined): boolean {
  return code !== undefined && (code.startsWith('ERR_TLS_CERT') || /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)/.test(code))
}

/*
 * This thread's lanes, by server, shared by the namespaces that read through them.
 */
const lanes = new Map<string, Lane>()

/** This thread's lane to `d`'s server, made by `make` on first use; `release` when done. */
export function laneFor<L extends Lane>(d: Direct, make: () => L | null): L | null {
  const id = `${d.kind} ${d.url}`
  let lane = lanes.get(id) as L | undefined
  if (lane === undefined) {
    const made = make()
    if (made === null) return null
    lane = made
    lanes.set(id, lane)
  }
  lane.users++
  return lane
}

function releaseLane(d: Direct, lane: Lane): void {
  if (--lane.users > 0) return
  lanes.delete(`${d.kind} ${d.url}`)
  lane.close()
}

/** The reads of one namespace through this thread's lane to its server. */
export abstract class Reader<L extends Lane> {
  protected constructor(
    protected readonly d: Direct,
    protected readonly lane: L,
  ) {}

  /**
   * The stored bytes of the digest in `io` (`hex`: its first 16 bytes in hex), `null` when absent,
   * `undefined`: ask the core.
   */
  abstract read(io: Buffer, hex: string): Promise<Answer> | undefined

  close(): void {
    releaseLane(this.d, this.lane)
  }
}

/** `url` parsed, or null when it is no WHATWG URL (the core judges it). */
export function parseUrl(url: string): URL | null {
  try {
    return new URL(url)
  } catch {
    return null
  }
}

/** `host` and `port` of a URL, or null when it names no single TCP host. */
export function hostOf(u: URL, defaultPort: number): { host: string; port: number } | null {
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname
  if (host === '') return null
  const port = u.port === '' ? defaultPort : Number(u.port)
  return Number.isInteger(port) && port > 0 && port < 65536 ? { host, port } : null
}
