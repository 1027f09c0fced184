/**
 * The clock every peer timer goes through (delta-sync interval, retry
 * backoff, retention). Tests and the simulator pass a virtual one.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number
  /** Runs `fn` after `ms` milliseconds; returns a handle for `clearTimeout`. */
  setTimeout(fn: () => void, ms: number): unknown
  /** Cancels a timer; unknown or fired handles are ignored. */
  clearTimeout(handle: unknown): void
}
