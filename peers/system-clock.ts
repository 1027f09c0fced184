/** The real clock, for production peers. Tests and the simulator pass their own. */
import type { Clock } from '../core/clock.js'

/** Wall-clock time and Node timers (unref'd: a pending delta sync does not keep a process alive). */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const handle = setTimeout(fn, ms)
    handle.unref()
    return handle
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
}
