/** The real clock, for production peers. Tests and the simulator pass their own. */
import type { Clock } from '../core/clock.js'

/**
 * The longest delay Node's timers take (2^31 - 1 ms, about 24.8 days): a
 * longer one fires after 1 ms with a warning, so a retention or a delta
 * interval of a month would run its timer every millisecond.
 */
export const TIMER_DELAY_MAX_MS = 2 ** 31 - 1

/** A timer that may outlast Node's longest delay: re-armed until its time comes. */
interface LongTimer {
  timer: NodeJS.Timeout
}

function arm(handle: LongTimer, fn: () => void, dueAt: number): void {
  const left = dueAt - Date.now()
  handle.timer =
    left > TIMER_DELAY_MAX_MS
      ? setTimeout(() => arm(handle, fn, dueAt), TIMER_DELAY_MAX_MS)
      : setTimeout(fn, Math.max(0, left))
  handle.timer.unref()
}

/** Wall-clock time and Node timers (unref'd: a pending delta sync does not keep a process alive). */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    if (!(ms > TIMER_DELAY_MAX_MS)) {
      const timer = setTimeout(fn, ms)
      timer.unref()
      return timer
    }
    const handle = {} as LongTimer
    arm(handle, fn, Date.now() + ms)
    return handle
  },
  clearTimeout: (handle) => {
    if (handle !== null && typeof handle === 'object' && 'timer' in handle)
      clearTimeout((handle as LongTimer).timer)
    else clearTimeout(handle as NodeJS.Timeout)
  },
}

/** The handles withLongTimers gives for delays it splits. */
const splitTimers = new WeakSet<object>()

/**
 * `clock` with delays longer than Node's longest split into steps of at
 * most that, each re-armed until its time comes on `clock`'s own time: an
 * injected clock that forwards to Node's timers (a valid one) ran a
 * 40-day delta interval after 1 ms, 350 times in 3 s (a probe). The
 * system clock does so itself; a virtual clock just sees more steps.
 */
export function withLongTimers(clock: Clock): Clock {
  if (clock === systemClock) return clock
  return {
    now: () => clock.now(),
    setTimeout: (fn, ms) => {
      if (!(ms > TIMER_DELAY_MAX_MS)) return clock.setTimeout(fn, ms)
      const handle: { inner: unknown } = { inner: undefined }
      splitTimers.add(handle)
      const dueAt = clock.now() + ms
      const step = (): void => {
        const left = dueAt - clock.now()
        handle.inner =
          left > TIMER_DELAY_MAX_MS
            ? clock.setTimeout(step, TIMER_DELAY_MAX_MS)
            : clock.setTimeout(fn, Math.max(0, left))
      }
      step()
      return handle
    },
    clearTimeout: (handle) => {
      if (handle !== null && typeof handle === 'object' && splitTimers.has(handle))
        clock.clearTimeout((handle as { inner: unknown }).inner)
      else clock.clearTimeout(handle)
    },
  }
}

/**
 * Holds the process alive, as an open socket does, until the returned
 * function is called: a ref'd timer that never fires (its period is about
 * 12 days). The system clock's timers are unref'd, so work that waits only
 * on them (a device's retries, a compaction's turns) lets the process exit.
 */
export function holdProcess(): () => void {
  const handle = setInterval(() => undefined, 2 ** 30)
  return () => clearInterval(handle)
}
