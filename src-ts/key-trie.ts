/*
 * In-process keys without building strings: an argument list is walked as a sequence of tokens
 * (primitives themselves, or structure markers) down a trie of Maps. A Map tells primitives apart
 * exactly ('1', 1, 1n, true, null, undefined; every NaN alike), so the walk needs no encoding and
 * no hashing of long strings: a hit on `f({ id: 1, kind: 'user' })` is six Map lookups.
 *
 * Every length is a token before its items (argument count, array length, property count), so a
 * token sequence is never a prefix of another: the entry of a sequence sits in the node of its
 * next-to-last token, under its last token, and no node mixes entries and children under one token.
 *
 * The trie covers primitives, plain objects and arrays nested up to 16 levels, which is what
 * arguments mostly are; anything else is UNSUPPORTED and the caller uses the canonical encoding
 * instead (which also raises ERR_UNKEYABLE_ARGUMENT where it must). Which way a value goes depends
 * only on the value, so one argument list always has one key.
 */

/** A trie node: children (or entries) by token, plus its parent and its token for pruning. */
export type Node = Map<unknown, unknown>

const marker = (name: string) => Object.freeze({ marker: name })
const counted = (name: string) => Array.from({ length: 33 }, (_, n) => marker(`${name}(${n})`))
const ARGS = counted('args')
const ARR = counted('array')
const OBJ = counted('object')
/** For 33 items or more: this marker, then the count as a number token. */
const LONG = new Map<readonly object[], object>([
  [ARGS, marker('args(long)')],
  [ARR, marker('array(long)')],
  [OBJ, marker('object(long)')],
])
const HOLE = marker('hole')
const NEG_ZERO = marker('-0')
const NONE = marker('none')
const PARENT = marker('parent')
const TOKEN = marker('token')
/** Returned by {@link walk} for values the trie does not cover. */
export const UNSUPPORTED = marker('unsupported')

const MAX_DEPTH = 16
let node: Node
let pending: unknown = NONE
let create = false

/** Queues `tok`; descends by the previously queued token. False when that child is absent. */
function step(tok: unknown): boolean {
  if (pending !== NONE) {
    let next = node.get(pending) as Node | undefined
    if (next === undefined) {
      if (!create) return false
      next = new Map<unknown, unknown>([
        [PARENT, node],
        [TOKEN, pending],
      ])
      node.set(pending, next)
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
  const names = Object.keys(v)
  for (let i = 1; i < names.length; i++) {
    if (names[i - 1] > names[i]) {
      names.sort()
      break
    }
  }
  if (!count(OBJ, names.length)) return 0
  for (const name of names) {
    if (!step(name)) return 0
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
  if (r < 0) return UNSUPPORTED
  for (let i = 0; i < args.length; i++) if (!covered(args[i], 0)) return UNSUPPORTED
  return undefined
}

/** Removes the entry under `token` in `n`, and every node left empty above it. */
export function prune(n: Node, token: unknown): void {
  n.delete(token)
  while (n.size === 2) {
    const parent = n.get(PARENT) as Node | undefined
    if (parent === undefined) return
    parent.delete(n.get(TOKEN))
    n = parent
  }
}
