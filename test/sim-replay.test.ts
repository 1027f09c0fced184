/**
 * A failing seed's replay command, read back by `rostersync sim`, gives the
 * same options. Durations are printed with their unit: the command line
 * takes no bare number of ms (a review: `--delay 20` was refused once
 * durations needed a unit, so no failing run could be replayed).
 */
import { describe, expect, it } from 'vitest'
import { simOptionsOf } from '../cli/sim-command.js'
import { replayCommand, type SimOptions } from '../sim/options.js'

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
