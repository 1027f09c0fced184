/**
 * What a simulation is asked to do, and how a master seed turns the options
 * that were not given into concrete settings. Swarm testing (Groce et al.):
 * with `swarm`, each seed draws its own fault rates and counts within the
 * issue's ranges, so a thousand seeds explore a thousand different mixes of
 * faults instead of one average mix. Options given explicitly always win
 * over drawn ones, so a replay command only needs the options that were given.
 */
import { InvalidOptionsError } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import { Prng } from './prng.js'

/** A deliberately broken rule, to show the checks can fail (see `canary.ts`). */
export type CanaryKind = 'device-view' | 'no-adoption' | 'leak-delete' | 'lose-write'

/** Every canary, for the CLI and tests. */
export const CANARIES: readonly CanaryKind[] = [
  'device-view',
  'no-adoption',
  'leak-delete',
  'lose-write',
]

/** One virtual day, in ms. */
export const DAY_MS = 86_400_000
/** One virtual hour, in ms. */
export const HOUR_MS = 3_600_000
/** One virtual minute, in ms. */
export const MINUTE_MS = 60_000

/** Options of {@link runSimulation}; everything but `seed` has a default. */
export interface SimOptions {
  /** The master seed: every random choice of the run is drawn from it. */
  readonly seed: number
  /** Device peers (default 10). */
  readonly devices?: number
  /** Workload operations (default 200). */
  readonly ops?: number
  /** Virtual days the workload and the faults are spread over (default 3). */
  readonly days?: number
  /** Chance a message is lost, per message and link direction (default 0.05; swarm 0-0.3). */
  readonly loss?: number
  /** Chance a message is delivered twice (default 0.1; swarm 0-0.5). */
  readonly dup?: number
  /** One-way delay of a device-server link, virtual ms (default 20; LAN links: a tenth). */
  readonly delayMs?: number
  /** Extra delay drawn per message in [0, jitterMs]; reorders (default 40). */
  readonly jitterMs?: number
  /** Chance per message that a link direction clogs (default 0.002). */
  readonly clog?: number
  /** How long a clog holds a direction, virtual ms (default 20 000). */
  readonly clogMs?: number
  /** Partitions during the run (server cut off, LAN islands, one peer, asymmetric; default 2). */
  readonly partitions?: number
  /** Peer crashes (and restarts) during the run (default 2). */
  readonly crashes?: number
  /** Devices restored from an old backup of their data directory (default 1). */
  readonly backupRestores?: number
  /**
   * New generations (server.compactHistory) at random moments of the run,
   * with crashes during the switch and devices cut off or restored across it
   * (default 0; swarm 0-3).
   */
  readonly compactions?: number
  /**
   * Device clocks stepped hours to days ahead for a while (a clock set
   * wrong by hand, a test moving it), then set right (default 0; swarm
   * 0-2).
   */
  readonly clockSteps?: number
  /** Largest clock skew of a peer, either way, virtual ms (default 5 minutes). */
  readonly skewMs?: number
  /** Groups of devices linked over the LAN (default 1; 0: no LAN). */
  readonly lanIslands?: number
  /** Fraction of devices in periodic mode (default 0.3). */
  readonly periodic?: number
  /** Devices with a short retention that go unused, so the retention wipe fires (default 1). */
  readonly retiring?: number
  /** Delta sync interval of every device, virtual ms (default 30 minutes). */
  readonly deltaIntervalMs?: number
  /** Connections cut this long are closed (a ping timeout), virtual ms (default 60 000). */
  readonly partitionCloseMs?: number
  /** Draw the fault settings not given from the seed (swarm testing). */
  readonly swarm?: boolean
  /** Break one rule on purpose; the checks must catch it. */
  readonly canary?: CanaryKind
  /** Run exactly these steps instead of the workload drawn from the seed (replays, fast-check). */
  readonly steps?: readonly SimStepInput[]
  /** Where `steps` came from, for the replay command (otherwise it lists them inline). */
  readonly planFile?: string
  /** Virtual ms between safety checks during the run (default 10 minutes). */
  readonly checkEveryMs?: number
  /** After healing, the most virtual ms convergence may take (default 2 hours, or 2 delta intervals + 30 min). */
  readonly convergeBoundMs?: number
  /** Called as virtual time advances (the CLI's progress bar). */
  readonly onProgress?: (progress: SimProgress) => void
}

