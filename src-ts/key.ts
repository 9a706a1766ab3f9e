import { types } from 'node:util'
import { CachetteError } from './errors'

/*
 * Canonical argument encoding, byte for byte the format of docs/key-encoding.md (the Rust
 * core's `key.rs` implements the same format and hashes it). JavaScript walks the arguments
 * because it sees Maps, Sets and prototypes for free; one call hands the bytes to native code.
 */

const T_UNDEFINED = 0x00
const T_NULL = 0x01
const T_FALSE = 0x02
const T_TRUE = 0x03
const T_NUMBER = 0x04
const T_BIGINT = 0x05
const T_STRING = 0x06
const T_ARRAY = 0x07
const T_OBJECT = 0x08
const T_DATE = 0x09
const T_MAP = 0x0a
const T_SET = 0x0b
const T_BYTES = 0x0c
const T_REGEXP = 0x0d
const T_HOLE = 0x0e

/** Deepest nesting accepted in a key. */
export const MAX_KEY_DEPTH = 1000
/** Largest encoded key accepted (bytes). */
export const MAX_KEY_BYTES = 1 << 20

const BYTE_KINDS: Record<string, number> = {
  ArrayBuffer: 1,
  Int8Array: 2,
  Uint8Array: 3,
  Uint8ClampedArray: 4,
  Int16Array: 5,
  Uint16Array: 6,
  Int32Array: 7,
  Uint32Array: 8,
  Float32Array: 9,
  Float64Array: 10,
  BigInt64Array: 11,
  BigUint64Array: 12,
  DataView: 13,
  Float16Array: 14,
}

let buf = Buffer.allocUnsafe(256)
let view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
let pos = 0
const seen: object[] = []
/** Path segments of the value being encoded; joined into a string only for an error message. */
const trail: (string | number)[] = []

function here(): string {
  let p = 'args'
  for (const seg of trail) p += typeof seg === 'number' ? `[${seg}]` : seg
  return p
}

function room(n: number): void {
  if (pos + n <= buf.length) return
  if (pos + n > MAX_KEY_BYTES) throw unkeyable('args', `the key is larger than ${MAX_KEY_BYTES} bytes`)
  const next = Buffer.allocUnsafe(Math.max(buf.length * 2, pos + n))
  buf.copy(next, 0, 0, pos)
  buf = next
  view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
}

function unkeyable(path: string, reason: string): CachetteError {
  return new CachetteError(
    'ERR_UNKEYABLE_ARGUMENT',
    `cannot build a cache key from ${path}: ${reason}; pass a \`key\` option that maps the arguments to plain values`,
  )
}

function u8(b: number): void {
  room(1)
  buf[pos++] = b
}

function u32(n: number): void {
  room(4)
  view.setUint32(pos, n)
  pos += 4
}

function f64(x: number): void {
  room(8)
  if (x !== x) {
    view.setUint32(pos, 0x7ff80000)
    view.setUint32(pos + 4, 0)
  } else view.setFloat64(pos, x)
  pos += 8
}

function str(s: string): void {
  const n = s.length
  u32(n)
  room(n * 2)
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i)
    buf[pos++] = c >>> 8
    buf[pos++] = c & 0xff
  }
}

function bytes(kind: number, b: Uint8Array): void {
  u8(T_BYTES)
  u8(kind)
  u32(b.length)
  room(b.length)
  buf.set(b, pos)
  pos += b.length
}

function bigint(x: bigint): void {
  u8(T_BIGINT)
  const negative = x < 0n
  let m = negative ? -x : x
  const out: number[] = []
  while (m > 0n) {
    out.push(Number(m & 0xffn))
    m >>= 8n
  }
  u8(negative && out.length > 0 ? 1 : 0)
  u32(out.length)
  for (let i = out.length - 1; i >= 0; i--) u8(out[i])
}

function value(v: unknown, depth: number): void {
  switch (typeof v) {
    case 'number':
      u8(T_NUMBER)
      f64(v)
      return
    case 'string':
      u8(T_STRING)
      str(v)
      return
    case 'boolean':
      u8(v ? T_TRUE : T_FALSE)
      return
    case 'undefined':
      u8(T_UNDEFINED)
      return
    case 'bigint':
      bigint(v)
      return
    case 'function':
      throw unkeyable(here(), 'functions have no value identity')
    case 'symbol':
      throw unkeyable(here(), 'symbols have no value identity')
  }
  if (v === null) {
    u8(T_NULL)
    return
  }
  object(v as object, depth)
}

