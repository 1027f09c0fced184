/**
 * `rostersync sim`: runs the deterministic simulator (sim/) on a site of
 * your own shape and prints what happened, or runs a swarm of seeds on
 * every core. Exits 1 when a seed fails a check. docs/SIMULATION.md explains
 * the options and the report.
 */
import { randomInt } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { hasCode } from '../core/errors.js'
import {
  CANARIES,
  flagOf,
  replayCommand,
  resolveConfig,
  type CanaryKind,
  type SimProgress,
} from '../sim/options.js'
import type { SimReport } from '../sim/run.js'
import { CliError, decimal, parse, parseDuration, parseInteger } from './args.js'
import type { Command } from './main.js'
import { defaultWorkers, runSwarm, type SeedSummary, type SwarmOptions } from './sim-swarm.js'

const help = `Usage: rostersync sim [options]

Runs the production server and devices on a simulated network, disks and
clock, with faults, then heals the network and checks that every peer
converges and that no rule was broken. One seed replays one run exactly.

Site and workload:
  --seed <n>             master seed (default: a random one, printed)
  --devices <n>          device peers (default 10)
  --ops <n>              workload operations: enrols, edits, deletes, syncs,
                         sign-ins, field-policy changes (default 200)
  --days <n>             virtual days the workload runs over (default 3)
  --periodic <rate>      fraction of devices in periodic mode (default 0.3)
  --retiring <n>         devices left unused so their retention wipe fires (default 1)
  --delta-interval <d>   delta sync interval (default 30m)
  --lan-islands <n>      groups of devices linked over the LAN (default 1)
  --plan <file|json>     run exactly these steps (a JSON array) instead of the
                         workload drawn from the seed
Faults:
  --loss <rate>          messages lost, per message (default 0.05)
  --dup <rate>           messages delivered twice (default 0.1)
  --delay <d>            one-way delay of a device-server link (default 20ms;
                         LAN links a tenth)
  --jitter <d>           extra random delay per message, reorders (default 40ms);
                         delay plus jitter under 60s (slower, no sync completes)
  --clog <rate>          chance per message that a link clogs (default 0.002)
  --clog-ms <d>          how long a clog lasts (default 20s)
  --partitions <n>       partitions: server cut off, LAN islands, one peer
                         isolated, one direction cut (default 2)
  --crashes <n>          peer crashes and restarts (default 2)
  --restores <n>         devices restored from an old backup (default 1)
  --compactions <n>      new generations (server.compactHistory) at random
                         moments, with crashes during the switch and devices
                         cut off or restored across it (default 0; --swarm
                         draws 0-3 per seed)
  --clock-steps <n>      device clocks stepped hours to days ahead for a
                         while, then set right (default 0; --swarm draws
                         0-2 per seed)
  --skew <d>             largest clock skew of a peer (default 5m)
  --partition-close <d>  a link cut this long is closed (default 60s)
  --swarm                draw the fault settings not given from the seed
  --canary <kind>        break a rule on purpose (${CANARIES.join(', ')}):
                         the run must fail (at the default sizes; a small run
                         may give lose-write no acknowledged write to lose)
Checks:
  --check-every <d>      virtual time between safety checks (default 10m)
  --converge-bound <d>   how long convergence may take after healing (default 2h)
Output:
  --seeds <n>            run n seeds (from --seed on, or random ones) as a
                         swarm (implies --swarm) on --workers threads and
                         print a summary with every failing seed
  --workers <n>          worker threads for --seeds (default: every core)
  --json                 print one JSON object on the last line
  -h, --help             this help

Durations take ms, s, m, h, d (e.g. 20ms, 5m, 1.5d).
Exit status: 0 when every seed passed, 1 when one failed, 2 on bad options.`

