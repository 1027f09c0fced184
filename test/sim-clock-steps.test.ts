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

  it('swarm seeds with clock steps drawn among every other fault converge and keep every rule', async () => {
    for (const seed of [11, 12, 13, 14]) {
      const report = await simulate({ seed, swarm: true, devices: 5, ops: 120, clockSteps: 3 })
      expect(report.ok).toBe(true)
      expect(report.faults.clockSteps).toBeGreaterThan(0)
    }
  })
})