/** A step as given from outside (a plan file, fast-check): see `plan.ts`. */
export interface SimStepInput {
  /** Virtual ms after the start of the run. */
  readonly at: number
  readonly op: string
  readonly peer?: number
  readonly user?: number
  readonly value?: number
  /** How long the fault lasts (partitions, clogs, crashes: downtime), virtual ms. */
  readonly lasts?: number
}

/** Where a run is. */
export interface SimProgress {
  readonly phase: 'start' | 'run' | 'heal' | 'check' | 'done'
  /** Virtual ms since the start. */
  readonly virtualMs: number
  /** Fraction of the workload phase done, 0..1. */
  readonly fraction: number
}

/** Every setting of one run, after defaults and swarm draws. */
export interface SimConfig {
  readonly seed: number
  readonly devices: number
  readonly ops: number
  readonly durationMs: number
  readonly loss: number
  readonly dup: number
  readonly delayMs: number
  readonly jitterMs: number
  readonly clog: number
  readonly clogMs: number
  readonly partitions: number
  readonly crashes: number
  readonly backupRestores: number
  readonly compactions: number
  readonly clockSteps: number
  readonly skewMs: number
  readonly lanIslands: number
  readonly periodic: number
  readonly retiring: number
  readonly deltaIntervalMs: number
  readonly partitionCloseMs: number
  /** Retention of the retiring devices (the others keep the 10-day default). */
  readonly shortRetentionMs: number
  readonly swarm: boolean
  readonly canary: CanaryKind | undefined
  readonly checkEveryMs: number
  readonly convergeBoundMs: number
  /** Size of the pool of user ids the workload draws from (small, so that writes collide). */
  readonly users: number
}

/** Most devices one simulation runs (the network and checks are quadratic in places). */
export const SIM_DEVICES_MAX = 500
/** Most workload operations one simulation runs. */
export const SIM_OPS_MAX = 1_000_000

function rate(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback
  if (!Number.isFinite(v) || v < 0 || v > 1)
    throw new InvalidOptionsError(`${name} must be a rate from 0 to 1, got ${v}`)
  return v
}

function count(
  name: string,
  value: number | undefined,
  fallback: number,
  max: number,
  min = 0,
): number {
  const v = value ?? fallback
  if (!Number.isSafeInteger(v) || v < min || v > max)
    throw new InvalidOptionsError(`${name} must be an integer from ${min} to ${max}, got ${v}`)
  return v
}

/** A duration in ms; `min` only names the least one in the message (msAtLeast refuses below it). */
function ms(name: string, value: number | undefined, fallback: number, min = 0): number {
  const v = value ?? fallback
  if (!Number.isFinite(v) || v < 0 || v > YEAR_MS)
    throw new InvalidOptionsError(
      `${name} must be a duration in ms from ${min} to a year (${YEAR_MS}), got ${v}`,
    )
  return Math.round(v)
}

const YEAR_MS = 365 * DAY_MS

/**
 * `ms`, refusing a value under `min` (named as the library's option; the
 * CLI names its flag instead, cli/sim-command.ts): one taken
 * silently as `min` ran another simulation than the one asked for, and
 * its replay command named the value given (a probe: `--converge-bound
 * 50ms` ran with a minute and passed).
 */
function msAtLeast(
  name: FlagOption,
  value: number | undefined,
  fallback: number,
  min: number,
): number {
  const v = ms(name, value, fallback, min)
  if (v < min) throw new InvalidOptionsError(`${name} must be at least ${min} ms, got ${v}`)
  return v
}

