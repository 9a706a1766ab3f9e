import { Packr, Unpackr, RESERVE_START_SPACE, RESET_BUFFER_MODE } from 'msgpackr'
import { deserialize, serialize } from 'node:v8'
import { types } from 'node:util'
import type { Serializer } from './options'

/**
 * Value encodings. Every stored payload starts with one header byte: the serializer id in the
 * high bits and, in bit 0, whether the function returned a Promise (so a hit read from disk in
 * a fresh process is returned the way the function returns it).
 */

// copyBuffers: payloads are decoded from a reused scratch buffer, so decoded Buffers must not alias it.
const packr = new Packr({ structuredClone: true, useBigIntExtension: true, copyBuffers: true })
/**
 * Plain msgpack (objects as maps, no records, no reference tracking), for a value that is a tree
 * of plain objects, arrays and primitives, stored under its own header id ({@link TREE_ID}).
 * `packr` writes each object's structure inline as a record, which costs more than the map
 * when no structure is shared between payloads: plain maps pack and unpack in about half the time.
 */
const treePackr = new Packr({ useBigIntExtension: true, useRecords: false })
const treeUnpackr = new Unpackr({ useBigIntExtension: true, useRecords: false, mapsAsObjects: true })

/** msgpack with structured cloning: Date, Map, Set, BigInt, typed arrays, Buffers and cycles. */
export const msgpack: Serializer = {
  encode: (v) => packr.pack(v),
  decode: (b) => packr.unpack(b),
}

/** V8's structured clone format (also keeps -0 and Error objects; slower). */
export const v8: Serializer = {
  encode: (v) => serialize(v),
  decode: (b) => deserialize(b),
}

/** JSON: readable from any language, but lossy for Date, Map, Set, BigInt and undefined. */
export const json: Serializer = {
  encode: (v) => Buffer.from(JSON.stringify(v) ?? 'null'),
  decode: (b) => JSON.parse(Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString()),
}

const IDS = { msgpack: 1, v8: 2, json: 3 } as const
const CUSTOM_ID = 4
/** The `msgpack` serializer's payloads of plain trees (see {@link treePackr}). */
const TREE_ID = 5

/** The codec chosen by a `serializer` option, with its header id. */
export interface Codec {
  id: number
  serializer: Serializer
}

export function codecFor(option: 'msgpack' | 'v8' | 'json' | Serializer): Codec {
  if (option === 'msgpack') return { id: IDS.msgpack, serializer: msgpack }
  if (option === 'v8') return { id: IDS.v8, serializer: v8 }
  if (option === 'json') return { id: IDS.json, serializer: json }
  return { id: CUSTOM_ID, serializer: option }
}

/**
 * Refuses what the built-in codecs would drop or change silently: functions, symbols, class
 * instances (their prototype would be lost), WeakMaps, WeakSets and Promises.
 * @throws TypeError naming the path of the first such value.
 */
export function assertPlainData(value: unknown): void {
  isPlainTree(value)
}

/**
 * {@link assertPlainData}, answering whether `value` is a tree: plain objects, arrays and
 * primitives only, no object met twice (so nothing for structured cloning to keep).
 */
function isPlainTree(value: unknown): boolean {
  budget = QUICK_VISITS
  tree = true
  visitedTop = 0
  const plain = plainEnough(value, 0)
  for (let i = 0; i < visitedTop; i++) visited[i] = undefined
  if (plain) return tree
  describeUnstorable(value, 'result', new Set())
  return false
}

/** Objects the quick check visits at most; larger values (or shared sub-objects) get the full walk. */
const QUICK_VISITS = 1000
let budget = 0
/**
 * Objects of the value being checked, for the tree test: a small value is looked through for
 * repeats; one with more objects than this is not called a tree (structured cloning handles it).
 */
const TREE_OBJECTS = 16
const visited: (object | undefined)[] = new Array(TREE_OBJECTS).fill(undefined)
let visitedTop = 0
let tree = true

function visit(o: object): void {
  if (!tree) return
  if (visitedTop === TREE_OBJECTS) {
    tree = false
    return
  }
  for (let i = 0; i < visitedTop; i++) {
    if (visited[i] === o) {
      tree = false
      return
    }
  }
  visited[visitedTop++] = o
}

/**
 * The quick check of {@link assertPlainData}, with no paths and no cycle tracking (only the
 * repeats {@link visit} notes for the tree test): true when
 * `value` is certainly storable (false also for deep, cyclic or large values, which the full
 * walk judges, visiting each object once).
 */
function plainEnough(value: unknown, depth: number): boolean {
  if (typeof value !== 'object') return typeof value !== 'function' && typeof value !== 'symbol'
  if (value === null) return true
  if (depth > 32 || --budget < 0) return false
  visit(value)
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (!plainEnough(value[i], depth + 1)) return false
    return true
  }
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return false
  for (const k in value as object) {
    if (Object.hasOwn(value as object, k) && !plainEnough((value as Record<string, unknown>)[k], depth + 1))
      return false
  }
  return true
}

