/**
 * Which refusals a device logs (issue 11, floods): a cause (a code and who
 * caused it) once, and at most `netLimits.lanRefusalsLoggedPerHourMax`
 * causes an hour in all. A LAN peer's identity costs nothing to mint, so
 * "once per cause" alone let one host write five events a second, and a
 * registered device re-opening links one per refused write: the log is
 * bounded, and the honest events it holds would have been pushed out.
 * `status().lan.lastError` still shows the latest of every refusal.
 */
import type { Clock } from '../core/clock.js'
import { netLimits } from '../core/limits.js'

const HOUR_MS = 60 * 60_000
/** How many causes are remembered as logged (then forgotten all at once). */
const CAUSES_REMEMBERED_MAX = 256

export class LogLimiter {
  private readonly logged = new Set<string>()
  private windowStart = Number.NEGATIVE_INFINITY
  private inWindow = 0

  constructor(private readonly clock: Clock) {}

  /** Whether to log an event for `cause` now (counted as logged when true). */
  admit(cause: string): boolean {
    if (this.logged.has(cause)) return false
    const now = this.clock.now()
    if (now - this.windowStart >= HOUR_MS) {
      this.windowStart = now
      this.inWindow = 0
    }
    if (this.inWindow >= netLimits.lanRefusalsLoggedPerHourMax) return false
    this.inWindow++
    if (this.logged.size >= CAUSES_REMEMBERED_MAX) this.logged.clear()
    this.logged.add(cause)
    return true
  }
}
