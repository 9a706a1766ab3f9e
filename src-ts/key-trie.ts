/*
 * In-process keys without building strings: an argument list is walked as a sequence of tokens
 * (primitives themselves, or structure markers) down a trie of Maps. A Map tells primitives apart
 * exactly ('1', 1, 1n, true, null, undefined; every NaN alike), so the walk needs no encoding and
 * no hashing of long strings.
 *
 * A plain object is one token for its set of property names (its {@link Shape}, interned: equal
 * name sets give the same token whatever their order), then its values in name order. So a hit
 * on `f({ id: 1, kind: 'user' })` is four Map lookups, and the shape of the last object seen is
 * recognised by comparing its names, without sorting or hashing them.
 *
 * Every length is a token before its items (argument count, array length; a shape holds its name
 * count), so a token sequence is never a prefix of another: the entry of a sequence sits in the
 * node of its next-to-last token, under its last token, and no node mixes entries and children
 * under one token.
 *
 * The trie covers primitives, plain objects and arrays nested up to 16 levels, which is what
 * arguments mostly are; anything else is UNSUPPORTED and the caller uses the canonical encoding
 * instead (which also raises ERR_UNKEYABLE_ARGUMENT where it must). Which way a value goes depends
 * only on the value, so one argument list always has one key.
 */

/**
 * A trie node: entries and children by token in the Map, except children under a non-negative
 * integer token, which sit in `ints` (an array index is far cheaper than hashing a number; an
 * entry always sits in the Map, so the Map alone is the container of an entry).
 */
export class Node extends Map<unknown, unknown> {
  ints: (Node | undefined)[] | null = null
  /** Children held in `ints`. */
  kids = 0
  /** Pruned out of its trie (it was empty): nothing reaches it, so nothing may be stored in it. */
  detached = false
  constructor(
    readonly parent: Node | null,
    readonly token: unknown,
  ) {
    super()
  }
}

/** Integer tokens below this index `ints`. */
const INT_LIMIT = 1 << 24
const isIndex = (tok: unknown): tok is number =>
  typeof tok === 'number' && tok >>> 0 === tok && tok < INT_LIMIT && (tok !== 0 || 1 / tok > 0)

const marker = (name: string) => Object.freeze({ marker: name })
const counted = (name: string) => Array.from({ length: 33 }, (_, n) => marker(`${name}(${n})`))
const ARGS = counted('args')
const ARR = counted('array')
/** For 33 items or more: this marker, then the count as a number token. */
const LONG = new Map<readonly object[], object>([
  [ARGS, marker('args(long)')],
  [ARR, marker('array(long)')],
])
const HOLE = marker('hole')
const NEG_ZERO = marker('-0')
const NONE = marker('none')
/** Returned by {@link walk} for values the trie does not cover. */
export const UNSUPPORTED = marker('unsupported')

/** The token of a set of property names: one object per set while any trie holds it. */
export interface Shape {
  /** The names, sorted: values are walked in this order. */
  readonly names: readonly string[]
}

/** Shapes by their names, held weakly: a shape no trie uses any more is collected. */
const shapes = new Map<string, WeakRef<Shape>>()
const collected = new FinalizationRegistry<string>((id) => {
  if (shapes.get(id)?.deref() === undefined) shapes.delete(id)
})
/** The names of the last object seen, in its own order, and their shape. */
let lastNames: readonly string[] = []
let lastShape: Shape | null = null

/** The shape of an object whose own enumerable names are `names` (in the object's order). */
export function shapeOf(names: readonly string[]): Shape {
  const n = names.length
  if (lastShape !== null && lastNames.length === n) {
    let i = 0
    while (i < n && names[i] === lastNames[i]) i++
    if (i === n) return lastShape
  }
  const sorted = [...names].sort()
  let id = ''
  for (const name of sorted) id += `${name.length}:${name}`
  let shape = shapes.get(id)?.deref()
  if (shape === undefined) {
    shape = Object.freeze({ names: sorted })
    shapes.set(id, new WeakRef(shape))
    collected.register(shape, id)
  }
  lastNames = names
  lastShape = shape
  return shape
}

const MAX_DEPTH = 16
let node: Node
let pending: unknown = NONE
let create = false

/** Queues `tok`; descends by the previously queued token. False when that child is absent. */
function step(tok: unknown): boolean {
  if (pending !== NONE) {
    const index = isIndex(pending)
    let next = index ? node.ints?.[pending as number] : (node.get(pending) as Node | undefined)
    if (next === undefined) {
      if (!create) return false
      next = new Node(node, pending)
      if (index) {
        ;(node.ints ??= [])[pending as number] = next
        node.kids++
      } else node.set(pending, next)
    }
    node = next
  }
  pending = tok
  return true
}

function count(markers: readonly object[], n: number): boolean {
  return n < markers.length ? step(markers[n]) : step(LONG.get(markers)) && step(n)
}

