/**
 * The production clock takes delays past Node's longest (2^31 - 1 ms, about
 * 24.8 days): a retention or delta interval of a month once fired its timer
 * after 1 ms, over and over (a busy loop). Fake timers stand in for a month.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { Clock } from '../core/clock.js'
import { memorySite } from './helpers/memory-site.js'
import { systemClock, TIMER_DELAY_MAX_MS, withLongTimers } from '../peers/system-clock.js'

const DAY = 86_400_000

/** A valid clock that forwards to Node's timers as they are (Node fires one too long after 1 ms). */
const forwarding: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
}

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

describe('an injected clock (withLongTimers, what every peer uses)', () => {
  it('fires a 40-day timer once, after 40 days, and cancels one before and after it re-armed', () => {
    // A periodic device with a 40-day delta interval on such a clock ran
    // 350 delta syncs in 3 s (a probe).
    vi.useFakeTimers()
    const clock = withLongTimers(forwarding)
    const fired: number[] = []
    const start = Date.now()
    clock.setTimeout(() => fired.push(Date.now() - start), 40 * DAY)
    vi.advanceTimersByTime(1_000)
    expect(fired).toEqual([])
    vi.advanceTimersByTime(40 * DAY)
    expect(fired).toEqual([40 * DAY])
    let cancelledFired = 0
    const early = clock.setTimeout(() => cancelledFired++, 40 * DAY)
    clock.clearTimeout(early)
    const late = clock.setTimeout(() => cancelledFired++, 40 * DAY)
    vi.advanceTimersByTime(TIMER_DELAY_MAX_MS + 1_000)
    clock.clearTimeout(late)
    vi.advanceTimersByTime(60 * DAY)
    expect(cancelledFired).toBe(0)
    // Short timers and the clock's time are the clock's own.
    let short = 0
    clock.setTimeout(() => short++, 10)
    vi.advanceTimersByTime(10)
    expect(short).toBe(1)
    expect(clock.now()).toBe(Date.now())
    expect(withLongTimers(systemClock)).toBe(systemClock)
  })
})

describe('a periodic device on such a clock, its delta interval 40 days', () => {
  it('runs no delta sync in the first second (it ran hundreds)', async () => {
    const site = await memorySite(forwarding)
    try {
      await site.server.users.put({ id: 'u1', name: 'Ann' })
      const device = await site.device('D1', forwarding, {
        mode: 'periodic',
        deltaIntervalMs: 40 * DAY,
        retentionMs: 30 * DAY,
      })
      await device.sync.whenReady()
      const started = device.events.query({ type: 'sync-started' }).length
      await new Promise((resolve) => setTimeout(resolve, 1_000))
      expect(device.events.query({ type: 'sync-started' }).length).toBe(started)
      expect(device.sync.status().serverToDevice.state).toBe('success')
    } finally {
      await site.close()
    }
  })
})
