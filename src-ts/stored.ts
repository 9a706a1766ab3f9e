import { types } from 'node:util'
import { closedError, fromNative, unserializableError } from './errors'
import { encodeKey, encodeKeyLength, keyBuffer } from './key'
import {
  IO_BYTES,
  IO_CREATED,
  IO_FRESHNESS,
  IO_WAITED,
  openDisk,
  openShared,
  OWNER,
  storeGet,
  storeGetHashed,
  storePut,
  storePutAndRelease,
  storeReadOrLock,
} from './native'
import type { Failure, LockResult, NativeStore } from './native'
import { expiresOf, staleAtOf } from './options'
import type { ResolvedOptions } from './options'
import {
  codecFor,
  decodeError,
  decodePayload,
  encodeError,
  encodeTransient,
  payloadWasPromise,
  UNREADABLE,
} from './serializer'
import type { AnyFn, Implementation, ResolvedCallOptions } from './types'
import { isPromiseLike, warnOnce } from './types'

/*
 * The `disk` and `shared: true` backends: entries live in the Rust core (RocksDB, or a sharded
 * map shared by all worker threads), encoded. A call encodes its key in JS, and one native
 * call hashes it and reads the entry. A miss takes the key's calculation lock (threads, and
 * processes on disk), computes, and stores write-behind.
 */

/** Payloads up to this size are copied into one reused buffer instead of a new one per read. */
const SCRATCH_BYTES = 64 * 1024
const scratch = Buffer.allocUnsafe(SCRATCH_BYTES)

/**
 * Stores of this thread. Writes are write-behind, so on a normal exit (end of the event loop,
 * `process.exit()`) everything queued is applied before the process goes: a short script's
 * results are on disk without an explicit `flush()`. (`kill -9` skips this; `flush()` is the
 * guarantee.)
 */
const openStores = new Set<NativeStore>()
process.on('exit', () => {
  for (const s of openStores) {
    try {
      s.flushSync(false)
    } catch {
      // Exiting anyway; the store reports write errors through flush() while running.
    }
  }
})

/**
 * A key's identity in this thread's maps: the 16 digest bytes the stores index by, as a short
 * one-byte string (cheaper to make and hash than hex).
 */
const KEY_BYTES = 16
const keyId = (io: Buffer): string => io.latin1Slice(0, KEY_BYTES)

/** Results of `lockAndRead` below zero (zero and up: a value's length). */
const CLAIM_ACQUIRED = -1
const CLAIM_SETTLED = -3
const CLAIM_FAILED = -4

/**
 * Keys this thread computes synchronously right now, innermost last, for every memoized function
 * (a digest includes the namespace, so functions sharing one meet here): a nested call of such
 * a key computes without the lock, since waiting would block the thread on itself. Each depth
 * keeps its buffer (a copy of `io`, which a nested call overwrites) from one call to the next.
 */
const computing: Buffer[] = []
let computingDepth = 0

function isComputing(io: Buffer): boolean {
  outer: for (let i = 0; i < computingDepth; i++) {
    const c = computing[i]
    for (let j = 0; j < KEY_BYTES; j++) if (c[j] !== io[j]) continue outer
    return true
  }
  return false
}

const LOCK_ACQUIRED = 0
const LOCK_SETTLED = 1

/** What a read found: the decoded value, or MISS. `lastFresh`/`lastWasPromise` describe it. */
const MISS = UNREADABLE

