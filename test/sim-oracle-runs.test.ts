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

/**
 * A device's full sync holds its own writes while its staged wipe waits
 * (its link clogged): `held`, two writes, run when the hold ends, in one
 * transaction (one seq in the history). The run must pass.
 */
async function heldWritesPass(held: NonNullable<SimOptions['steps']>): Promise<void> {
  const report = await simulate({
    ...CALM,
    seed: 1,
    devices: 1,
    days: 0.05,
    steps: [
      { at: M, op: 'put', peer: 1, user: 1, value: 11 },
      { at: 10 * M, op: 'full', peer: 1 },
      { at: 10 * M + 30, op: 'clog', peer: 1, value: 0, lasts: 20_000 },
      ...held,
    ],
  })
  expect(report.violationCounts).toEqual({})
  expect(report.ok).toBe(true)
}

describe('oracle: runs it must pass', () => {
  it('writes held by a full sync and released in one transaction keep their own fields', async () => {
    // The put of user 1 and the put of user 2 share a seq: each must still
    // count with its own fields (the model cached a write's fields per
    // seq: user 2 showed user 1's).
    await heldWritesPass([
      { at: 10 * M + 5_000, op: 'put', peer: 1, user: 1, value: 22 },
      { at: 10 * M + 6_000, op: 'put', peer: 1, user: 2, value: 33 },
    ])
  })

  it('of writes held and released in one transaction, the one called later wins', async () => {
    // A patch and then a put of the same user: they share a transaction,
    // an operation id and a stamp, and ran in their call order, so the
    // device's entry holds the put (the model kept the patch's email,
    // which the put cleared).
    await heldWritesPass([
      { at: 10 * M + 5_000, op: 'patch', peer: 1, user: 1, value: 22 },
      { at: 10 * M + 6_000, op: 'put', peer: 1, user: 1, value: 33 },
    ])
  })
})
