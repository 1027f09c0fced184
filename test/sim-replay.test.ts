/**
 * A failing seed's replay command, read back by `rostersync sim`, gives the
 * same options. Durations are printed with their unit: the command line
 * takes no bare number of ms (a review: `--delay 20` was refused once
 * durations needed a unit, so no failing run could be replayed).
 */
import { describe, expect, it } from 'vitest'
import { simOptionsOf } from '../cli/sim-command.js'
import { replayCommand, resolveConfig, type SimOptions } from '../sim/options.js'

describe('a replay command', () => {
  it('reads back to the options it was made of, every flag given', async () => {
    const options: SimOptions = {
      seed: 7,
      devices: 4,
      ops: 90,
      days: 1.5,
      loss: 0.1,
      dup: 0.05,
      delayMs: 20,
      jitterMs: 35,
      clog: 0.002,
      clogMs: 20_000,
      partitions: 1,
      crashes: 2,
      backupRestores: 1,
      compactions: 1,
      clockSteps: 1,
      skewMs: 300_000,
      lanIslands: 1,
      periodic: 0.5,
      retiring: 1,
      deltaIntervalMs: 1_800_000,
      partitionCloseMs: 60_000,
      checkEveryMs: 600_000,
      convergeBoundMs: 7_200_000,
      canary: 'no-adoption',
    }
    const command = replayCommand(options)
    const argv = command.replace(/^npx rostersync sim /, '').split(' ')
    const { seed: _seed, ...rest } = options
    expect(await simOptionsOf(argv.slice(2))).toEqual(rest)
    expect(command).toContain('--delay 20ms')
  })
})

describe('sim options out of range', () => {
  it('are refused, naming the flag and its least value, not raised in silence', () => {
    // A probe: --converge-bound 50ms ran with a minute's bound, and passed.
    expect(() => resolveConfig({ seed: 1, convergeBoundMs: 50 })).toThrow(
      '--converge-bound must be at least 60000 ms, got 50',
    )
    expect(() => resolveConfig({ seed: 1, checkEveryMs: 0 })).toThrow('--check-every')
    expect(() => resolveConfig({ seed: 1, deltaIntervalMs: 10 })).toThrow('--delta-interval')
    expect(resolveConfig({ seed: 1, convergeBoundMs: 60_000 }).convergeBoundMs).toBe(60_000)
  })

  it("take a negative number as the flag's value, and the flag's own check refuses it", async () => {
    // parseArgs read `-1` as a flag: "argument is ambiguous".
    await expect(simOptionsOf(['--devices', '-1'])).rejects.toThrow(
      '--devices must be an integer from 1 to 500, got "-1"',
    )
    await expect(simOptionsOf(['--loss', '-0.1'])).rejects.toThrow('--loss must be a number')
  })
})
