import { ClaimState } from './store'
import type { Claim } from './store'

/*
 * What the two memory stores share: they live in one JS thread, so they answer synchronously,
 * hold a function's pending Promise as its entry (every caller of the thread shares it), and need
 * no lock, durability or release.
 */

const UNLOCKED: Claim = Object.freeze({ state: ClaimState.Unlocked })

export abstract class ThreadStore {
  readonly sync = true
  readonly holdsPending = true

  abstract clear(): void

  /** No caller outside this thread can compute a key: nothing to lock. */
  lock(): Claim {
    return UNLOCKED
  }

  release(): void {}

  flush(): Promise<void> {
    return Promise.resolve()
  }

  close(): Promise<void> {
    this.clear()
    return Promise.resolve()
  }
}
