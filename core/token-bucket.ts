/**
 * A token bucket: at most `burst` at once, refilled at `perSecond`. Bounds
 * the rate of what one link may do (messages, bytes, answers) while letting
 * a legitimate burst (a full sync) through. Pure: the time comes in.
 */

/** One bucket; starts full. */
export class TokenBucket {
  private tokens: number
  private at: number | undefined

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {
    this.tokens = burst
  }

  /**
   * Takes `amount` tokens at time `nowMs`; false (and nothing taken) when
   * the bucket does not hold them. A clock that goes back refills nothing.
   */
  take(amount: number, nowMs: number): boolean {
    if (this.at !== undefined && nowMs > this.at) {
      this.tokens = Math.min(this.burst, this.tokens + ((nowMs - this.at) / 1000) * this.perSecond)
    }
    if (this.at === undefined || nowMs > this.at) this.at = nowMs
    if (amount > this.tokens) return false
    this.tokens -= amount
    return true
  }
}
