/** The real clock, for production peers. Tests and the simulator pass their own. */
import type { Clock } from '../core/clock.js'

/**
 * The longest delay Node's timers take (2^31 - 1 ms, about 24.8 days): a
 * longer one fires after 1 ms with a warning, so a retention or a delta
 * interval of a month would run its timer every millisecond.
 */
export const TIMER_DELAY_MAX_MS = 2 ** 31 - 1

/** The handles splitLongTimers gives for delays it splits. */
const splitTimers = new WeakSet<object>()

/** `clock` with delays past TIMER_DELAY_MAX_MS re-armed in steps until due, on its own time. */
function splitLongTimers(clock: Clock): Clock {
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

/** Wall-clock time and Node timers (unref'd: a pending delta sync does not keep a process alive). */
export const systemClock: Clock = splitLongTimers({
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const timer = setTimeout(fn, ms)
    timer.unref()
    return timer
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
})

/**
 * `clock` with delays longer than Node's longest split into steps of at
 * most that, each re-armed until its time comes on `clock`'s own time, as
 * the system clock does: an injected clock that forwards to Node's timers
 * (a valid one) ran a 40-day delta interval after 1 ms, 350 times in 3 s
 * (a probe). A virtual clock just sees more steps.
 */
export function withLongTimers(clock: Clock): Clock {
  return clock === systemClock ? clock : splitLongTimers(clock)
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
