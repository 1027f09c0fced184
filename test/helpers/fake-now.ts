/**
 * `performance.now()` held by a test: it returns `clock.now`, which the
 * test moves; the real one is put back when the test finishes, passed or
 * failed. Turns and slices read it (peers/replica/answer-turns.ts).
 */
import { onTestFinished } from 'vitest'

export function fakePerformanceNow(start = 0): { now: number } {
  const clock = { now: start }
  const real = performance.now.bind(performance)
  performance.now = () => clock.now
  onTestFinished(() => {
    performance.now = real
  })
  return clock
}
