import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto'
import * as net from 'node:net'
import * as tls from 'node:tls'

import { CLIENT_NAME, hostOf, Inbox, Lane, laneFor, parseUrl, Reader } from './direct'
import type { Answer } from './direct'
import type { Direct } from './native'

/*
 * The direct read of the `sql` backend on PostgreSQL: the core's one-row SELECT, prepared once
 * per connection and run with binary parameters over the extended query protocol (see
 * direct.ts). TLS follows `sslmode` as the core does (`prefer` by default, without certificate
 * checks; `verify-ca`/`verify-full` are left to the core); authentication is trust, password,
 * MD5 or SCRAM-SHA-256. A URL that leaves the user, database or port to the environment, or
 * carries other options, is left to the core; so is a password the server asks for and the URL
 * does not give.
 */

const BYTEA = 17
const PROTOCOL_3 = 196608
const SSL_REQUEST = 80877103

/** A frontend message: its type byte, then its length and `body`. */
function message(type: string, body: Buffer): Buffer {
  const m = Buffer.allocUnsafe(5 + body.length)
  m[0] = type.charCodeAt(0)
  m.writeInt32BE(4 + body.length, 1)
  body.copy(m, 5)
  return m
}

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`)
}

function int32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4)
  b.writeInt32BE(n)
  return b
}

function int16s(...ns: number[]): Buffer {
  const b = Buffer.allocUnsafe(2 * ns.length)
  ns.forEach((n, i) => b.writeInt16BE(n, 2 * i))
  return b
}

/** The MD5 password message's text (`md5` + hex). */
export function md5Password(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5')
    .update(password + user)
    .digest('hex')
  return (
    'md5' +
    createHash('md5')
      .update(Buffer.concat([Buffer.from(inner), salt]))
      .digest('hex')
  )
}

/** The client side of SCRAM-SHA-256 (RFC 5802/7677), without channel binding. */
export class Scram {
  readonly first: string
  private readonly bare: string
  private serverSignature: Buffer | null = null

  constructor(
    private readonly password: string,
    private readonly nonce = randomBytes(18).toString('base64'),
    user = '',
  ) {
    // PostgreSQL takes the user from the startup message: the SCRAM user may be left empty.
    this.bare = `n=${user},r=${nonce}`
    this.first = `n,,${this.bare}`
  }

  /** The client-final message for the server-first one, or null when that one is invalid. */
  final(serverFirst: string): string | null {
    const attrs = new Map(serverFirst.split(',').map((kv) => [kv.slice(0, 1), kv.slice(2)] as const))
    const r = attrs.get('r') ?? ''
    const salt = Buffer.from(attrs.get('s') ?? '', 'base64')
    const i = Number(attrs.get('i'))
    if (!r.startsWith(this.nonce) || r.length === this.nonce.length || salt.length === 0 || !(i > 0)) return null
    const salted = pbkdf2Sync(this.password, salt, i, 32, 'sha256')
    const clientKey = createHmac('sha256', salted).update('Client Key').digest()
    const storedKey = createHash('sha256').update(clientKey).digest()
    const withoutProof = `c=biws,r=${r}`
    const auth = `${this.bare},${serverFirst},${withoutProof}`
    const signature = createHmac('sha256', storedKey).update(auth).digest()
    const proof = Buffer.from(clientKey.map((b, k) => b ^ signature[k]!))
    const serverKey = createHmac('sha256', salted).update('Server Key').digest()
    this.serverSignature = createHmac('sha256', serverKey).update(auth).digest()
    return `${withoutProof},p=${proof.toString('base64')}`
  }

  /** Whether the server-final message proves the server knows the password. */
  verify(serverFinal: string): boolean {
    return this.serverSignature !== null && serverFinal === `v=${this.serverSignature.toString('base64')}`
  }
}

interface Login {
  user: string
  password: string | null
  database: string
  sslmode: string
  host: string
  port: number
}

class PgLane extends Lane {
  private readonly inbox = new Inbox()
  private scram: Scram | null = null
  private askedTls = false
  /** Statement names by query text, once their Parse was sent on this connection. */
  private statements = new Map<string, string>()
  /** Statements named on this connection so far (names are never reused). */
  private named = 0
  /** For each request in flight, the query it prepared (null: none); unconfirmed ones are forgotten. */
  private readonly parsing: Array<string | null> = []
  private parsed = false
  private row: Answer = null
  private failed = false

  constructor(private readonly login: Login) {
    super({ host: login.host, port: login.port, tls: false })
  }

  select(query: string, ns: Buffer, key: Buffer): Promise<Answer> | undefined {
    let name = this.statements.get(query)
    const parse = name === undefined
    if (name === undefined) name = `cachette_get_${this.named++}`
    const bind = Buffer.allocUnsafe(5 + name.length + 1 + 1 + 6 + 4 + 8 + 4 + 16 + 4)
    let at = 0
    at = bind.writeUInt8(0x42 /* B */, at)
    at = bind.writeInt32BE(bind.length - 1, at)
    at = bind.writeUInt8(0, at) // unnamed portal
    at += bind.write(name, at, 'latin1')
    at = bind.writeUInt8(0, at)
    at = bind.writeInt16BE(1, at) // one format for every parameter: binary
    at = bind.writeInt16BE(1, at)
    at = bind.writeInt16BE(2, at)
    at = bind.writeInt32BE(8, at)
    at += ns.copy(bind, at, 0, 8)
    at = bind.writeInt32BE(16, at)
    at += key.copy(bind, at, 0, 16)
    at = bind.writeInt16BE(1, at) // one result format: binary
    bind.writeInt16BE(1, at)
    const parts: Buffer[] = [bind, EXECUTE_SYNC]
    if (parse)
      parts.unshift(message('P', Buffer.concat([cstr(name), cstr(query), int16s(2), int32(BYTEA), int32(BYTEA)])))
    const p = this.request(Buffer.concat(parts))
    if (p !== undefined) {
      if (parse) this.statements.set(query, name)
      this.parsing.push(parse ? query : null)
    }
    return p
  }

  protected opened(socket: net.Socket): void {
    this.inbox.clear()
    this.row = null
    this.failed = false
    this.parsed = false
    this.statements = new Map()
    this.named = 0
    this.parsing.length = 0
    const { sslmode } = this.login
    if (!(socket instanceof tls.TLSSocket) && (sslmode === 'prefer' || sslmode === 'require')) {
      this.askedTls = true
      socket.write(Buffer.concat([int32(8), int32(SSL_REQUEST)]))
    } else this.startup(socket)
  }

  private startup(socket: net.Socket): void {
    const { user, database } = this.login
    const params = ['user', user, 'database', database, 'application_name', CLIENT_NAME, 'client_encoding', 'UTF8']
    const body = Buffer.concat([int32(PROTOCOL_3), ...params.map(cstr), Buffer.from([0])])
    socket.write(Buffer.concat([int32(4 + body.length), body]))
  }

  protected received(chunk: Buffer): void {
    if (this.askedTls) {
      this.askedTls = false
      if (chunk[0] === 0x53 /* S */) {
        const { host } = this.login
        // As the core's `prefer`/`require`: encrypted, the certificate not checked.
        this.secure({ rejectUnauthorized: false, servername: net.isIP(host) === 0 ? host : undefined })
      } else if (this.login.sslmode === 'require') this.refuse()
      else this.startup(this.socket!)
      return
    }
    const b = this.inbox.add(chunk)
    if (b === null) return
    let at = 0
    let need = 0
    while (at + 5 <= b.length) {
      const len = b.readInt32BE(at + 1)
      if (len < 4) throw new Error('not a PostgreSQL message')
      if (at + 1 + len > b.length) {
        need = 1 + len
        break
      }
      const type = b[at]!
      const body = b.subarray(at + 5, at + 1 + len)
      at += 1 + len
      if (!this.handle(type, body)) return
    }
    this.inbox.keep(b.subarray(at), need)
  }

  /** One backend message; false when the connection was dropped. */
  private handle(type: number, body: Buffer): boolean {
    switch (type) {
      case 0x44 /* D: DataRow */: {
        const n = body.readInt32BE(2)
        if (body.readInt16BE(0) !== 1 || 6 + n > body.length) throw new Error('not the row of one column')
        this.row = n < 0 ? null : body.subarray(6, 6 + n)
        return true
      }
      case 0x31 /* 1: ParseComplete */:
        this.parsed = true
        return true
      case 0x45 /* E: ErrorResponse */:
        if (!this.isReady) {
          // Refused (authentication, no such database: the core reports it), or not now (the
          // server starting or full: try again soon).
          const state = sqlstate(body)
          if (state.startsWith('28') || state === '3D000') this.refuse()
          else this.drop()
          return false
        }
        this.failed = true
        return true
      case 0x5a /* Z: ReadyForQuery */:
        if (!this.isReady) {
          this.ready()
          return true
        }
        return this.settle()
      case 0x52 /* R: Authentication */:
        return this.authenticate(body)
      default:
        // BindComplete, CommandComplete, ParameterStatus, BackendKeyData, notices.
        return true
    }
  }

  /** A request's Sync was answered: resolves it with its row, or `undefined` after an error. */
  private settle(): boolean {
    const query = this.parsing.shift()
    if (query && !this.parsed) this.statements.delete(query)
    const a = this.failed ? undefined : this.row
    this.row = null
    this.failed = false
    this.parsed = false
    this.answer(a)
    return true
  }

  private authenticate(body: Buffer): boolean {
    const code = body.readInt32BE(0)
    const { password, user } = this.login
    const send = (m: Buffer) => {
      this.socket!.write(message('p', m))
      return true
    }
    if (code === 0) return true
    if (password === null) {
      this.refuse()
      return false
    }
    switch (code) {
      case 3:
        return send(cstr(password))
      case 5:
        return send(cstr(md5Password(user, password, body.subarray(4, 8))))
      case 10: {
        const mechanisms = body.subarray(4).toString().split('\0')
        if (!mechanisms.includes('SCRAM-SHA-256')) break
        this.scram = new Scram(password)
        const first = Buffer.from(this.scram.first)
        return send(Buffer.concat([cstr('SCRAM-SHA-256'), int32(first.length), first]))
      }
      case 11: {
        const final = this.scram?.final(body.subarray(4).toString())
        if (final == null) break
        return send(Buffer.from(final))
      }
      case 12:
        if (this.scram?.verify(body.subarray(4).toString())) return true
        break
    }
    this.refuse()
    return false
  }
}

/** The SQLSTATE code of an ErrorResponse body. */
function sqlstate(body: Buffer): string {
  for (let at = 0; at < body.length && body[at] !== 0;) {
    const end = body.indexOf(0, at + 1)
    if (end < 0) break
    if (body[at] === 0x43 /* C */) return body.toString('latin1', at + 1, end)
    at = end + 1
  }
  return ''
}

const EXECUTE_SYNC = Buffer.concat([message('E', Buffer.from([0, 0, 0, 0, 0])), message('S', Buffer.alloc(0))])

/** What a URL logs in with, or null when the core must connect. */
function loginOf(u: URL): Login | null {
  const target = hostOf(u, 5432)
  if (target === null || u.hostname.includes('%') || u.username === '' || u.hash !== '') return null
  if (u.port === '' && process.env.PGPORT !== undefined) return null
  const options = [...u.searchParams.keys()]
  if (options.some((k) => k !== 'sslmode')) return null
  const sslmode = u.searchParams.get('sslmode') ?? process.env.PGSSLMODE ?? 'prefer'
  if (!['disable', 'allow', 'prefer', 'require'].includes(sslmode)) return null
  let database: string
  let user: string
  let password: string | null
  try {
    database = decodeURIComponent(u.pathname.replace(/^\//, ''))
    user = decodeURIComponent(u.username)
    password = u.password === '' ? null : decodeURIComponent(u.password)
  } catch {
    return null
  }
  if (database === '') return null
  return {
    ...target,
    user,
    password,
    database,
    sslmode: sslmode === 'allow' ? 'disable' : sslmode,
  }
}

/** Reads of one namespace through this thread's lane to its PostgreSQL database. */
export class PgReader extends Reader<PgLane> {
  static open(d: Direct): PgReader | null {
    const u = parseUrl(d.url)
    const login = u === null ? null : loginOf(u)
    if (login === null || d.query == null || d.ns?.length !== 8) return null
    const lane = laneFor(d, () => new PgLane(login))
    return lane === null ? null : new PgReader(d, lane)
  }

  read(io: Buffer): Promise<Answer> | undefined {
    return this.lane.select(this.d.query!, this.d.ns!, io)
  }
}