function object(o: object, depth: number): void {
  if (depth >= MAX_KEY_DEPTH) throw unkeyable(here(), `nesting deeper than ${MAX_KEY_DEPTH}`)
  if (seen.includes(o)) throw unkeyable(here(), 'circular reference')
  seen.push(o)
  try {
    const proto = Object.getPrototypeOf(o)
    if (Array.isArray(o)) {
      u8(T_ARRAY)
      u32(o.length)
      for (let i = 0; i < o.length; i++) {
        if (!(i in o)) {
          u8(T_HOLE)
          continue
        }
        trail.push(i)
        value(o[i], depth + 1)
        trail.pop()
      }
    } else if (proto === Object.prototype || proto === null) {
      const names = Object.keys(o)
      if (!isSorted(names)) names.sort()
      u8(T_OBJECT)
      u32(names.length)
      for (const name of names) {
        str(name)
        trail.push(`.${name}`)
        value((o as Record<string, unknown>)[name], depth + 1)
        trail.pop()
      }
    } else if (types.isDate(o)) {
      u8(T_DATE)
      f64((o as Date).getTime())
    } else if (types.isMap(o)) {
      u8(T_MAP)
      u32((o as Map<unknown, unknown>).size)
      let i = 0
      for (const [k, v] of o as Map<unknown, unknown>) {
        trail.push(`.keys()[${i}]`)
        value(k, depth + 1)
        trail[trail.length - 1] = `.values()[${i++}]`
        value(v, depth + 1)
        trail.pop()
      }
    } else if (types.isSet(o)) {
      u8(T_SET)
      u32((o as Set<unknown>).size)
      let i = 0
      for (const v of o as Set<unknown>) {
        trail.push(`.values()[${i++}]`)
        value(v, depth + 1)
        trail.pop()
      }
    } else if (Buffer.isBuffer(o)) {
      bytes(0, o)
    } else if (ArrayBuffer.isView(o)) {
      const kind = BYTE_KINDS[(o as { constructor: { name: string } }).constructor?.name] ?? BYTE_KINDS.DataView
      bytes(kind, new Uint8Array(o.buffer, o.byteOffset, o.byteLength))
    } else if (types.isAnyArrayBuffer(o)) {
      bytes(BYTE_KINDS.ArrayBuffer, new Uint8Array(o as ArrayBuffer))
    } else if (types.isRegExp(o)) {
      u8(T_REGEXP)
      str((o as RegExp).source)
      str((o as RegExp).flags)
    } else if (types.isPromise(o) || types.isWeakMap(o) || types.isWeakSet(o)) {
      throw unkeyable(here(), `a ${types.isPromise(o) ? 'Promise' : 'WeakMap or WeakSet'} has no value identity`)
    } else {
      const name = (proto as { constructor?: { name?: string } })?.constructor?.name || 'anonymous class'
      throw unkeyable(here(), `an instance of ${name} is not a plain value`)
    }
  } finally {
    seen.pop()
  }
}

function isSorted(names: string[]): boolean {
  for (let i = 1; i < names.length; i++) if (names[i - 1] > names[i]) return false
  return true
}

/**
 * Encodes an argument list canonically. The returned bytes are a view into a shared buffer,
 * valid until the next call.
 * @throws CachetteError `ERR_UNKEYABLE_ARGUMENT` naming the offending argument path.
 */
export function encodeKey(args: ArrayLike<unknown>): Buffer {
  // Encoded first: the encoding may replace `buf` with a larger one.
  const n = encodeKeyLength(args)
  return buf.subarray(0, n)
}

/**
 * {@link encodeKey} without making a view: the encoding is the first bytes (as many as this
 * returns) of {@link keyBuffer}'s buffer, until the next call.
 * @throws CachetteError `ERR_UNKEYABLE_ARGUMENT` naming the offending argument path.
 */
export function encodeKeyLength(args: ArrayLike<unknown>): number {
  pos = 0
  // Both are left longer only by a throw. Setting an array's length costs a runtime call, and
  // emptying one frees its storage: the common call touches neither.
  if (seen.length !== 0) seen.length = 0
  if (trail.length > 1) trail.length = 1
  u32(args.length)
  for (let i = 0; i < args.length; i++) {
    trail[0] = i
    value(args[i], 0)
  }
  return pos
}

/** The buffer {@link encodeKeyLength} encodes into (replaced when a key outgrows it). */
export const keyBuffer = (): Buffer => buf

/**
 * A key for an in-process Map: the argument itself when it is one primitive that a Map tells
 * apart exactly, else the canonical encoding as a string. The two never meet: they live in
 * different Maps (see `key-router.ts`).
 */
export function encodeKeyString(args: ArrayLike<unknown>): string {
  const b = encodeKey(args)
  return b.latin1Slice(0, b.length)
}

declare module 'node:buffer' {
  interface Buffer {
    latin1Slice(start: number, end: number): string
  }
}
