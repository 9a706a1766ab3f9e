import { connect, createServer } from 'node:net'
import type { Server, Socket } from 'node:net'

/*
 * A TCP proxy in front of a real server that injects network faults, as toxiproxy's toxics do:
 *
 * - `blackhole`: nothing is forwarded any more, both ways, and the sockets stay open (what a
 *   partition looks like to both ends: silence); what arrived meanwhile goes on at `heal()`, as
 *   TCP retransmits it when a partition heals;
 * - `reset`: every connection, open or new, is reset (`socket.resetAndDestroy()`: an RST);
 * - `latency`: each chunk is delivered `ms` later, both ways;
 * - `slice`: each chunk is delivered one byte at a time, each byte its own write;
 * - `closeAfter`: each connection is closed (FIN both ways) once `bytes` have passed it.
 *
 * `heal()` forwards everything again at once.
 */

export type Fault =
  | { kind: 'blackhole' }
  | { kind: 'reset' }
  | { kind: 'latency'; ms: number }
  | { kind: 'slice' }
  | { kind: 'closeAfter'; bytes: number }

export interface FaultProxy {
  /** Where clients connect. */
  readonly port: number
  /** `url` with its host and port replaced by the proxy's. */
  url(url: string): string
  /** From now on, every connection suffers `fault`. */
  inject(fault: Fault): void
  /** Forward everything again, and what a blackhole held first. */
  heal(): void
  /** Connections accepted so far. */
  readonly accepted: number
  close(): Promise<void>
}

/** One direction of one proxied connection. */
class Direction {
  private queue: Buffer[] = []
  /** Bytes written the last time, in order: latency and slicing never reorder them. */
  private tail: Promise<void> = Promise.resolve()

  constructor(
    private readonly to: Socket,
    private readonly pair: Pair,
  ) {}

  take(chunk: Buffer): void {
    const f = this.pair.proxy.fault
    this.pair.passed += chunk.length
    if (f?.kind === 'closeAfter' && this.pair.passed > f.bytes) {
      const keep = chunk.length - (this.pair.passed - f.bytes)
      if (keep > 0) this.write(chunk.subarray(0, keep))
      return this.pair.end()
    }
    if (f?.kind === 'blackhole') this.queue.push(chunk)
    else this.write(chunk)
  }

  private write(chunk: Buffer): void {
    const f = this.pair.proxy.fault
    if (f?.kind === 'latency') {
      const at = Date.now() + f.ms
      this.tail = this.tail.then(() => new Promise((r) => setTimeout(r, Math.max(0, at - Date.now()))))
      this.tail = this.tail.then(() => void (this.to.destroyed || this.to.write(chunk)))
    } else if (f?.kind === 'slice') {
      this.tail = this.tail.then(async () => {
        for (let i = 0; i < chunk.length && !this.to.destroyed; i++) {
          this.to.write(chunk.subarray(i, i + 1))
          await new Promise((r) => setImmediate(r))
        }
      })
    } else {
      this.tail = this.tail.then(() => void (this.to.destroyed || this.to.write(chunk)))
    }
  }

  flush(): void {
    const q = this.queue
    this.queue = []
    for (const c of q) this.write(c)
  }
}

class Pair {
  passed = 0
  private readonly up: Direction
  private readonly down: Direction

  constructor(
    readonly proxy: Proxy,
    private readonly client: Socket,
    private readonly server: Socket,
  ) {
    for (const s of [client, server]) {
      s.setNoDelay(true)
      s.on('error', () => this.end())
      s.on('close', () => this.end())
    }
    this.up = new Direction(server, this)
    this.down = new Direction(client, this)
    client.on('data', (c: Buffer) => this.up.take(c))
    server.on('data', (c: Buffer) => this.down.take(c))
  }

  reset(): void {
    this.client.resetAndDestroy()
    this.server.resetAndDestroy()
    this.proxy.pairs.delete(this)
  }

  end(): void {
    this.client.destroySoon()
    this.server.destroySoon()
    this.proxy.pairs.delete(this)
  }

  flush(): void {
    this.up.flush()
    this.down.flush()
  }
}

class Proxy implements FaultProxy {
  fault: Fault | null = null
  readonly pairs = new Set<Pair>()
  accepted = 0
  port = 0
  private readonly server: Server

  constructor(
    private readonly host: string,
    private readonly target: number,
  ) {
    this.server = createServer((client) => this.accept(client))
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.port = (this.server.address() as { port: number }).port
  }

  private accept(client: Socket): void {
    this.accepted++
    if (this.fault?.kind === 'reset') return void client.resetAndDestroy()
    const server = connect(this.target, this.host)
    this.pairs.add(new Pair(this, client, server))
  }

  url(url: string): string {
    const u = new URL(url)
    u.host = `127.0.0.1:${this.port}`
    return u.toString()
  }

  inject(fault: Fault): void {
    this.fault = fault
    if (fault.kind === 'reset') for (const p of [...this.pairs]) p.reset()
  }

  heal(): void {
    this.fault = null
    for (const p of this.pairs) p.flush()
  }

  async close(): Promise<void> {
    for (const p of [...this.pairs]) p.reset()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}

/** A fault proxy in front of `host:port`, listening on a free loopback port. */
export async function faultProxy(host: string, port: number): Promise<FaultProxy> {
  const p = new Proxy(host, port)
  await p.listen()
  return p
}