/** A log-uniform draw in [lo, hi] (durations: as many short ones as long ones). */
export function logUniform(rng: Prng, lo: number, hi: number): number {
  return Math.round(Math.exp(Math.log(lo) + rng.next() * (Math.log(hi) - Math.log(lo))))
}

/**
 * The fault settings a swarm seed draws, each from its own stream so that
 * adding a setting later does not change the others.
 */
function swarmDraws(seed: number): Partial<Record<keyof SimConfig, number>> {
  const rng = new Prng(seed).fork('swarm')
  const draw = (label: string): Prng => rng.fork(label)
  return {
    loss: Math.round(draw('loss').next() * 0.3 * 1000) / 1000,
    dup: Math.round(draw('dup').next() * 0.5 * 1000) / 1000,
    delayMs: logUniform(draw('delay'), 1, 200),
    jitterMs: draw('jitter').int(0, 500),
    clog: Math.round(draw('clog').next() * 0.01 * 10_000) / 10_000,
    clogMs: logUniform(draw('clogMs'), 100, 60_000),
    partitions: draw('partitions').int(0, 4),
    crashes: draw('crashes').int(0, 4),
    backupRestores: draw('restores').int(0, 1),
    compactions: draw('compactions').int(0, 3),
    clockSteps: draw('clockSteps').int(0, 2),
    skewMs: draw('skew').int(0, 15 * MINUTE_MS),
    lanIslands: draw('lan').int(0, 2),
    periodic: Math.round(draw('periodic').next() * 0.6 * 100) / 100,
    partitionCloseMs: logUniform(draw('partitionClose'), 5_000, 10 * MINUTE_MS),
  }
}

/**
 * How long convergence may take after healing unless told: two hours, or
 * two delta intervals and a half hour when those are longer (a device in
 * periodic mode takes changes only at its delta syncs).
 */
function convergeBoundDefault(deltaIntervalMs: number | undefined): number {
  // At most a year, the bound a given one takes (a delta interval over
  // half a year was refused as a --converge-bound never given: a probe).
  return Math.min(YEAR_MS, Math.max(2 * HOUR_MS, 2 * (deltaIntervalMs ?? 0) + 30 * MINUTE_MS))
}

/** Every option `runSimulation` takes (SimOptions). */
const SIM_OPTION_KEYS: ReadonlySet<string> = new Set<keyof SimOptions>([
  'seed',
  'devices',
  'ops',
  'days',
  'loss',
  'dup',
  'delayMs',
  'jitterMs',
  'clog',
  'clogMs',
  'partitions',
  'crashes',
  'backupRestores',
  'compactions',
  'clockSteps',
  'skewMs',
  'lanIslands',
  'periodic',
  'retiring',
  'deltaIntervalMs',
  'partitionCloseMs',
  'swarm',
  'canary',
  'steps',
  'planFile',
  'checkEveryMs',
  'convergeBoundMs',
  'onProgress',
])

/** The CLI's flags whose option is named otherwise in the API. */
const CLI_NAMES: Readonly<Record<string, string>> = {
  restores: 'backupRestores',
  delay: 'delayMs',
  jitter: 'jitterMs',
  skew: 'skewMs',
  plan: 'steps',
  'clock-steps': 'clockSteps',
  'lan-islands': 'lanIslands',
  'delta-interval': 'deltaIntervalMs',
  'partition-close': 'partitionCloseMs',
  'check-every': 'checkEveryMs',
  'converge-bound': 'convergeBoundMs',
  'clog-ms': 'clogMs',
}