/** 1: walked; 0: absent (lookup only); -1: not covered. */
function value(v: unknown, depth: number): number {
  switch (typeof v) {
    case 'string':
    case 'boolean':
    case 'undefined':
    case 'bigint':
      return step(v) ? 1 : 0
    case 'number':
      return step(v === 0 && 1 / v < 0 ? NEG_ZERO : v) ? 1 : 0
    case 'object':
      break
    default:
      return -1
  }
  if (v === null) return step(null) ? 1 : 0
  if (depth >= MAX_DEPTH) return -1
  if (Array.isArray(v)) {
    if (!count(ARR, v.length)) return 0
    for (let i = 0; i < v.length; i++) {
      const r = i in v ? value(v[i], depth + 1) : step(HOLE) ? 1 : 0
      if (r !== 1) return r
    }
    return 1
  }
  const proto = Object.getPrototypeOf(v)
  if (proto !== Object.prototype && proto !== null) return -1
  const shape = shapeOf(Object.keys(v))
  if (!step(shape)) return 0
  for (const name of shape.names) {
    const r = value((v as Record<string, unknown>)[name], depth + 1)
    if (r !== 1) return r
  }
  return 1
}

/** Whether the trie covers `v` (checked when a lookup stops early at an absent node). */
function covered(v: unknown, depth: number): boolean {
  const t = typeof v
  if (t !== 'object') return t !== 'function' && t !== 'symbol'
  if (v === null) return true
  if (depth >= MAX_DEPTH) return false
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) if (i in v && !covered(v[i], depth + 1)) return false
    return true
  }
  const proto = Object.getPrototypeOf(v)
  if (proto !== Object.prototype && proto !== null) return false
  for (const name of Object.keys(v as object))
    if (!covered((v as Record<string, unknown>)[name], depth + 1)) return false
  return true
}

/** The token under which the entry of the last successful {@link walk} sits in its node. */
export let lastToken: unknown

/**
 * Finds (or, with `make`, creates) the node that holds the entry of `args` under `root`, leaving
 * the entry's token in {@link lastToken}: the node, `undefined` when absent, or
 * {@link UNSUPPORTED} (decided by the values alone, present or not).
 */
export function walk(root: Node, args: ArrayLike<unknown>, make: boolean): Node | undefined | typeof UNSUPPORTED {
  node = root
  pending = NONE
  create = make
  let r = count(ARGS, args.length) ? 1 : 0
  for (let i = 0; r === 1 && i < args.length; i++) r = value(args[i], 0)
  if (r === 1) {
    lastToken = pending
    return node
  }
  if (r < 0) {
    // Nodes made for the tokens before the uncovered value hold nothing: remove them again.
    if (make) prune(node, NONE)
    return UNSUPPORTED
  }
  for (let i = 0; i < args.length; i++) if (!covered(args[i], 0)) return UNSUPPORTED
  return undefined
}

/** Removes the entry under `token` in `n`, and `n` and every node above it left empty. */
export function prune(n: Node, token: unknown): void {
  n.delete(token)
  while (n.size === 0 && n.kids === 0 && !n.detached) {
    const parent = n.parent
    if (parent === null) return
    n.detached = true
    detachments++
    if (isIndex(n.token)) {
      if (parent.ints?.[n.token] === n) {
        parent.ints[n.token] = undefined
        if (--parent.kids === 0) parent.ints = null
      }
    } else if (parent.get(n.token) === n) parent.delete(n.token)
    n = parent
  }
}

/** Nodes detached so far, in any trie: unchanged since a walk means its path is still attached. */
export let detachments = 0

/** The root of the trie `n` was made in. */
export function rootOf(n: Node): Node {
  while (n.parent !== null) n = n.parent
  return n
}

/** Whether `n` is still part of the trie under `root` (not pruned, not from before a reset). */
export function attached(n: Node, root: Node): boolean {
  while (n.parent !== null) {
    if (n.detached) return false
    n = n.parent
  }
  return n === root
}

/** The node under (root, one argument, shape) that findObject used last, while it is attached. */
let foundRoot: Node | null = null
let foundShape: Shape | null = null
let foundNode: Node | undefined

/** Returned by {@link findObject} when the quick lookup cannot decide. */
export const UNDECIDED = marker('undecided')

/**
 * The hit path of one plain-object argument whose values are all primitives: what is stored
 * for `[a]` under `root`, or {@link UNDECIDED} when it is absent or `a` needs the full
 * {@link walk} (nested values, -0, no properties). The caller checks that `a` is a plain object.
 */
export function findObject(root: Node, a: Record<string, unknown>): unknown {
  const shape = shapeOf(Object.keys(a))
  const names = shape.names
  const last = names.length - 1
  let n: Node | undefined
  if (shape === foundShape && root === foundRoot && !foundNode!.detached) n = foundNode
  else {
    n = root.get(ARGS[1]) as Node | undefined
    n = n?.get(shape) as Node | undefined
    if (n === undefined || last < 0) return UNDECIDED
    foundRoot = root
    foundShape = shape
    foundNode = n
  }
  for (let i = 0; n !== undefined && i < last; i++) {
    const v = a[names[i]]
    n = isIndex(v) ? n.ints?.[v] : primitive(v) ? (n.get(v) as Node | undefined) : undefined
  }
  if (n === undefined) return UNDECIDED
  const v = a[names[last]]
  const found = primitive(v) ? n.get(v) : undefined
  return found === undefined ? UNDECIDED : found
}

/** Whether `v` is its own trie token (-0 is not: it has a marker). */
function primitive(v: unknown): boolean {
  switch (typeof v) {
    case 'string':
    case 'boolean':
    case 'undefined':
    case 'bigint':
      return true
    case 'number':
      return v !== 0 || 1 / v > 0
    case 'object':
      return v === null
    default:
      return false
  }
}
