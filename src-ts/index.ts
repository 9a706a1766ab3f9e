/**
 * cachette: memoization and caching for Node.js with a Rust core.
 * @packageDocumentation
 */
export { memoize, configure } from './memoize'
export type { GlobalOptions } from './memoize'
export { CachetteError, errorCodes } from './errors'
export type { CachetteErrorCode } from './errors'
export type { MemoizeOptions, CallOptions, Duration, Serializer } from './options'
export type { AnyFn, Memoized, MemoizedMethods, RemoteMemoized, RemoteMethods, Stats } from './types'
export { msgpack, v8, json } from './serializer'