/** Applies defaults (and, with `swarm`, the seed's draws) to `options`. */
export function resolveConfig(options: SimOptions): SimConfig {
  // Called from plain JavaScript too: a TypeError deep in a run is no answer.
  if (typeof options !== 'object' || options === null)
    throw new InvalidOptionsError('the simulation needs an options object ({ seed, … })')
  for (const [key, type] of [
    ['swarm', 'boolean'],
    ['onProgress', 'function'],
    ['canary', 'string'],
    ['planFile', 'string'],
  ] as const)
    if (options[key] !== undefined && typeof options[key] !== type)
      throw new InvalidOptionsError(`${key} must be a ${type}, got ${typeof options[key]}`)
  // An option it does not know is refused, named: `restores` (the CLI's
  // flag) given to the API ran the seed's own workload in silence (a probe).
  for (const key of Object.keys(options))
    if (!SIM_OPTION_KEYS.has(key))
      throw new InvalidOptionsError(
        `unknown option ${JSON.stringify(key.slice(0, 40))}${
          CLI_NAMES[key] === undefined ? '' : ` (the API's name is ${CLI_NAMES[key]})`
        }: it takes ${[...SIM_OPTION_KEYS].join(', ')}`,
      )
  const seed = options.seed
  if (!Number.isSafeInteger(seed) || seed < 0 || seed > 0xffff_ffff)
    throw new InvalidOptionsError(`seed must be an integer from 0 to 2^32-1, got ${seed}`)
  const swarm = options.swarm === true
  const drawn = swarm ? swarmDraws(seed) : {}
  const devices = count('devices', options.devices, 10, SIM_DEVICES_MAX, 1)
  const ops = count('ops', options.ops, 200, SIM_OPS_MAX)
  const days = options.days ?? 3
  if (!Number.isFinite(days) || days <= 0 || days > 365)
    throw new InvalidOptionsError(`days must be more than 0 and at most 365, got ${days}`)
  const durationMs = Math.round(days * DAY_MS)
  const pick = <K extends keyof SimOptions & keyof SimConfig>(key: K, fallback: number): number =>
    (options[key] as number | undefined) ?? drawn[key] ?? fallback
  const canary = options.canary
  if (canary !== undefined && !CANARIES.includes(canary))
    throw new InvalidOptionsError(`canary must be one of ${CANARIES.join(', ')}, got ${canary}`)
  const delayMs = ms('delayMs', pick('delayMs', 20), 0)
  const jitterMs = ms('jitterMs', pick('jitterMs', 40), 0)
  // A device waits `syncAnswerTimeoutMs` for an answer, then reconnects:
  // links slower than that never complete a sync, and the run could only
  // fail to converge, however long it were given (a probe: --delay 10d).
  const roundTripMs = 2 * (delayMs + jitterMs)
  if (roundTripMs >= netLimits.syncAnswerTimeoutMs)
    throw new InvalidOptionsError(
      `delay and jitter of ${delayMs} + ${jitterMs} ms make a round trip of up to ${roundTripMs} ms: no sync completes when it takes a device's answer timeout (${netLimits.syncAnswerTimeoutMs} ms) or more, so the run cannot converge; keep --delay plus --jitter under ${netLimits.syncAnswerTimeoutMs / 2} ms`,
    )
  return {
    seed,
    devices,
    ops,
    durationMs,
    loss: rate('loss', pick('loss', 0.05), 0),
    dup: rate('dup', pick('dup', 0.1), 0),
    delayMs,
    jitterMs,
    clog: rate('clog', pick('clog', 0.002), 0),
    clogMs: ms('clogMs', pick('clogMs', 20_000), 0),
    partitions: count('partitions', pick('partitions', 2), 0, 10_000),
    crashes: count('crashes', pick('crashes', 2), 0, 10_000),
    backupRestores: count('backupRestores', pick('backupRestores', 1), 0, 10_000),
    compactions: count('compactions', pick('compactions', 0), 0, 10_000),
    clockSteps: count('clockSteps', pick('clockSteps', 0), 0, 10_000),
    skewMs: ms('skewMs', pick('skewMs', 5 * MINUTE_MS), 0),
    lanIslands: count('lanIslands', pick('lanIslands', 1), 0, SIM_DEVICES_MAX),
    periodic: rate('periodic', pick('periodic', 0.3), 0),
    retiring: count('retiring', options.retiring ?? Math.min(1, devices - 1), 0, devices),
    deltaIntervalMs: msAtLeast('deltaIntervalMs', options.deltaIntervalMs, 30 * MINUTE_MS, 1_000),
    partitionCloseMs: msAtLeast(
      'partitionCloseMs',
      pick('partitionCloseMs', 60_000),
      60_000,
      1_000,
    ),
    shortRetentionMs: Math.max(HOUR_MS, Math.min(2 * DAY_MS, Math.round(durationMs * 0.6))),
    swarm,
    canary,
    checkEveryMs: msAtLeast('checkEveryMs', options.checkEveryMs, 10 * MINUTE_MS, 1_000),
    convergeBoundMs: msAtLeast(
      'convergeBoundMs',
      options.convergeBoundMs,
      convergeBoundDefault(options.deltaIntervalMs),
      MINUTE_MS,
    ),
    users: Math.max(4, Math.min(1_000, Math.round(ops / 8))),
  }
}