const flags = {
  seed: { type: 'string' },
  devices: { type: 'string' },
  ops: { type: 'string' },
  days: { type: 'string' },
  periodic: { type: 'string' },
  retiring: { type: 'string' },
  'delta-interval': { type: 'string' },
  'lan-islands': { type: 'string' },
  plan: { type: 'string' },
  loss: { type: 'string' },
  dup: { type: 'string' },
  delay: { type: 'string' },
  jitter: { type: 'string' },
  clog: { type: 'string' },
  'clog-ms': { type: 'string' },
  partitions: { type: 'string' },
  crashes: { type: 'string' },
  restores: { type: 'string' },
  compactions: { type: 'string' },
  'clock-steps': { type: 'string' },
  skew: { type: 'string' },
  'partition-close': { type: 'string' },
  swarm: { type: 'boolean', default: false },
  canary: { type: 'string' },
  'check-every': { type: 'string' },
  'converge-bound': { type: 'string' },
  seeds: { type: 'string' },
  workers: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const

type Values = ReturnType<typeof parse<typeof flags>>['values']

function rateOf(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const value = decimal(text)
  if (!Number.isFinite(value) || value < 0 || value > 1)
    throw new CliError(`--${name} must be a number from 0 to 1, got ${JSON.stringify(text)}`)
  return value
}

function durationOf(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  try {
    return Math.round(parseDuration(text))
  } catch {
    throw new CliError(
      `--${name} must be a duration (e.g. 20ms, 5m, 2h), got ${JSON.stringify(text)}`,
    )
  }
}

function numberOf(name: string, text: string | undefined, max: number): number | undefined {
  if (text === undefined) return undefined
  const value = decimal(text)
  if (!Number.isFinite(value) || value <= 0 || value > max)
    throw new CliError(
      `--${name} must be a decimal number (no exponent) above 0 and at most ${max}, got ${JSON.stringify(text)}`,
    )
  return value
}

/** The steps of `--plan`: a file holding a JSON array, or the array itself. */
async function planOf(text: string | undefined): Promise<{ steps?: unknown[]; planFile?: string }> {
  if (text === undefined) return {}
  const inline = text.trimStart().startsWith('[')
  if (text.trimStart().startsWith('{') && !existsSync(text))
    throw new CliError('--plan must be a JSON array of steps, or a file holding one')
  if (!inline && !existsSync(text))
    throw new CliError(
      `--plan must be a JSON array of steps, or a file holding one: ${JSON.stringify(text.slice(0, 80))} is neither`,
    )
  let json: unknown
  try {
    json = JSON.parse(inline ? text : await readFile(text, 'utf8'))
  } catch (error) {
    throw new CliError(`--plan: ${(error as Error).message}`)
  }
  if (!Array.isArray(json)) throw new CliError('--plan must be a JSON array of steps')
  // Checked here, before any run: a bad step is a bad option (exit 2).
  // The simulator's modules load only when a run or a plan needs them:
  // `rostersync --help` and the other commands do without them.
  const { parseSteps } = await import('../sim/plan.js')
  try {
    parseSteps(json)
  } catch (error) {
    throw new CliError(`--plan: ${(error as Error).message}`)
  }
  // The replay command names the file by its absolute path: it replays
  // from any directory (a relative one only from where the run was made).
  return inline ? { steps: json } : { steps: json, planFile: resolve(text) }
}

/** The options `argv` gives `rostersync sim` (a replay command's arguments read back, in tests). */
export async function simOptionsOf(argv: string[]): Promise<SwarmOptions> {
  return optionsOf(parse(argv, flags).values)
}

/** Every option but the seed, from the flags (only those given: the replay command lists them). */
async function optionsOf(values: Values): Promise<SwarmOptions> {
  const canary = values.canary
  if (canary !== undefined && !CANARIES.includes(canary as CanaryKind))
    throw new CliError(`--canary must be one of ${CANARIES.join(', ')}`)
  const plan = await planOf(values.plan)
  const entries: Array<[string, unknown]> = [
    ['devices', parseInteger('devices', values.devices, 1, 500)],
    ['ops', parseInteger('ops', values.ops, 0, 1_000_000)],
    ['days', numberOf('days', values.days, 365)],
    ['periodic', rateOf('periodic', values.periodic)],
    ['retiring', parseInteger('retiring', values.retiring, 0, 500)],
    ['deltaIntervalMs', durationOf('delta-interval', values['delta-interval'])],
    ['lanIslands', parseInteger('lan-islands', values['lan-islands'], 0, 500)],
    ['loss', rateOf('loss', values.loss)],
    ['dup', rateOf('dup', values.dup)],
    ['delayMs', durationOf('delay', values.delay)],
    ['jitterMs', durationOf('jitter', values.jitter)],
    ['clog', rateOf('clog', values.clog)],
    ['clogMs', durationOf('clog-ms', values['clog-ms'])],
    ['partitions', parseInteger('partitions', values.partitions, 0, 10_000)],
    ['crashes', parseInteger('crashes', values.crashes, 0, 10_000)],
    ['backupRestores', parseInteger('restores', values.restores, 0, 10_000)],
    ['compactions', parseInteger('compactions', values.compactions, 0, 10_000)],
    ['clockSteps', parseInteger('clock-steps', values['clock-steps'], 0, 10_000)],
    ['skewMs', durationOf('skew', values.skew)],
    ['partitionCloseMs', durationOf('partition-close', values['partition-close'])],
    ['checkEveryMs', durationOf('check-every', values['check-every'])],
    ['convergeBoundMs', durationOf('converge-bound', values['converge-bound'])],
    ['canary', canary],
    ['steps', plan.steps],
    ['planFile', plan.planFile],
  ]
  const options = Object.fromEntries(entries.filter(([, v]) => v !== undefined)) as SwarmOptions
  const swarm = values.swarm || values.seeds !== undefined
  return { ...options, ...(swarm ? { swarm: true } : {}) }
}

export const simCommand: Command = {
  summary: 'simulate a site under faults (deterministic, replayable) and check convergence',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, flags)
    if (positionals.length > 0) throw new CliError(`unexpected argument ${positionals[0]}`)
    const given = parseInteger('seed', values.seed, 0, 0xffff_ffff)
    const seed = given ?? randomInt(0, 0x7fff_ffff)
    const options = await optionsOf(values)
    const seeds = parseInteger('seeds', values.seeds, 1, 1_000_000)
    const workers = parseInteger('workers', values.workers, 1, 256)
    await checkOptions(options, seed)
    if (seeds !== undefined) {
      // Drawn: said at once (a swarm printed it only at its end, or on Ctrl-C).
      if (given === undefined) console.error(`first seed ${seed} (random)`)
      await swarm(options, seed, seeds, workers ?? defaultWorkers(), values.json)
      return
    }
    // On standard error with --json too: a run stopped (Ctrl-C) before its
    // report still told the seed to replay it by (a probe).
    if (given === undefined) console.error(`seed ${seed} (random)`)
    const bar = progressBar()
    const started = performance.now()
    let report: SimReport
    const { runSimulation } = await import('../sim/run.js')
    // Ctrl-C: the seed and how to run it again, whether it was given or
    // drawn (a probe: a given seed's run said nothing when stopped).
    const interrupted = (): void => {
      bar.done()
      process.stderr.write(
        `interrupted: seed ${seed}; replay: ${replayCommand({ ...options, seed }, options.planFile)}\n`,
      )
      process.exit(130)
    }
    process.once('SIGINT', interrupted)
    try {
      report = await runSimulation({ ...options, seed, onProgress: bar.update })
    } finally {
      process.off('SIGINT', interrupted)
      bar.done()
    }
    const wallMs = Math.round(performance.now() - started)
    if (values.json) console.log(JSON.stringify({ ...jsonOf(report), wallMs }))
    else printReport(report, wallMs)
    if (!report.ok) throw new CliError(`seed ${seed} failed; replay: ${report.replay}`, 1)
  },
}

