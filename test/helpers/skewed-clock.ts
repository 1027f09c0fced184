/**
 * Clocks that differ (issue 12): each peer of a test reads its own wall
 * clock, a fixed offset ahead of or behind the clock the test moves, while
 * timers still run on the test's clock (a delay is a delay whatever the
 * wall clock says). The offsets are minutes: more than any gap a test
 * leaves between two writes, so which write is "later" by wall time and
 * which one came after the other are no longer the same question.
 */
import type { Clock } from '../../core/clock.js'

const MINUTE = 60_000

/** `base` seen through a wall clock `offsetMs` ahead of it (behind when negative). */
export function skewedClock(base: Clock, offsetMs: number): Clock {
  return {
    now: () => base.now() + offsetMs,
    setTimeout: (fn, ms) => base.setTimeout(fn, ms),
    clearTimeout: (handle) => base.clearTimeout(handle),
  }
}

/** The offsets of one test run, per peer id; a peer not named runs on the test's clock. */
export interface Skew {
  readonly name: string
  readonly offsetsMs: Readonly<Record<string, number>>
}

/** Offset of `peer` under `skew`. */
export const offsetOf = (skew: Skew, peer: string): number => skew.offsetsMs[peer] ?? 0

/**
 * The two ways round every rule and lifecycle test runs: the devices ahead
 * of the server, and behind it, by different amounts each (so two devices
 * disagree with each other too).
 */
export const DEVICE_SKEWS: readonly Skew[] = [
  {
    name: 'devices ahead of the server',
    offsetsMs: { 'dev-a': 7 * MINUTE, 'dev-b': 3 * MINUTE, D1: 7 * MINUTE, D2: 3 * MINUTE },
  },
  {
    name: 'devices behind the server',
    offsetsMs: { 'dev-a': -7 * MINUTE, 'dev-b': -3 * MINUTE, D1: -7 * MINUTE, D2: -3 * MINUTE },
  },
]

/** The machine's clock, `offset.ms` off (read each time, so a test moves it); timers on real time. */
export function offsetClock(offset: { ms: number }): Clock {
  return {
    now: () => Date.now() + offset.ms,
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
  }
}
