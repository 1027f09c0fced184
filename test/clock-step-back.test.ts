/**
 * A device that learned its server's time while its clock ran days ahead
 * (a wrong real-time clock at boot), whose clock is then set right (NTP
 * comes up) before its next join. It stamped at the offset it had learned,
 * so once its clock was right its stamps were days in the past, each just
 * past the latest stamp it held: a fill it made after another device's
 * lost to it. Now the device notices its clock going back (a timer, which
 * counts elapsed time whatever the clock reads) and moves the offset by
 * the step (StampTime, `limits.clockStepCheckMs`).
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { Clock } from '../core/clock.js'
import { stampMs } from '../core/hlc.js'
import { limits } from '../core/limits.js'
import type { DevicePeer } from '../peers/create-device.js'
import { ManualClock } from './helpers/manual-clock.js'
import { memorySite, type MemorySite } from './helpers/memory-site.js'

const DAY = 86_400_000
const MINUTE = 60_000

let site: MemorySite | undefined
afterEach(async () => {
  await site?.close()
  site = undefined
})

/** `base` read `offset.ms` off (changed by the test); timers on `base`. */
function movedClock(base: ManualClock, offset: { ms: number }): Clock {
  return {
    now: () => base.now() + offset.ms,
    setTimeout: (fn, ms) => base.setTimeout(fn, ms),
    clearTimeout: (handle) => base.clearTimeout(handle),
  }
}

describe('a device whose clock is set right after it learned its server time days ahead', () => {
  it.each([
    ['it reconnects first', true],
    ['the other device reconnects first', false],
  ])('keeps stamping in its server time: its later fill wins (%s)', async (_name, steppedFirst) => {
    const clock = new ManualClock()
    site = await memorySite(clock)
    const s = site
    await s.server.users.put({ id: 'u1', name: 'Ann' })
    const offset = { ms: 3 * DAY }
    let stepped = await s.device('D1', movedClock(clock, offset), { mode: 'periodic' })
    const other = await s.device('D2', clock, { mode: 'periodic' })
    await stepped.sync.whenReady()
    await other.sync.whenReady()
    expect(stepped.replica.stampTime.offset).toBeLessThan(-3 * DAY + MINUTE)

    // A step back smaller than the threshold is drift, not a step: kept.
    offset.ms = 3 * DAY - 30_000
    await clock.advance(limits.clockStepCheckMs + 1_000)
    expect(stepped.replica.stampTime.offset).toBeLessThan(-3 * DAY + MINUTE)
    // Set right: the offset follows the step (and is kept across a restart).
    offset.ms = 0
    await clock.advance(limits.clockStepCheckMs + 1_000)
    expect(stepped.replica.stampTime.offset).toBe(0)
    // Kept: reopened with no server to join, it stamps in the right time.
    s.down()
    await stepped.close()
    stepped = await s.device('D1', movedClock(clock, offset), { mode: 'periodic' })
    expect(stepped.replica.stampTime.offset).toBe(0)
    s.up()
    expect(Math.abs(stepped.replica.stampTime.now() - s.server.replica.clock.now())).toBeLessThan(
      MINUTE,
    )

    // Both fill the same vacant field offline, the stepped device 10 s later.
    s.down()
    await other.users.patch('u1', { email: 'older@example.com' })
    await clock.advance(10_000)
    await stepped.users.patch('u1', { email: 'newer@example.com' })
    expect(stampMs(stepped.replica.hlcPeek())).toBeGreaterThan(clock.now() - MINUTE)
    await clock.advance(10_000)
    s.up()
    const order: DevicePeer[] = steppedFirst ? [stepped, other] : [other, stepped]
    for (const device of [...order, ...order]) await device.sync.delta()
    // The latest fill wins, whichever device reconnected first (rule 2).
    expect(s.server.users.get('u1')?.email).toBe('newer@example.com')
    for (const device of order) expect(device.users.get('u1')?.email).toBe('newer@example.com')
  })

  it('keeps the offset a step forward leaves (a late timer looks the same), and stops with the device', async () => {
    const clock = new ManualClock()
    site = await memorySite(clock)
    const offset = { ms: 3 * DAY }
    const device = await site.device('D1', movedClock(clock, offset), { mode: 'periodic' })
    await device.sync.whenReady()
    const learned = device.replica.stampTime.offset
    expect(learned).toBeLessThan(-3 * DAY + MINUTE)
    offset.ms = 4 * DAY
    await clock.advance(limits.clockStepCheckMs + 1_000)
    expect(device.replica.stampTime.offset).toBe(learned)
    await device.close()
    // Its check does not outlive it: no timer of its period armed since.
    const asked = clock.delays.length
    await clock.advance(limits.clockStepCheckMs * 3)
    expect(clock.delays.slice(asked).filter((ms) => ms === limits.clockStepCheckMs)).toEqual([])
  })
})