/**
 * Checks the options as a run takes them (sim/options.ts, resolveConfig)
 * before any run: a bad one is a bad option (exit 2), named by its flag
 * (`--retiring`, not `retiring`); and says what a hand-written plan asks
 * that the site takes otherwise (plan.ts, stepsNotFitting).
 */
async function checkOptions(options: SwarmOptions, seed: number): Promise<void> {
  const plan = options.steps === undefined ? undefined : await import('../sim/plan.js')
  try {
    const config = resolveConfig({ ...options, seed })
    if (plan !== undefined && options.steps !== undefined)
      for (const line of plan.stepsNotFitting(plan.parseSteps(options.steps), config))
        console.error(`rostersync sim: warning: ${line}`)
  } catch (error) {
    if (!hasCode(error, 'INVALID_OPTIONS')) throw error
    const message = (error as Error).message.replace(
      /^(\w+) /,
      (whole, name: string) => `${flagOf(name) ?? name} `,
    )
    throw new CliError(message)
  }
}

/** The report as the one JSON object `--json` prints. */
function jsonOf(report: SimReport): Record<string, unknown> {
  return {
    seed: report.seed,
    ok: report.ok,
    converged: report.converged,
    traceHash: report.traceHash,
    virtualMsToConverge: report.virtualMsToConverge,
    messages: report.messages,
    bytes: report.bytes,
    faults: report.faults,
    byKind: report.byKind,
    violationCounts: report.violationCounts,
    violations: report.violations,
    workload: report.workload,
    writesChecked: report.writesChecked,
    writesRolledBack: report.writesRolledBack,
    events: report.events,
    virtualMs: report.virtualMs,
    config: report.config,
    replay: report.replay,
  }
}

