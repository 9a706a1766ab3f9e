import type * as net from 'node:net'

import { CLIENT_NAME, hostOf, Inbox, Lane, laneFor, parseUrl, Reader } from './direct'
import type { Answer } from './direct'
import type { Direct } from './native'

/*
 * The direct read of the `redis` backend: `GET <keyPrefix><hex of the key>` over a RESP2
 * connection of this thread (see direct.ts). The handshake authenticates and selects the
 * database the URL names; a URL with anything else (query options, `#insecure`, a socket path)
 * is left to the core.
 */

const CRLF = 13

function command(...parts: string[]): string {
  let s = `*${parts.length}\r\n`
  for (const p of parts) s += `$${Buffer.byteLength(p)}\r\n${p}\r\n`
  return s
}

/** The decimal number in `b[from..to)`. */
function digits(b: Buffer, from: number, to: number): number {
  let n = 0
  for (let i = from; i < to; i++) {
    const d = b[i]! - 48
    if (d < 0 || d > 9 || i - from > 10) throw new Error('not a RESP2 length')
    n = n * 10 + d
  }
  return n
}

class RedisLane extends Lane {
  private readonly inbox = new Inbox()
  /** Replies the handshake still expects. */
  private handshake = 0

  constructor(
    url: URL,
    private readonly hello: string,
    private readonly replies: number,
  ) {
    super({ ...hostOf(url, 6379)!, tls: url.protocol === 'rediss:' || url.protocol === 'valkeys:' })
  }

  get(key: string): Promise<Answer> | undefined {
    return this.request(`*2\r\n$3\r\nGET\r\n$${key.length}\r\n${key}\r\n`)
  }

  protected opened(socket: net.Socket): void {
    this.inbox.clear()
    this.handshake = this.replies
    socket.write(this.hello)
  }

  protected received(chunk: Buffer): void {
    const b = this.inbox.add(chunk)
    if (b === null) return
    let at = 0
    let need = 0
    for (;;) {
      const end = b.indexOf(CRLF, at + 1)
      if (end < 0 || end + 1 >= b.length) break
      const type = b[at]
      let next = end + 2
      let a: Answer
      if (type === 0x24 /* $ */) {
        const len = b[at + 1] === 0x2d ? -1 : digits(b, at + 1, end)
        if (len < 0) a = null
        else {
          if (next + len + 2 > b.length) {
            need = next + len + 2 - at
            break
          }
          a = b.subarray(next, next + len)
          next += len + 2
        }
      } else if (type === 0x2b /* + */ || type === 0x3a /* : */) {
        a = undefined
      } else if (type === 0x2d /* - */) {
        a = undefined
        // AUTH or SELECT refused (a wrong password, no such database): the core reports it. The
        // name (CLIENT SETNAME, last) is optional: an ACL may deny that command alone.
        if (this.handshake > 1 || (this.handshake === 1 && !b.toString('latin1', at, end).startsWith('-NOPERM'))) {
          this.refuse()
          return
        }
      } else {
        throw new Error('not a RESP2 reply to GET')
      }
      at = next
      if (this.handshake > 0) {
        if (--this.handshake === 0) this.ready()
      } else this.answer(a)
    }
    this.inbox.keep(b.subarray(at), need)
  }
}

/** The handshake a URL asks for and how many replies it gets, or null when the core must connect. */
function helloOf(u: URL): [string, number] | null {
  if (u.search !== '' || u.hash !== '' || hostOf(u, 6379) === null) return null
  let hello = ''
  let n = 0
  if (u.password !== '') {
    let user: string
    let pass: string
    try {
      user = decodeURIComponent(u.username)
      pass = decodeURIComponent(u.password)
    } catch {
      return null
    }
    hello += user === '' ? command('AUTH', pass) : command('AUTH', user, pass)
    n++
  }
  const db = u.pathname.replace(/^\//, '')
  if (db !== '' && db !== '0') {
    if (!/^\d+$/.test(db)) return null
    hello += command('SELECT', db)
    n++
  }
  return [hello + command('CLIENT', 'SETNAME', CLIENT_NAME), n + 1]
}

/** Reads of one namespace through this thread's lane to its Redis server. */
export class RedisReader extends Reader<RedisLane> {
  static open(d: Direct): RedisReader | null {
    const u = parseUrl(d.url)
    const hello = u === null ? null : helloOf(u)
    if (hello === null || !/^[\x20-\x7e]*$/.test(d.keyPrefix ?? '')) return null
    const lane = laneFor(d, () => new RedisLane(u!, ...hello))
    return lane === null ? null : new RedisReader(d, lane)
  }

  read(_io: Buffer, hex: string): Promise<Answer> | undefined {
    return this.lane.get(this.d.keyPrefix! + hex)
  }
}