/** Options that are plain values, which a replay command lists as flags. */
type FlagOption = {
  [K in keyof SimOptions]-?: NonNullable<SimOptions[K]> extends number | string ? K : never
}[keyof SimOptions]

/** The flags of `rostersync sim` for each option, in the order a replay command lists them. */
const FLAGS: ReadonlyArray<readonly [FlagOption, string]> = [
  ['devices', '--devices'],
  ['ops', '--ops'],
  ['days', '--days'],
  ['loss', '--loss'],
  ['dup', '--dup'],
  ['delayMs', '--delay'],
  ['jitterMs', '--jitter'],
  ['clog', '--clog'],
  ['clogMs', '--clog-ms'],
  ['partitions', '--partitions'],
  ['crashes', '--crashes'],
  ['backupRestores', '--restores'],
  ['compactions', '--compactions'],
  ['clockSteps', '--clock-steps'],
  ['skewMs', '--skew'],
  ['lanIslands', '--lan-islands'],
  ['periodic', '--periodic'],
  ['retiring', '--retiring'],
  ['deltaIntervalMs', '--delta-interval'],
  ['partitionCloseMs', '--partition-close'],
  ['checkEveryMs', '--check-every'],
  ['convergeBoundMs', '--converge-bound'],
  ['canary', '--canary'],
]

/**
 * The command that replays a run exactly: the seed and every option that was
 * given (the rest are defaults or drawn from the seed). `planFile` names
 * where explicit steps were saved, when there were any.
 */
export function replayCommand(options: SimOptions, planFile?: string): string {
  const parts = ['npx rostersync sim', `--seed ${options.seed}`]
  if (options.swarm === true) parts.push('--swarm')
  for (const [key, flag] of FLAGS) {
    const value = options[key]
    // Durations with their unit: the command line takes no bare number of ms.
    if (value !== undefined) parts.push(`${flag} ${String(value)}${key.endsWith('Ms') ? 'ms' : ''}`)
  }
  if (options.steps !== undefined) {
    // Inline, so that the command replays the run whatever becomes of the
    // file; a plan too long for a command line names its file.
    const inline = JSON.stringify(options.steps)
    parts.push(
      planFile === undefined || inline.length <= PLAN_INLINE_CHARS_MAX
        ? `--plan '${inline}'`
        : `--plan ${shellWord(planFile)}`,
    )
  }
  return parts.join(' ')
}

/** `word` as one shell word: quoted unless it holds only safe characters (a path with a space split in two). */
function shellWord(word: string): string {
  return /^[\w./@%+=:,-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`
}

/** Longest plan a replay command carries inline (longer ones name their file). */
const PLAN_INLINE_CHARS_MAX = 4_000

/** The flag of an option (`skewMs` → `--skew`), for messages about it. */
export function flagOf(option: string): string | undefined {
  return FLAGS.find(([key]) => key === option)?.[1]
}