const formatMs = (ms: number): string =>
  ms < 1_000
    ? `${ms} ms`
    : ms < 120_000
      ? `${(ms / 1_000).toFixed(1)} s`
      : ms < 7_200_000
        ? `${(ms / 60_000).toFixed(1)} min`
        : `${(ms / 3_600_000).toFixed(1)} h`

function printReport(report: SimReport, wallMs: number): void {
  const c = report.config
  const lines = [
    `rostersync sim — seed ${report.seed}: ${report.ok ? 'PASSED' : 'FAILED'}`,
    `  site          1 server + ${c.devices} devices (${Math.round(c.periodic * 100)}% periodic, ${c.retiring} retiring), ${c.lanIslands} LAN island(s)`,
    `  workload      ${report.steps} steps over ${formatMs(c.durationMs)} virtual (${report.workload.acknowledged} acknowledged, ${report.workload.skipped} skipped: peer down)`,
    `  links         loss ${c.loss}, dup ${c.dup}, delay ${c.delayMs} ms + jitter ${c.jitterMs} ms, clog ${c.clog} x ${c.clogMs} ms${c.swarm ? ' (swarm)' : ''}`,
    `  converged     ${report.converged ? `yes, ${formatMs(report.virtualMsToConverge ?? 0)} of virtual time after healing` : `NO: ${report.notConverged ?? ''}`}`,
    `  messages      ${report.messages.toLocaleString('en')} sent, ${report.bytes.toLocaleString('en')} bytes (${Object.entries(
      report.byKind,
    )
      .map(([kind, k]) => `${kind} ${k.messages}`)
      .join(', ')})`,
    `  faults        ${Object.entries(report.faults)
      .filter(([, n]) => n > 0)
      .map(([kind, n]) => `${kind} ${n}`)
      .join(', ')}`,
    `  writes        ${report.writesChecked} acknowledged writes checked, ${report.writesRolledBack} rolled back by a restore or retention wipe`,
    `  refused       ${
      Object.entries(report.workload.refused)
        .map(([code, n]) => `${code} ${n}`)
        .join(', ') || 'none'
    }`,
    `  run           ${report.events.toLocaleString('en')} events, ${formatMs(report.virtualMs)} virtual in ${formatMs(wallMs)} wall`,
    `  trace hash    ${report.traceHash}`,
  ]
  if (report.violations.length > 0) {
    lines.push(`  violations    ${JSON.stringify(report.violationCounts)}`)
    for (const v of report.violations.slice(0, 20))
      lines.push(
        `    - [${v.rule}] at ${formatMs(v.atMs)}${v.peer === undefined ? '' : ` on ${v.peer}`}: ${v.detail}`,
      )
  }
  lines.push(`  replay        ${report.replay}`)
  console.log(lines.join('\n'))
}

