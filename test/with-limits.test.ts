/**
 * The tests' helper for bounds (test/helpers/limits.ts): a bound changed
 * in one test is back to its value in the next, whatever the first did.
 */
import { describe, expect, it } from 'vitest'
import { netLimits } from '../core/limits.js'
import { withLimits } from './helpers/limits.js'

const outside = netLimits.generationMovesInFlightMax

describe('withLimits', () => {
  it('sets bounds for the test, a later call over an earlier one', () => {
    withLimits(netLimits, { generationMovesInFlightMax: outside + 1 })
    expect(netLimits.generationMovesInFlightMax).toBe(outside + 1)
    withLimits(netLimits, { generationMovesInFlightMax: outside + 2 })
    expect(netLimits.generationMovesInFlightMax).toBe(outside + 2)
  })

  it('puts them back once the test before finished', () => {
    expect(netLimits.generationMovesInFlightMax).toBe(outside)
  })

  it('refuses a name that is no bound', () => {
    expect(() => withLimits(netLimits, { noSuchBound: 1 } as never)).toThrow(/noSuchBound/)
  })
})
