/*
 * The one file that imports the generated binding. Everything native goes through here.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const binding = require('../index.js') as typeof import('../index')

export type { NativeStore, NativeRemote, LockResult, Failure, Acquire, Found } from '../index'
export const openDisk = binding.openDisk
export const openShared = binding.openShared
export const openRemote = binding.openRemote
/** Bytes of the `io` buffer shared with native calls. */
export const IO_BYTES = binding.IO_BYTES
/** Offsets inside `io`: the digest fills bytes 0–31. */
export const IO_FRESHNESS = 32
export const IO_CREATED = 40

/** This thread's owner id: its calculation locks are released if the thread dies. */
export const OWNER: number = binding.registerOwner()