export function storedImplementation<F extends AnyFn>(fn: F, o: ResolvedOptions): Implementation<F> {
  const codec = codecFor(o.serializer)
  const keyFn = o.key as ((...args: unknown[]) => unknown) | undefined
  const { lockTimeout, maxValueBytes, cacheUndefined, onBackendError } = o
  const stats = { hits: 0, misses: 0, staleHits: 0, computations: 0, waits: 0, errors: 0 }
  const io = Buffer.alloc(IO_BYTES)
  /** Async computations of this thread, by key digest: callers share them. */
  const inflight = new Map<string, Promise<unknown>>()
  /** Keys of sync functions being refreshed in the background (staleWhileRevalidate). */
  const refreshing = new Set<string>()
  /** Bumped by clearLocks(): computations started before it no longer own their lock. */
  let generation = 0
  /**
   * Locks this function holds now, released by clearLocks() and close(): those of async
   * computations by key digest, those of sync computations in progress (nested, so a stack).
   */
  const held = new Map<string, Buffer>()
  const heldSync: Buffer[] = []
  /** How many of `heldSync` are held (the array keeps its length: no reallocation per call). */
  let heldSyncTop = 0

  /** Releases every lock this function holds; computations in progress keep running unlocked. */
  function releaseHeld(): void {
    generation++
    for (const buf of [...held.values(), ...heldSync.slice(0, heldSyncTop)]) {
      try {
        store?.release(buf, OWNER, null)
      } catch (e) {
        backendFailure(e)
      }
    }
    held.clear()
    heldSyncTop = 0
  }
  let asyncFn = types.isAsyncFunction(fn)
  let closed = false
  let store: NativeStore | null = null
  /** `store`'s handle for the hot-path functions. */
  let h = 0

  function backendFailure(e: unknown): void {
    stats.errors++
    const err = fromNative(e)
    if (onBackendError === 'throw') throw err
    warnOnce(`cachette: ${o.namespace}: ${err.message} (${err.code}); computing without the cache`)
  }

  try {
    store = o.backend === 'disk' ? openDisk(o.path, o.namespace) : openShared(o.namespace, o.maxEntries, o.maxBytes)
    openStores.add(store)
    h = store.handle()
  } catch (e) {
    backendFailure(e)
  }

  let lastFresh = false
  let lastWasPromise = false

  /** Decodes what a native read left in `scratch` (or fetches a payload too large for it). */
  function read(n: number, buf: Buffer): unknown {
    if (n < 0) return MISS
    let value: unknown
    if (n <= SCRATCH_BYTES) {
      value = decodePayload(codec, scratch, n)
      lastWasPromise = payloadWasPromise(scratch)
    } else {
      const payload = store!.getBuffer(buf)
      if (!payload) return MISS
      value = decodePayload(codec, payload, payload.length)
      lastWasPromise = payloadWasPromise(payload)
    }
    lastFresh = buf[IO_FRESHNESS] === 0
    return value
  }

  function reread(buf: Buffer): unknown {
    try {
      return read(storeGetHashed(h, buf, scratch), buf)
    } catch (e) {
      backendFailure(e)
      return MISS
    }
  }

  /** The value as the function returns it: in a Promise for async functions. */
  function answer(value: unknown): unknown {
    return lastWasPromise || asyncFn ? Promise.resolve(value) : value
  }

  /** Stores `value` and releases the lock held on `buf`'s key (`locked`), or just stores it. */
  function put(buf: Buffer, value: unknown, wasPromise: boolean, locked: boolean): void {
    const s = store
    if (s === null) return // closed meanwhile: close() released the lock
    let payload: Buffer | undefined
    if (value != null || cacheUndefined) {
      try {
        payload = encodeTransient(codec, value, wasPromise)
      } catch (e) {
        stats.errors++
        const err = unserializableError(o.namespace, e)
        if (locked) s.release(buf, OWNER, null)
        if (onBackendError === 'throw') throw err
        warnOnce(err.message)
        return
      }
      if (maxValueBytes !== undefined && payload.length > maxValueBytes) payload = undefined
    }
    try {
      if (payload === undefined) {
        if (locked) s.release(buf, OWNER, null)
        return
      }
      // Without entryTimes()'s array: this runs on every miss.
      const now = Date.now()
      if (locked) storePutAndRelease(h, buf, payload, staleAtOf(o, now), expiresOf(o, now), now, OWNER)
      else storePut(h, buf, payload, staleAtOf(o, now), expiresOf(o, now), now)
    } catch (e) {
      backendFailure(e)
    }
  }

  function fail(buf: Buffer, err: unknown): never {
    stats.errors++
    try {
      store?.release(buf, OWNER, encodeError(err) ?? null)
    } catch {
      // The store is gone; nothing to release.
    }
    throw err
  }

  /**
   * Computes a sync function's result under the key's lock. `claimed`: the state `readOrLock`
   * already reached for this key (the lock is then taken, or waited for, already).
   */
  function computeSync(self: unknown, args: ArrayLike<unknown>, force: boolean, claimed?: number): unknown {
    if (claimed === undefined && computingDepth > 0 && isComputing(io)) return fn.apply(self, args as unknown[])
    let state: number
    let failure: Buffer | null | undefined
    try {
      if (claimed !== undefined) {
        state = claimed
        if (state === CLAIM_FAILED) failure = store!.takeError()
      } else if (force) {
        // refresh(): take the lock but do not accept the value that is there.
        const lr = store!.lock(io, OWNER, lockTimeout)
        state = lr.state === LOCK_ACQUIRED ? CLAIM_ACQUIRED : lr.error ? CLAIM_FAILED : CLAIM_SETTLED
        failure = lr.error
      } else {
        state = store!.lockAndRead(io, scratch, OWNER, lockTimeout)
        if (state === CLAIM_FAILED) failure = store!.takeError()
      }
    } catch (e) {
      backendFailure(e)
      return fn.apply(self, args as unknown[])
    }
    if (state >= 0) {
      // Another thread or process stored it while we waited for the lock.
      stats.waits++
      const r = read(state, io)
      if (r !== MISS) return answer(r)
      state = CLAIM_SETTLED
    } else if (state === CLAIM_FAILED) {
      stats.waits++
      throw decodeError(failure ?? Buffer.alloc(0))
    } else if (state === CLAIM_SETTLED) stats.waits++
    const locked = state === CLAIM_ACQUIRED
    stats.computations++
    // The function may call this memoized function again (recursion), which reuses `io`: the
    // key stays in this depth's buffer, marked as computing until it is stored.
    const depth = computingDepth
    const buf = computing[depth] ?? (computing[depth] = Buffer.allocUnsafe(IO_BYTES))
    buf.set(io)
    computingDepth = depth + 1
    const gen = generation
    const heldAt = heldSyncTop
    if (locked) heldSync[heldSyncTop++] = buf
    let v: unknown
    try {
      v = fn.apply(self, args as unknown[])
    } catch (err) {
      computingDepth = depth
      if (heldSyncTop > heldAt) heldSyncTop = heldAt
      if (locked && gen === generation) fail(buf, err)
      stats.errors++
      throw err
    }
    if (heldSyncTop > heldAt) heldSyncTop = heldAt
    if (isPromiseLike(v)) {
      computingDepth = depth
      // A function that returns promises: finish in the background, share it meanwhile.
      asyncFn = true
      const copy = Buffer.from(buf)
      const id = keyId(copy)
      const owns = locked && gen === generation
      if (owns) held.set(id, copy)
      const p = Promise.resolve(v).then(
        (x) => {
          put(copy, x, true, settle(id, owns, gen))
          return x
        },
        (err) => (settle(id, owns, gen) ? fail(copy, err) : Promise.reject(err)),
      )
      track(id, p)
      return p
    }
    try {
      put(buf, v, false, locked && gen === generation)
    } finally {
      computingDepth = depth
    }
    return v
  }

  /**
   * Ends an async computation's hold on its lock: whether it still owns it (it took it, and
   * clearLocks() or close() did not release it meanwhile).
   */
  function settle(id: string, owns: boolean, gen: number): boolean {
    if (!owns || gen !== generation) return false
    held.delete(id)
    return true
  }

  function computeAsync(
    self: unknown,
    args: ArrayLike<unknown>,
    hex: string,
    buf: Buffer,
    force: boolean,
  ): Promise<unknown> {
    const gen = generation
    const p = (async () => {
      const lr = (await store!.lockAsync(buf, OWNER, lockTimeout)) as LockResult | Failure
      if ('code' in lr) {
        backendFailure(lr)
        return fn.apply(self, args as unknown[])
      }
      if (lr.state === LOCK_SETTLED) {
        if (lr.error) throw decodeError(lr.error)
        const r = reread(buf)
        stats.waits++
        if (r !== MISS && !force) return r
      } else if (lr.state === LOCK_ACQUIRED && !force) {
        const r = reread(buf)
        if (r !== MISS && lastFresh) {
          store!.release(buf, OWNER, null)
          stats.waits++
          return r
        }
      }
      let locked = lr.state === LOCK_ACQUIRED
      if (locked && gen !== generation) {
        // clearLocks() ran while this caller waited: it computes, but holds no lock.
        store?.release(buf, OWNER, null)
        locked = false
      }
      if (locked) held.set(hex, buf)
      stats.computations++
      let v: unknown
      try {
        v = await fn.apply(self, args as unknown[])
      } catch (err) {
        if (settle(hex, locked, gen)) fail(buf, err)
        stats.errors++
        throw err
      }
      put(buf, v, true, settle(hex, locked, gen))
      return v
    })()
    track(hex, p)
    return p
  }

  function track(hex: string, p: Promise<unknown>): void {
    inflight.set(hex, p)
    const done = () => {
      if (inflight.get(hex) === p) inflight.delete(hex)
    }
    p.then(done, done)
  }

  function call(self: unknown, args: ArrayLike<unknown>, co: ResolvedCallOptions | undefined): ReturnType<F> {
    if (closed) throw closedError(o.namespace)
    if (co?.bypass) return fn.apply(self, args as unknown[])
    const kn = encodeKeyLength(keyFn === undefined ? args : [keyFn(...Array.from(args))])
    if (store === null) {
      stats.misses++
      stats.computations++
      return fn.apply(self, args as unknown[])
    }
    let force = co?.refresh === true
    let r: unknown = MISS
    // A sync function with nothing of its own in progress reads, and on a miss takes the lock,
    // in one native call.
    const fused = co === undefined && !asyncFn && computingDepth === 0 && inflight.size === 0
    let claimed = 0
    try {
      if (force) store.hash(keyBuffer().subarray(0, kn), io)
      else if (fused) {
        claimed = storeReadOrLock(h, keyBuffer(), kn, io, scratch, OWNER, lockTimeout)
        if (claimed >= 0 && io[IO_WAITED] === 0) r = read(claimed, io)
      } else r = read(storeGet(h, keyBuffer(), kn, io, scratch), io)
    } catch (e) {
      backendFailure(e)
      return fn.apply(self, args as unknown[])
    }
    if (fused && (claimed < 0 || io[IO_WAITED] === 1)) {
      stats.misses++
      return computeSync(self, args, false, claimed) as ReturnType<F>
    }
    if (
      r !== MISS &&
      co !== undefined &&
      co.maxAge !== undefined &&
      Date.now() - io.readDoubleLE(IO_CREATED) > co.maxAge
    ) {
      // Too old for this call: compute anew and overwrite.
      r = MISS
      force = true
    }
    if (r !== MISS) {
      if (lastFresh) {
        stats.hits++
        return answer(r) as ReturnType<F>
      }
      stats.staleHits++
      const answered = answer(r)
      revalidate(self, args, keyId(io))
      return answered as ReturnType<F>
    }
    const hex = keyId(io)
    const running = inflight.get(hex)
    if (running !== undefined && !force) {
      stats.waits++
      return running as ReturnType<F>
    }
    stats.misses++
    if (asyncFn) return computeAsync(self, args, hex, Buffer.from(io), force) as ReturnType<F>
    return computeSync(self, args, force) as ReturnType<F>
  }

  /** Refreshes a stale entry in the background, once at a time per key in this thread. */
  function revalidate(self: unknown, args: ArrayLike<unknown>, hex: string): void {
    if (inflight.has(hex) || refreshing.has(hex)) return
    const copy = Buffer.from(io)
    const argsCopy = Array.from(args)
    if (asyncFn) {
      computeAsync(self, argsCopy, hex, copy, true).catch(() => {
        // Counted in stats.errors; the stale value keeps being served until it expires.
      })
      return
    }
    // A sync function stays sync: refresh it on a later turn of the event loop.
    refreshing.add(hex)
    setImmediate(() => {
      io.set(copy)
      try {
        computeSync(self, argsCopy, true)
      } catch {
        // Counted in stats.errors; the stale value keeps being served until it expires.
      } finally {
        refreshing.delete(hex)
      }
    })
  }

  function hashed(args: unknown[]): Buffer | undefined {
    const kb = encodeKey(keyFn === undefined ? args : [keyFn(...args)])
    if (store === null) return undefined
    store.hash(kb, io)
    return io
  }

  function lookup(args: unknown[]): unknown {
    const buf = hashed(args)
    if (buf === undefined) return MISS
    try {
      return read(storeGetHashed(h, buf, scratch), buf)
    } catch (e) {
      backendFailure(e)
      return MISS
    }
  }

  return {
    call,
    stats,
    methods: {
      clearOwn() {
        try {
          store?.clear()
        } catch (e) {
          backendFailure(e)
        }
      },
      size() {
        try {
          return store?.size() ?? 0
        } catch (e) {
          backendFailure(e)
          return 0
        }
      },
      delete(...args) {
        const buf = hashed(args)
        return buf !== undefined && store!.delete(buf)
      },
      has: (...args) => lookup(args) !== MISS,
      peek(...args) {
        const r = lookup(args)
        return (r === MISS ? undefined : answer(r)) as ReturnType<F> | undefined
      },
      set(args, value) {
        const buf = hashed(args)
        if (buf === undefined) return
        if (isPromiseLike(value)) {
          const copy = Buffer.from(buf)
          value.then(
            (v: unknown) => put(copy, v, true, false),
            () => undefined,
          )
        } else put(buf, value, false, false)
      },
      clearLocks() {
        releaseHeld()
        inflight.clear()
      },
      async flush() {
        const f = (await store?.flush(o.durability === 'sync')) as Failure | null | undefined
        if (f) throw fromNative(f)
      },
      async close() {
        if (closed) return
        try {
          const f = (await store?.flush(o.durability === 'sync')) as Failure | null | undefined
          if (f) throw fromNative(f)
        } finally {
          closed = true
          releaseHeld()
          if (store !== null) openStores.delete(store)
          store?.close()
          store = null
        }
      },
    },
  }
}
