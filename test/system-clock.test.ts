/**
 * The production clock takes delays past Node's longest (2^31 - 1 ms, about
 * 24.8 days): a retention or delta interval of a month once fired its timer
 * after 1 ms, over and over (a busy loop). Fake timers stand in for a month.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import { systemClock, TIMER_DELAY_MAX_MS } from '../peers/system-clock.js'

const DAY = 86_400_000

afterEach(() => {
  vi.useRealTimers()
})

describe('systemClock', () => {
  it('fires a 60-day timer once, after 60 days, not before', () => {
    vi.useFakeTimers()
    const fired: number[] = []
    const start = Date.now()
    systemClock.setTimeout(() => fired.push(Date.now() - start), 60 * DAY)
    vi.advanceTimersByTime(1_000)
    expect(fired).toEqual([])
    vi.advanceTimersByTime(30 * DAY)
    expect(fired).toEqual([])
    vi.advanceTimersByTime(30 * DAY)
    expect(fired).toEqual([60 * DAY])
    vi.advanceTimersByTime(90 * DAY)
    expect(fired).toHaveLength(1)
  })

  it('cancels a long timer before and after it re-armed', () => {
    vi.useFakeTimers()
    let fired = 0
    const early = systemClock.setTimeout(() => fired++, 40 * DAY)
    systemClock.clearTimeout(early)
    const late = systemClock.setTimeout(() => fired++, 40 * DAY)
    vi.advanceTimersByTime(TIMER_DELAY_MAX_MS + 1_000)
    systemClock.clearTimeout(late)
    vi.advanceTimersByTime(60 * DAY)
    expect(fired).toBe(0)
  })

  it('keeps short timers as they were (cancellable, unref-ed Node timers)', () => {
    vi.useFakeTimers()
    let fired = 0
    systemClock.setTimeout(() => fired++, 10)
    const cancelled = systemClock.setTimeout(() => fired++, 10)
    systemClock.clearTimeout(cancelled)
    vi.advanceTimersByTime(10)
    expect(fired).toBe(1)
  })
})
