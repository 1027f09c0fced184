/**
 * Which refusals a device logs (issue 11, floods): a cause (a code and who
 * caused it) once, and at most `netLimits.lanRefusalsLoggedPerHourMax`
 * causes a window of `netLimits.lanRefusalsLogWindowMs` in all. A LAN
 * peer's identity costs nothing to mint, so "once per cause" alone let one
 * host write five events a second, and a registered device re-opening
 * links one per refused write: the log is bounded, and the honest events
 * it holds would have been pushed out. What was not logged is said with
 * the next event logged (`notLogged`); `status().lan.lastError` shows the
 * latest refusal whatever was logged.
 */
import type { Clock } from '../core/clock.js'
import { netLimits } from '../core/limits.js'

export class LogLimiter {
  private readonly logged = new Set<string>()
  private windowStart = Number.NEGATIVE_INFINITY
  private inWindow = 0
  /** Refusals not logged since the last one logged. */
  private skipped = 0

  constructor(private readonly clock: Clock) {}

  /** Whether to log an event for `cause` now (counted as logged when true). */
  admit(cause: string): boolean {
    if (this.logged.has(cause)) return false
    const now = this.clock.now()
    // A clock set back starts a window too (else none would until it caught up).
    if (now < this.windowStart || now - this.windowStart >= netLimits.lanRefusalsLogWindowMs) {
      this.windowStart = now
      this.inWindow = 0
    }
    if (this.inWindow >= netLimits.lanRefusalsLoggedPerHourMax) {
      this.skipped++
      return false
    }
    this.inWindow++
    if (this.logged.size >= netLimits.lanRefusalCausesRememberedMax) this.logged.clear()
    this.logged.add(cause)
    return true
  }

  /**
   * Said with an event just admitted: how many causes went unlogged before
   * it, past the bound ('' when none), counted from then on afresh.
   */
  notLogged(): string {
    const skipped = this.skipped
    this.skipped = 0
    const minutes = Math.round(netLimits.lanRefusalsLogWindowMs / 60_000)
    return skipped === 0
      ? ''
      : ` (${skipped} LAN refusals before this one not logged: more than ${netLimits.lanRefusalsLoggedPerHourMax} in ${minutes} minutes)`
  }
}
