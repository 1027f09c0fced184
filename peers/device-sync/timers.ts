/**
 * The device's sync timers, all on the injected clock: the next delta sync,
 * the retry of a failed one (backoff with jitter, up to a bound), and the
 * retention countdown.
 */
import { retryDelayMs } from '../../core/backoff.js'
import type { Clock } from '../../core/clock.js'
import { netLimits } from '../../core/limits.js'

/** What the timers are built with. */
export interface SyncTimerOptions {
  readonly clock: Clock
  readonly random: () => number
  readonly deltaIntervalMs: number
}

/** The timers of one device's sync controller. */
export class SyncTimers {
  private attempt = 0
  private deltaTimer: unknown
  private retryTimer: unknown
  private retentionTimer: unknown

  constructor(private readonly options: SyncTimerOptions) {}

  /** The next delta sync (`run`), `deltaIntervalMs` from now. */
  scheduleDelta(run: () => void): void {
    const { clock } = this.options
    clock.clearTimeout(this.deltaTimer)
    this.deltaTimer = clock.setTimeout(run, this.options.deltaIntervalMs)
  }

  /** A failed sync comes back (`run`) after a backoff with jitter, up to a bound. */
  scheduleRetry(run: () => void): void {
    const delay = Math.min(
      netLimits.syncRetryDelayMsMax,
      retryDelayMs(this.attempt++, this.options.random()),
    )
    this.retryTimer = this.options.clock.setTimeout(run, delay)
  }

  /** A sync succeeded: the next failure's backoff starts from the beginning. */
  resetBackoff(): void {
    this.attempt = 0
  }

  clearDelta(): void {
    this.options.clock.clearTimeout(this.deltaTimer)
  }

  clearRetry(): void {
    this.options.clock.clearTimeout(this.retryTimer)
  }

  /** The retention countdown (`fire`) in `ms`. */
  armRetention(fire: () => void, ms: number): void {
    const { clock } = this.options
    clock.clearTimeout(this.retentionTimer)
    this.retentionTimer = clock.setTimeout(fire, ms)
  }

  clearRetention(): void {
    this.options.clock.clearTimeout(this.retentionTimer)
  }

  /** Every timer (the device closes). */
  clearAll(): void {
    this.clearDelta()
    this.clearRetry()
    this.clearRetention()
  }
}
