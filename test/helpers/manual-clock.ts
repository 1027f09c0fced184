/**
 * A clock for tests that moves only when told: `advance(ms)` fires the timers
 * that fall due, in order, letting the promise work each one starts run
 * before the next (so a timer that schedules another within the window sees
 * it fire too). Records every delay asked for, to check backoff bounds.
 */
import type { Clock } from '../../core/clock.js'

interface Timer {
  readonly id: number
  readonly at: number
  readonly fn: () => void
}

/** Lets pending promise continuations (and in-process I/O callbacks) run. */
export async function settle(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve))
}

/** A manual clock (see the module comment). */
export class ManualClock implements Clock {
  private timers: Timer[] = []
  private nextId = 1
  /** Every delay passed to setTimeout, in call order. */
  readonly delays: number[] = []

  constructor(private time = Date.UTC(2026, 0, 5, 9)) {}

  now(): number {
    return this.time
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const timer = { id: this.nextId++, at: this.time + Math.max(0, ms), fn }
    this.delays.push(ms)
    this.timers.push(timer)
    return timer.id
  }

  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle)
  }

  /** Timers still pending. */
  get pending(): number {
    return this.timers.length
  }

  /** Moves time forward by `ms`, firing due timers in order. */
  async advance(ms: number): Promise<void> {
    const until = this.time + ms
    await settle()
    for (;;) {
      const due = this.timers
        .filter((t) => t.at <= until)
        .sort((a, b) => a.at - b.at || a.id - b.id)[0]
      if (due === undefined) break
      this.timers = this.timers.filter((t) => t !== due)
      this.time = Math.max(this.time, due.at)
      due.fn()
      await settle()
    }
    this.time = until
    await settle()
  }
}