async function swarm(
  options: SwarmOptions,
  first: number,
  count: number,
  workers: number,
  json: boolean,
): Promise<void> {
  const seeds = Array.from({ length: count }, (_, i) => (first + i) >>> 0)
  const bar = progressBar()
  const started = performance.now()
  let results: SeedSummary[]
  // Stopped (Ctrl-C) before the end: what ran is said, then the exit
  // (the seeds run on worker threads, so this thread hears the signal).
  let passed = 0
  let ended = 0
  const interrupted = (): void => {
    bar.done()
    process.stderr.write(
      `interrupted after ${ended} of ${count} seeds from ${first}: ${passed} passed, ${ended - passed} failed (named above)\n`,
    )
    process.exit(130)
  }
  process.once('SIGINT', interrupted)
  try {
    results = await runSwarm(options, seeds, workers, (summary, done) => {
      ended = done
      if (summary.ok) passed++
      // A failing seed is named at once (a long swarm stopped early still told).
      else process.stderr.write(`seed ${summary.seed} FAILED; replay: ${summary.replay}\n`)
      bar.update({ phase: 'run', virtualMs: 0, fraction: done / count }, `${done}/${count} seeds`)
    })
  } finally {
    process.off('SIGINT', interrupted)
    bar.done()
  }
  const wallMs = Math.round(performance.now() - started)
  const failed = results.filter((r) => !r.ok)
  const faults = swarmFaults(results)
  const converge = results.map((r) => r.virtualMsToConverge ?? 0)
  const summary = {
    seeds: results.length,
    firstSeed: first,
    passed: results.length - failed.length,
    failed: failed.map((r) => ({ seed: r.seed, replay: r.replay, violations: r.violations })),
    converged: results.every((r) => r.converged),
    seedsPerMinute: Math.round((results.length / wallMs) * 60_000 * 10) / 10,
    virtualMsToConverge: Math.max(0, ...converge),
    messages: results.reduce((a, r) => a + r.messages, 0),
    bytes: results.reduce((a, r) => a + r.bytes, 0),
    faults,
    traceHash: results.map((r) => r.traceHash).join('').length === 0 ? '' : combined(results),
    workers,
    wallMs,
  }
  if (json) console.log(JSON.stringify(summary))
  else {
    console.log(
      [
        `rostersync sim — ${summary.seeds} seeds from ${first} (swarm) on ${workers} worker(s): ${summary.passed} passed, ${failed.length} failed`,
        `  speed         ${summary.seedsPerMinute} seeds/min (${formatMs(wallMs)} wall)`,
        `  converged     ${summary.converged ? 'every seed' : 'NOT every seed'}; slowest ${formatMs(summary.virtualMsToConverge)} of virtual time after healing`,
        `  messages      ${summary.messages.toLocaleString('en')} sent, ${summary.bytes.toLocaleString('en')} bytes`,
        `  faults        ${Object.entries(faults)
          .filter(([, n]) => n > 0)
          .map(([kind, n]) => `${kind} ${n}`)
          .join(', ')}`,
        ...failed.flatMap((r) => [
          `  FAILED seed ${r.seed}: ${r.replay}`,
          ...r.violations.map((v) => `      ${v}`),
        ]),
      ].join('\n'),
    )
  }
  if (failed.length > 0)
    throw new CliError(`${failed.length} of ${results.length} seeds failed (listed above)`, 1)
}

/**
 * The fault counts of a swarm: counts add up over its seeds; a maximum
 * (`…MaxMs`) is the largest (a probe: `skewMaxMs` summed past the most any
 * seed can draw).
 */
export function swarmFaults(
  results: ReadonlyArray<{ readonly faults: Readonly<Record<string, number>> }>,
): Record<string, number> {
  const faults: Record<string, number> = {}
  for (const r of results)
    for (const [k, n] of Object.entries(r.faults))
      faults[k] = k.endsWith('MaxMs') ? Math.max(faults[k] ?? 0, n) : (faults[k] ?? 0) + n
  return faults
}

/** One hash over every seed's trace hash, in seed order. */
function combined(results: readonly SeedSummary[]): string {
  let a = 0x811c9dc5
  for (const r of results)
    for (let i = 0; i < r.traceHash.length; i++)
      a = Math.imul(a ^ r.traceHash.charCodeAt(i), 0x01000193)
  return (a >>> 0).toString(16).padStart(8, '0')
}

/**
 * A progress bar on stderr: redrawn at most 10 times a second on a
 * terminal; elsewhere (a log, CI) one line per tenth of the way or phase.
 */
function progressBar(): {
  update: (progress: SimProgress, label?: string) => void
  done: () => void
} {
  const tty = process.stderr.isTTY
  let last = 0
  let shown = false
  let lastKey = ''
  return {
    update(progress, label) {
      const percent = Math.floor(progress.fraction * 100)
      const text =
        label ?? `${progress.phase}, ${(progress.virtualMs / 86_400_000).toFixed(2)} virtual days`
      if (!tty) {
        const key = `${progress.phase}:${Math.floor(percent / 10)}`
        if (key === lastKey) return
        lastKey = key
        process.stderr.write(`${String(percent).padStart(3)}% ${text}\n`)
        return
      }
      const now = Date.now()
      if (now - last < 100 && progress.phase === 'run') return
      last = now
      const width = 30
      const filled = Math.round(progress.fraction * width)
      process.stderr.write(
        `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(percent).padStart(3)}% ${text}\u001b[K`,
      )
      shown = true
    },
    done() {
      if (tty && shown) process.stderr.write('\r\u001b[K')
    },
  }
}
