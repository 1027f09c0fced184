/**
 * A failing seed's replay command, read back by `rostersync sim`, gives the
 * same options. Durations are printed with their unit: the command line
 * takes no bare number of ms (a review: `--delay 20` was refused once
 * durations needed a unit, so no failing run could be replayed).
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { describe, expect, it, vi } from 'vitest'
import { main } from '../cli/main.js'
import { simOptionsOf, swarmFaults } from '../cli/sim-command.js'
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
  it('are refused, naming the option and its least value, not raised in silence', () => {
    // A probe: --converge-bound 50ms ran with a minute's bound, and passed.
    // The library names its option (a probe: it named the CLI's flag).
    expect(() => resolveConfig({ seed: 1, convergeBoundMs: 50 })).toThrow(
      'convergeBoundMs must be at least 60000 ms, got 50',
    )
    expect(() => resolveConfig({ seed: 1, checkEveryMs: 0 })).toThrow('checkEveryMs must')
    expect(() => resolveConfig({ seed: 1, deltaIntervalMs: 10 })).toThrow('deltaIntervalMs must')
    expect(resolveConfig({ seed: 1, convergeBoundMs: 60_000 }).convergeBoundMs).toBe(60_000)
  })

  it('refuses an option it does not know, naming it and the API name of a CLI flag (a probe: they were ignored)', () => {
    const unknown = (options: Record<string, unknown>): unknown =>
      resolveConfig({ seed: 1, ...options })
    expect(() => unknown({ restores: 0 })).toThrow(
      /unknown option "restores" \(the API's name is backupRestores\)/,
    )
    expect(() => unknown({ plan: '[]' })).toThrow(/the API's name is steps/)
    expect(() => unknown({ bogus: 1 })).toThrow(/unknown option "bogus": it takes seed, devices/)
    expect(resolveConfig({ seed: 1, backupRestores: 0 }).backupRestores).toBe(0)
  })

  it('are refused with INVALID_OPTIONS from plain JavaScript too (no TypeError), and a long delta interval bounds convergence at a year', () => {
    // A probe: no options, a number for onProgress, a string for swarm.
    const refused = (options: unknown): unknown => {
      try {
        resolveConfig(options as SimOptions)
      } catch (error) {
        return { code: (error as { code?: string }).code, message: (error as Error).message }
      }
      return 'taken'
    }
    expect(refused(undefined)).toMatchObject({ code: 'INVALID_OPTIONS' })
    expect(refused({ seed: 1, onProgress: 5 })).toMatchObject({
      code: 'INVALID_OPTIONS',
      message: 'onProgress must be a function, got number',
    })
    expect(refused({ seed: 1, swarm: 'yes' })).toMatchObject({ code: 'INVALID_OPTIONS' })
    expect(refused({ seed: 1, devices: 0 })).toMatchObject({
      message: 'devices must be an integer from 1 to 500, got 0',
    })
    // Links slower than a device's answer timeout never complete a sync:
    // such a run could only fail to converge (a probe: --delay 10d).
    const slow = refused({ seed: 1, delayMs: 10 * 86_400_000 })
    expect(slow).toMatchObject({ code: 'INVALID_OPTIONS' })
    expect(JSON.stringify(slow)).toMatch(
      /cannot converge; keep --delay plus --jitter under 60000 ms/,
    )
    expect(refused({ seed: 1, delayMs: 50_000, jitterMs: 10_000 })).toMatchObject({
      code: 'INVALID_OPTIONS',
    })
    expect(refused({ seed: 1, delayMs: 50_000, jitterMs: 9_999 })).toBe('taken')
    expect(JSON.stringify(refused({ seed: 1, checkEveryMs: 400 * 86_400_000 }))).toMatch(
      /"checkEveryMs must be a duration in ms from 1000 to a year/,
    )
    // A delta interval of 183 days made a default bound past a year, which
    // was refused as a --converge-bound never given.
    expect(resolveConfig({ seed: 1, deltaIntervalMs: 183 * 86_400_000 }).convergeBoundMs).toBe(
      365 * 86_400_000,
    )
  })

  it("take a negative number as the flag's value, and the flag's own check refuses it", async () => {
    // parseArgs read `-1` as a flag: "argument is ambiguous".
    await expect(simOptionsOf(['--devices', '-1'])).rejects.toThrow(
      '--devices must be an integer from 1 to 500, got "-1"',
    )
    await expect(simOptionsOf(['--loss', '-0.1'])).rejects.toThrow('--loss must be a number')
  })
})

describe('a swarm summary', () => {
  it("adds the seeds' counts up and takes the largest of a maximum", () => {
    expect(
      swarmFaults([
        { faults: { deviceCrashes: 2, skewMaxMs: 605_165 } },
        { faults: { deviceCrashes: 1, skewMaxMs: 394_909 } },
        { faults: { deviceCrashes: 0, skewMaxMs: 216_122 } },
      ]),
    ).toEqual({ deviceCrashes: 3, skewMaxMs: 605_165 })
  })
})

describe('a swarm stopped with Ctrl-C', () => {
  it('says how many seeds ran and passed, and exits 130', async () => {
    // A probe: it stopped with no word of the seeds that had run.
    const child = spawn(
      process.execPath,
      [
        'bin/rostersync.js',
        'sim',
        '--seed',
        '1',
        '--seeds',
        '200',
        '--devices',
        '2',
        '--ops',
        '20',
        '--days',
        '0.2',
        '--workers',
        '1',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let said = ''
    child.stderr.on('data', (chunk: Buffer) => {
      said += chunk.toString()
      // Once: a second Ctrl-C is Node's own (the process ends by the signal).
      if (/\d+\/200 seeds/.test(said) && !child.killed) child.kill('SIGINT')
    })
    const [code] = (await once(child, 'exit')) as [number | null]
    expect(code).toBe(130)
    expect(said).toMatch(/interrupted after \d+ of 200 seeds from 1: \d+ passed, \d+ failed/)
  }, 120_000)
})

describe('rostersync sim refuses before any run, exit 2, naming the flag', () => {
  async function exitOf(argv: string[]): Promise<{ code: number; said: string }> {
    const said: string[] = []
    const error = vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
      said.push(args.join(' '))
    })
    const log = vi.spyOn(console, 'log').mockImplementation(() => undefined)
    try {
      return { code: await main(['sim', ...argv]), said: said.join('\n') }
    } finally {
      error.mockRestore()
      log.mockRestore()
    }
  }

  it('an option the run refuses (it exited 1, named by its field), --workers without --seeds', async () => {
    const retiring = await exitOf(['--seed', '1', '--retiring', '20'])
    expect(retiring).toEqual({
      code: 2,
      said: 'rostersync sim: --retiring must be an integer from 0 to 10, got 20',
    })
    expect((await exitOf(['--seed', '1', '--skew', '400d'])).said).toMatch(
      /^rostersync sim: --skew /,
    )
    expect(await exitOf(['--seed', '1', '--converge-bound', '50ms'])).toEqual({
      code: 2,
      said: 'rostersync sim: --converge-bound must be at least 60000 ms, got 50',
    })
    expect((await exitOf(['--seed', '1', '--workers', 'abc'])).code).toBe(2)
    // No seed given: the refusal comes before the random seed is said.
    const unseeded = await exitOf(['--retiring', '20'])
    expect(unseeded.code).toBe(2)
    expect(unseeded.said).not.toMatch(/random/)
  })

  it('says what a hand-written plan asks that the site takes otherwise, and runs it as given', async () => {
    const site = ['--seed', '1', '--devices', '2', '--days', '0.01', '--plan']
    const plan = (step: object) => [...site, JSON.stringify([step])]
    for (const [step, said] of [
      [{ at: 5_000, op: 'put', peer: 7 }, /peer 7 is past the site's 2 device.*wraps around/],
      [{ at: 99_999_999_999, op: 'put' }, /never runs/],
      [{ at: 5_000, op: 'full', peer: 0 }, /a device's step on peer 0 .* runs on device 2/],
      [{ at: 5_000, op: 'compact', peer: 1 }, /the server's step; its peer 1 is ignored/],
    ] as const) {
      const result = await exitOf(plan(step))
      // Run as given: a replay command prints steps so (peers and times
      // drawn without the site's size) and must replay.
      expect(result.code, JSON.stringify(step)).toBe(0)
      expect(result.said).toMatch(said)
    }
  }, 120_000)

  it('with --json and no --seed, says the random seed on standard error; names a long plan file by its absolute path', async () => {
    // A probe: a --json run stopped before its report lost its seed, and a
    // replay naming `big.json` worked only from the directory it ran in.
    const dir = mkdtempSync(join(tmpdir(), 'rostersync-sim-plan-'))
    try {
      const file = join(dir, 'big.json')
      const steps = Array.from({ length: 400 }, (_, i) => ({ at: 1_000 + i, op: 'put', peer: 1 }))
      writeFileSync(file, JSON.stringify(steps))
      const printed: string[] = []
      const said: string[] = []
      const error = vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
        said.push(args.join(' '))
      })
      const log = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
        printed.push(args.join(' '))
      })
      const argv = ['--devices', '2', '--ops', '5', '--days', '0.01', '--json']
      let code: number
      try {
        code = await main(['sim', ...argv, '--plan', relative(process.cwd(), file)])
      } finally {
        error.mockRestore()
        log.mockRestore()
      }
      expect(code).toBe(0)
      expect(said.join('\n')).toMatch(/^seed \d+ \(random\)/m)
      const report = JSON.parse(printed.join('')) as { replay: string }
      expect(report.replay).toContain(`--plan ${file}`)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  }, 120_000)
})

describe("a replay command's plan", () => {
  it('is inline even when it came from a file; a plan too long for a command line names its file', () => {
    const steps = [{ at: 5_000, op: 'put' as const, peer: 1 }]
    expect(replayCommand({ seed: 1, steps }, 'plan.json')).toContain(
      `--plan '${JSON.stringify(steps)}'`,
    )
    const long = Array.from({ length: 500 }, (_, i) => ({ at: i, op: 'put' as const, peer: 1 }))
    expect(replayCommand({ seed: 1, steps: long }, 'plan.json')).toMatch(/--plan plan\.json$/)
    // A path with a space (or a quote) stays one shell word (a review).
    expect(replayCommand({ seed: 1, steps: long }, "/tmp/my plans/it's.json")).toMatch(
      /--plan '\/tmp\/my plans\/it'\\''s\.json'$/,
    )
  })
})
