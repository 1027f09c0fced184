/**
 * The simulator with device clocks stepped days ahead and set right later
 * (`clock-step` faults; PROTOCOL.md, "Clocks"): a device writes while its
 * clock runs ahead, online and offline, across a restart; the convergence,
 * ledger and oracle checks are the simulator's usual ones (they follow the
 * stamps a device rewrote: StampTime.onRewrite). Fixed plans and fixed
 * seeds, each printing its replay command.
 */
import { describe, expect, it } from 'vitest'
import type { SimOptions } from '../sim/options.js'
import type { SimReport } from '../sim/run.js'
import { StampRewrites } from '../sim/stamp-rewrites.js'
import { CALM, simulateLogged } from './helpers/sim-runs.js'

const H = 3_600_000
const M = 60_000
const DAY = 24 * H

const simulate = (options: SimOptions): Promise<SimReport> =>
  simulateLogged('sim-clock-steps', options)

describe('device clocks stepped ahead in the simulator', () => {
  // Device 1's clock runs 3 days ahead from 1 h to 3 h: it writes online
  // (its stamps refused, the server's time taken, then rewritten) and
  // offline (cut off from 90 min to 2 h), and fills a field device 2 filled
  // before; device 2 writes after. Device 1's clock is set right at 3 h
  // while it keeps the offset it learned.
  it.each([1, 2, 3])(
    'seed %i: writes made while ahead reach every peer, rules kept',
    async (seed) => {
      const report = await simulate({
        ...CALM,
        seed,
        devices: 2,
        days: 0.5,
        jitterMs: 40,
        lanIslands: 1,
        steps: [
          { at: 10 * M, op: 'put', peer: 0, user: 0, value: 1 },
          { at: 20 * M, op: 'patch', peer: 2, user: 0, value: 2 },
          { at: H, op: 'clock-step', peer: 1, value: 3 * DAY, lasts: 2 * H },
          { at: 70 * M, op: 'patch', peer: 1, user: 0, value: 3 },
          { at: 80 * M, op: 'put', peer: 1, user: 1, value: 4 },
          { at: 90 * M, op: 'partition', peer: 1, value: 2, lasts: 30 * M },
          { at: 100 * M, op: 'patch', peer: 1, user: 1, value: 5 },
          { at: 110 * M, op: 'put', peer: 1, user: 2, value: 6 },
          { at: 150 * M, op: 'patch', peer: 2, user: 1, value: 7 },
          { at: 200 * M, op: 'patch', peer: 1, user: 2, value: 8 },
          { at: 210 * M, op: 'put', peer: 0, user: 3, value: 9 },
        ],
      })
      expect(report.ok).toBe(true)
      expect(report.faults.clockSteps).toBe(1)
      expect(report.writesChecked).toBeGreaterThanOrEqual(8)
    },
  )

  it('a step still on at the heal is set right there, before the syncs after it (seed 1926)', async () => {
    // Device 1's clock runs 3 h ahead from 11 h until 1 ms past the heal
    // (at 12 h): set right then, its clock went back 3 h before the syncs
    // the heal asks for completed, and each of them, and every later one
    // for 3 h, looked older than the heal to the convergence check (bound:
    // 2 h).
    const report = await simulate({
      ...CALM,
      seed: 5,
      devices: 2,
      days: 0.5,
      periodic: 1,
      steps: [
        { at: 10 * M, op: 'put', peer: 0, user: 0, value: 1 },
        { at: 11 * H, op: 'clock-step', peer: 1, value: 3 * H, lasts: H + 1 },
        { at: 11 * H + 5 * M, op: 'patch', peer: 1, user: 0, value: 2 },
      ],
    })
    expect(report.faults.clockSteps).toBe(1)
    expect(report.ok).toBe(true)
  })

  it('a write its device replaced before rewriting its stamps counts as superseded, not lost', async () => {
    // Device 1's clock runs 3 days ahead from 1 min: it puts user 1 at 2
    // min and again at 10 min, before any push. Its rewrite (at its
    // periodic sync) finds only the second put's stamps in its document and
    // moves them back to its time; the first put's stamps, gone from the
    // document, were never rewritten and stay 3 days ahead. The ledger and
    // the oracle read the first put at a stand-in just below the second's
    // new stamps (they took it as lost, and the second put as stamped below
    // a write it had seen: `acknowledged-write-lost`, `oracle-stamp-order`).
    const report = await simulate({
      ...CALM,
      seed: 1,
      devices: 1,
      days: 0.05,
      periodic: 1,
      steps: [
        { at: M, op: 'clock-step', peer: 1, value: 3 * DAY, lasts: 2 * H },
        { at: 2 * M, op: 'put', peer: 1, user: 1, value: 11 },
        { at: 10 * M, op: 'put', peer: 1, user: 1, value: 22 },
      ],
    })
    expect(report.faults.clockSteps).toBe(1)
    expect(report.violationCounts).toEqual({})
    expect(report.ok).toBe(true)
  })

  it('swarm seeds with clock steps drawn among every other fault converge and keep every rule', async () => {
    for (const seed of [11, 12, 13, 14]) {
      const report = await simulate({ seed, swarm: true, devices: 5, ops: 120, clockSteps: 3 })
      expect(report.ok).toBe(true)
      expect(report.faults.clockSteps).toBeGreaterThan(0)
    }
  })
})

describe('stamps as they stand after a rewrite (sim/stamp-rewrites.ts)', () => {
  // d1 stamped 500 (kept), 900 and 1000 (replaced by a later write of its
  // own: gone), 1100 (still held), 1300 and 1400 (gone), 1500 (still held),
  // then rewrote 1100 -> 601 and 1500 -> 602.
  const rewrites = new StampRewrites()
  rewrites.note(
    'd1',
    new Map([
      [1100, 601],
      [1500, 602],
    ]),
  )

  it('a stamp the rewrite replaced is its new one, read before or after it', () => {
    expect(rewrites.now('d1', 1100, 0)).toEqual({ stamp: 601, standIn: false })
    expect(rewrites.now('d1', 1500, 1)).toEqual({ stamp: 602, standIn: false })
  })

  it('a gone stamp read before it stands in just below the next one it replaced', () => {
    expect(rewrites.now('d1', 900, 0)).toEqual({ stamp: 600.5, standIn: true })
    expect(rewrites.now('d1', 1000, 0)).toEqual({ stamp: 600.5, standIn: true })
    expect(rewrites.now('d1', 1300, 0)).toEqual({ stamp: 601.5, standIn: true })
  })

  it('leaves stamps it kept, gave, or never passed, and stamps read after it', () => {
    expect(rewrites.now('d1', 500, 0)).toEqual({ stamp: 500, standIn: false })
    expect(rewrites.now('d1', 602, 0)).toEqual({ stamp: 602, standIn: false })
    expect(rewrites.now('d1', 1600, 0)).toEqual({ stamp: 1600, standIn: false })
    expect(rewrites.now('d1', 1300, 1)).toEqual({ stamp: 1300, standIn: false })
    expect(rewrites.now('d1', 1300)).toEqual({ stamp: 1300, standIn: false })
    expect(rewrites.now('d2', 1300, 0)).toEqual({ stamp: 1300, standIn: false })
  })
})