/** The full walk of {@link assertPlainData}: throws naming the path of the first unstorable value. */
function describeUnstorable(value: unknown, path: string, seen: Set<object>): void {
  const t = typeof value
  if (t === 'function' || t === 'symbol') throw new TypeError(`${path} is a ${t}, which cannot be stored`)
  if (t !== 'object' || value === null || seen.has(value as object)) return
  seen.add(value as object)
  const proto = Object.getPrototypeOf(value)
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) describeUnstorable(value[i], `${path}[${i}]`, seen)
  } else if (proto === Object.prototype || proto === null) {
    for (const k of Object.keys(value as object))
      describeUnstorable((value as Record<string, unknown>)[k], `${path}.${k}`, seen)
  } else if (types.isMap(value)) {
    for (const [k, v] of value as Map<unknown, unknown>) {
      describeUnstorable(k, `${path} key`, seen)
      describeUnstorable(v, `${path}.get(…)`, seen)
    }
  } else if (types.isSet(value)) {
    for (const v of value as Set<unknown>) describeUnstorable(v, `${path} member`, seen)
  } else if (!(
    types.isDate(value) ||
    types.isRegExp(value) ||
    types.isNativeError(value) ||
    ArrayBuffer.isView(value) ||
    types.isAnyArrayBuffer(value)
  )) {
    const name = (proto as { constructor?: { name?: string } })?.constructor?.name || 'anonymous class'
    throw new TypeError(`${path} is an instance of ${name}, which would be stored without its class; pass a serializer`)
  }
}

/** A payload's header byte: the serializer id, and whether the function returned a Promise. */
const header = (id: number, wasPromise: boolean): number => (id << 1) | (wasPromise ? 1 : 0)

/** Encodes a result with its header byte. Throws whatever the serializer throws. */
export function encodePayload(codec: Codec, value: unknown, wasPromise: boolean): Buffer {
  if (codec.id !== CUSTOM_ID) assertPlainData(value)
  const body = codec.serializer.encode(value)
  const out = Buffer.allocUnsafe(body.length + 1)
  out[0] = header(codec.id, wasPromise)
  out.set(body, 1)
  return out
}

/** msgpackr writes after one reserved byte (the header) into its own buffer, reused by the next call. */
const TRANSIENT = RESERVE_START_SPACE | 1 | RESET_BUFFER_MODE

/**
 * Like {@link encodePayload}, but the result may be a view of the encoder's own buffer: it is
 * valid only until the next encode, so it must be copied (or handed to a native call) at once.
 * Saves an allocation and a copy per stored value.
 */
export function encodeTransient(codec: Codec, value: unknown, wasPromise: boolean): Buffer {
  if (codec.id !== IDS.msgpack) return encodePayload(codec, value, wasPromise)
  const tree = isPlainTree(value)
  const out = (tree ? treePackr : packr).pack(value, TRANSIENT)
  out[0] = header(tree ? TREE_ID : IDS.msgpack, wasPromise)
  return out
}

/** Sentinel for a payload this codec cannot read (another serializer, or damaged bytes). */
export const UNREADABLE: unique symbol = Symbol('unreadable')

/**
 * Decodes a payload: the value, or {@link UNREADABLE} when it was written by another codec or
 * cannot be decoded. Custom serializers get a copy of the bytes (the payload may be a reused buffer).
 */
export function decodePayload(codec: Codec, payload: Uint8Array, length: number): unknown {
  if (length < 1) return UNREADABLE
  const id = payload[0] >> 1
  if (id !== codec.id && !(id === TREE_ID && codec.id === IDS.msgpack)) return UNREADABLE
  try {
    if (id === TREE_ID) return treeUnpackr.unpack(payload as Buffer, { start: 1, end: length })
    if (codec.id === IDS.msgpack) return packr.unpack(payload as Buffer, { start: 1, end: length })
    if (codec.id === CUSTOM_ID) return codec.serializer.decode(Uint8Array.prototype.slice.call(payload, 1, length))
    return codec.serializer.decode(payload.subarray(1, length))
  } catch {
    return UNREADABLE
  }
}

/** Whether a payload holds the settled value of a Promise. */
export function payloadWasPromise(payload: Uint8Array): boolean {
  return (payload[0] & 1) === 1
}

/** Serializes an error for waiters in other threads; they rebuild it with {@link decodeError}. */
export function encodeError(e: unknown): Buffer | undefined {
  try {
    return serialize(e)
  } catch {
    try {
      return serialize(new Error(String((e as Error)?.message ?? e)))
    } catch {
      return undefined
    }
  }
}

export function decodeError(b: Uint8Array): unknown {
  try {
    return deserialize(b)
  } catch (e) {
    return e
  }
}
