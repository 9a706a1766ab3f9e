import { encodeKeyString } from './key'
import { lastToken, UNSUPPORTED, walk } from './key-trie'
import { Node } from './key-trie'

/** Where an in-process entry lives: an array (integer keys) or a Map (a trie node included). */
export type Container = unknown[] | Map<unknown, unknown>

/** Integer keys below this index the array of a router made with `ints: true`. */
export const INT_LIMIT = 1 << 24

/**
 * Routes an argument list to the container and key of its in-process entry: a lone primitive
 * keys a Map by itself (a Map tells '1', 1 and 1n apart; -0 is routed apart from 0), optionally a
 * non-negative integer indexes an array, plain objects and arrays walk the key trie, and anything
 * else is keyed by its canonical encoding. One argument list always lands in one place.
 */
export class KeyRouter {
  ints: unknown[] | null
  readonly prim = new Map<unknown, unknown>()
  readonly enc = new Map<unknown, unknown>()
  root = new Node(null, null)
  /** The container found by the last `route`; `null` when its trie path does not exist yet. */
  container: Container | null = null
  key: unknown
  private src: ArrayLike<unknown> = []

  constructor(ints: boolean) {
    this.ints = ints ? [] : null
  }

  route(src: ArrayLike<unknown>, make: boolean): void {
    if (src.length === 1) {
      const a = src[0]
      const t = typeof a
      const exact = t !== 'number' || a !== 0 || 1 / (a as number) > 0
      if (this.ints !== null && t === 'number' && (a as number) >>> 0 === a && (a as number) < INT_LIMIT && exact) {
        this.container = this.ints
        this.key = a
        return
      }
      if (
        t === 'string' ||
        t === 'boolean' ||
        t === 'undefined' ||
        t === 'bigint' ||
        a === null ||
        (t === 'number' && exact)
      ) {
        this.container = this.prim
        this.key = a
        return
      }
    }
    const found = walk(this.root, src, make)
    if (found === UNSUPPORTED) {
      this.container = this.enc
      this.key = encodeKeyString(src)
    } else {
      this.container = (found as Node | undefined) ?? null
      this.key = lastToken
      this.src = src
    }
  }

  /** The container of the last `route`, creating its trie path if needed. */
  target(): Container {
    if (this.container === null) {
      this.container = walk(this.root, this.src, true) as Node
      this.key = lastToken
    }
    return this.container
  }

  /** Whether `c` is a trie node (its empty path is pruned when its last entry goes). */
  isTrie(c: Container | null): boolean {
    return c instanceof Node
  }

  reset(): void {
    if (this.ints !== null) this.ints = []
    this.prim.clear()
    this.enc.clear()
    this.root = new Node(null, null)
  }
}
