import type { ResolvedOptions } from '../options'
import { MemoryBackend } from './memory'
import { PlainBackend } from './memory-plain'
import { diskStore, sharedStore } from './native'
import { remoteStore } from './remote'
import type { Store } from './store'

/*
 * The backends by name: `memoize()` opens its store here. Each one implements the store interface
 * of store.ts (documented in docs/stores.md).
 */

/** A memory cache with nothing that expires or bounds it keeps values bare (memory-plain.ts). */
const plain = (o: ResolvedOptions): boolean =>
  o.ttl === Infinity && o.maxEntries === undefined && o.maxBytes === undefined && o.maxValueBytes === undefined

const backends: Record<ResolvedOptions['backend'], (o: ResolvedOptions) => Store<unknown>> = {
  memory: (o) => (o.shared ? sharedStore(o) : plain(o) ? new PlainBackend() : new MemoryBackend(o)) as Store<unknown>,
  disk: diskStore as (o: ResolvedOptions) => Store<unknown>,
  redis: remoteStore as (o: ResolvedOptions) => Store<unknown>,
  sql: remoteStore as (o: ResolvedOptions) => Store<unknown>,
}

/**
 * Opens the store `o` names.
 * @throws TypeError for an option the store refuses; CachetteError when it cannot be opened.
 */
export function openStore(o: ResolvedOptions): Store<unknown> {
  return backends[o.backend](o)
}
