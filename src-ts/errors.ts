/**
 * Stable codes of every error cachette throws. Match on `error.code`, never on the message.
 *
 * | code | when |
 * |---|---|
 * | `ERR_UNKEYABLE_ARGUMENT` | an argument has no value identity (function, symbol, class instance, cycle…) |
 * | `ERR_UNSERIALIZABLE_RESULT` | a result cannot be encoded (only with `onBackendError: 'throw'`; otherwise it is returned uncached) |
 * | `ERR_LOCK_TIMEOUT` | waited `lockTimeout` for another caller (only where a timeout cannot fall back to computing) |
 * | `ERR_BACKEND_UNAVAILABLE` | the store cannot be opened or reached (only with `onBackendError: 'throw'`) |
 * | `ERR_INVALID_OPTION` | a store option the core refused (raised as a `TypeError` by `memoize()`) |
 * | `ERR_BACKEND_IO` | a read or write inside an open store failed (only with `onBackendError: 'throw'`) |
 * | `ERR_STORE_LOCKED` | another process owns the disk directory and did not answer within 10 s |
 * | `ERR_CLOSED` | the memoized function or cache was closed |
 * | `ERR_COMPUTATION_FAILED` | another thread's computation failed and its error could not be rebuilt |
 * | `ERR_INVALID_ARGUMENT` | the native addon was called with arguments it refuses (a bug in cachette; please report it) |
 */
export const errorCodes = {
  ERR_UNKEYABLE_ARGUMENT: 'ERR_UNKEYABLE_ARGUMENT',
  ERR_UNSERIALIZABLE_RESULT: 'ERR_UNSERIALIZABLE_RESULT',
  ERR_LOCK_TIMEOUT: 'ERR_LOCK_TIMEOUT',
  ERR_BACKEND_UNAVAILABLE: 'ERR_BACKEND_UNAVAILABLE',
  ERR_BACKEND_IO: 'ERR_BACKEND_IO',
  ERR_INVALID_OPTION: 'ERR_INVALID_OPTION',
  ERR_STORE_LOCKED: 'ERR_STORE_LOCKED',
  ERR_CLOSED: 'ERR_CLOSED',
  ERR_COMPUTATION_FAILED: 'ERR_COMPUTATION_FAILED',
  ERR_INVALID_ARGUMENT: 'ERR_INVALID_ARGUMENT',
} as const

/** One of {@link errorCodes}. */
export type CachetteErrorCode = keyof typeof errorCodes

/**
 * The error cachette throws for its own failures. Errors thrown by your function are never
 * wrapped: they reach the caller unchanged.
 *
 * @example
 * ```ts
 * try { f(() => 1) } catch (e) { if (e instanceof CachetteError && e.code === 'ERR_UNKEYABLE_ARGUMENT') … }
 * ```
 */
export class CachetteError extends Error {
  /** Stable machine-readable code. */
  readonly code: CachetteErrorCode

  constructor(code: CachetteErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'CachetteError'
    this.code = code
  }
}

/** The error every call of a closed memoized function throws. */
export function closedError(namespace: string): CachetteError {
  return new CachetteError(
    'ERR_CLOSED',
    `cachette: ${namespace} was closed; create a new memoized function to keep caching`,
  )
}

/**
 * Turns an error of the native addon into a {@link CachetteError}, keeping it as `cause`: a
 * thrown error and an asynchronous operation's `{ code, message }` both carry the core's code.
 * An error without a known code (a bug, or the runtime's own) is `ERR_BACKEND_IO`.
 */
export function fromNative(e: unknown): CachetteError {
  if (e instanceof CachetteError) return e
  const err = e as { code?: unknown; message?: unknown } | null
  const message = typeof err?.message === 'string' ? err.message : String(e)
  const code =
    typeof err?.code === 'string' && err.code in errorCodes ? (err.code as CachetteErrorCode) : 'ERR_BACKEND_IO'
  return new CachetteError(code, message, { cause: e })
}

/** The error of a result the serializer could not encode (it is returned, not stored). */
export function unserializableError(namespace: string, cause: unknown): CachetteError {
  return new CachetteError(
    'ERR_UNSERIALIZABLE_RESULT',
    `cachette: ${namespace}: a result could not be encoded and was not cached: ${(cause as Error)?.message ?? cause}`,
    { cause },
  )
}
