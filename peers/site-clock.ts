/**
 * A device's clock as its replica reads it: its own, corrected by how far
 * the server found it off (PROTOCOL.md, "Joining": `CLOCK_SKEW`).
 *
 * A device whose clock is days off (a flat RTC battery, a test that moves
 * only the device's clock) joins in the server's time after one refusal
 * (peers/server-link-signing.ts); once the server admits a join made in its
 * time, the replica takes the correction: its writes are stamped in the
 * site's time, which the server takes (days ahead, it refuses them as
 * stamps from the future), and stamps it receives are judged against the
 * same time. The correction stays 0 while the clock is within
 * `netLimits.joinSkewMsMax` of the server's (the server never refuses a
 * join for it then). Timers keep their durations; the sync controller's
 * timers and status times keep the device's own clock.
 */
import type { Clock } from '../core/clock.js'

/** A clock plus a settable correction. */
export class SiteClock implements Clock {
  private offsetMs = 0

  constructor(private readonly clock: Clock) {}

  now(): number {
    return this.clock.now() + this.offsetMs
  }

  setTimeout(fn: () => void, ms: number): unknown {
    return this.clock.setTimeout(fn, ms)
  }

  clearTimeout(handle: unknown): void {
    this.clock.clearTimeout(handle)
  }

  /** Sets the correction, ms (the server's time minus the device clock's). */
  setOffset(ms: number): void {
    this.offsetMs = ms
  }
}
