/**
 * Runs the oracle once passed wrongly failed (false failures: the product's
 * converged state is right by SEMANTICS.md, the oracle's model was not).
 * Fixed plans on a calm site, each printing its replay command.
 */
import { describe, expect, it } from 'vitest'
import type { SimOptions } from '../sim/options.js'
import type { SimReport } from '../sim/run.js'
import { CALM, simulateLogged } from './helpers/sim-runs.js'

const M = 60_000

const simulate = (options: SimOptions): Promise<SimReport> =>
  simulateLogged('sim-oracle-runs', options)

describe('oracle: runs it must pass', () => {
  it('writes held by a full sync and released in one transaction keep their own fields', async () => {
    // The device's full sync holds its own writes while its staged wipe
    // waits (its link clogged): the put of user 1 and the put of user 2 run
    // when the hold ends, in one transaction, and the history gives them
    // one seq. Each must still count with its own fields (the model cached
    // a write's fields per seq: user 2 showed user 1's).
    const report = await simulate({
      ...CALM,
      seed: 1,
      devices: 1,
      days: 0.05,
      steps: [
        { at: M, op: 'put', peer: 1, user: 1, value: 11 },
        { at: 10 * M, op: 'full', peer: 1 },
        { at: 10 * M + 30, op: 'clog', peer: 1, value: 0, lasts: 20_000 },
        { at: 10 * M + 5_000, op: 'put', peer: 1, user: 1, value: 22 },
        { at: 10 * M + 6_000, op: 'put', peer: 1, user: 2, value: 33 },
      ],
    })
    expect(report.violationCounts).toEqual({})
    expect(report.ok).toBe(true)
  })

  it('of writes held and released in one transaction, the one called later wins', async () => {
    // As above, a patch and then a put of the same user: they share a
    // transaction, an operation id and a stamp, and ran in their call
    // order, so the device's entry holds the put (the model kept the
    // patch's email, which the put cleared).
    const report = await simulate({
      ...CALM,
      seed: 1,
      devices: 1,
      days: 0.05,
      steps: [
        { at: M, op: 'put', peer: 1, user: 1, value: 11 },
        { at: 10 * M, op: 'full', peer: 1 },
        { at: 10 * M + 30, op: 'clog', peer: 1, value: 0, lasts: 20_000 },
        { at: 10 * M + 5_000, op: 'patch', peer: 1, user: 1, value: 22 },
        { at: 10 * M + 6_000, op: 'put', peer: 1, user: 1, value: 33 },
      ],
    })
    expect(report.violationCounts).toEqual({})
    expect(report.ok).toBe(true)
  })
})
