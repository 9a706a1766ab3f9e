/*
 * The clock every entry time is judged by, in JS and in the native core: the system's, unless a
 * test freezes it. Tests about TTL logic move this clock instead of sleeping.
 */
import { setNativeTestTime } from './native'

let frozen: number | undefined

/** Milliseconds since the epoch: `Date.now()`, or the time a test set. */
export function now(): number {
  return frozen === undefined ? Date.now() : frozen
}

/**
 * For tests: stops this process's cache clock at `ms` (JS and native stores alike), or, with
 * `undefined`, gives the real clock back. Not part of the public API.
 */
export function setTestTime(ms: number | undefined): void {
  frozen = ms
  setNativeTestTime(ms ?? -1)
}
