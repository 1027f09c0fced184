/**
 * The plan of a run: every workload operation and every fault, each at a
 * virtual time. A plan is drawn from the master seed ({@link planFromSeed})
 * or given whole (a replay file, a fast-check scenario); the runner executes
 * either the same way.
 *
 * Drawing is prefix-stable: step `i` of the workload depends only on the
 * seed and `i`, never on how many steps there are, so `--ops 50` runs the
 * first 50 operations of `--ops 200` (at the same times), and each kind of
 * fault draws from its own stream. That keeps shrinking meaningful: a
 * smaller failing run is a part of the larger one.
 */
import { z } from 'zod'
import { InvalidOptionsError } from '../core/errors.js'
import { HOUR_MS, logUniform, MINUTE_MS, type SimConfig } from './options.js'
import { Prng } from './prng.js'

/** Step kinds. Peers are numbered: 0 is the server, 1..devices the devices. */
export const STEP_OPS = [
  // Workload.
  'put', // peer enrols (or replaces) user `user`; fields drawn from `value`
  'patch', // peer edits some fields of `user` (nulls clear)
  'delete', // peer deletes `user` (on a device: locally)
  'full', // device `peer` runs a full sync
  'delta', // device `peer` runs a delta sync
  'sign-in', // user `user` signs in on device `peer`
  'policy', // the server sets a field's policy (`value` picks both)
  'compact', // the server starts a new generation (`value`: crashes during the switch, see workload.ts)
  // Faults.
  'crash', // peer crashes (`value` odd: on its next store write), restarts `lasts` later
  'restore', // device restored from its backup taken `value` ms earlier; back `lasts` later
  'partition', // kind and members from `value`, for `lasts`
  'clog', // the link between `peer` and the peer picked by `value` holds messages for `lasts`
  'clock-step', // device `peer`'s clock runs `value` ms ahead, set right `lasts` later
] as const

/** One kind of step. */
export type StepOp = (typeof STEP_OPS)[number]

/** One step of a plan. */
export interface SimStep {
  /** Virtual ms after the start of the run. */
  readonly at: number
  readonly op: StepOp
  readonly peer: number
  readonly user: number
  /** Seed of the step's own choices (record contents, partition members ...). */
  readonly value: number
  /** Duration of a fault, virtual ms. */
  readonly lasts: number
}

const stepSchema = z.strictObject({
  at: z.number().int().min(0),
  op: z.enum(STEP_OPS),
  peer: z.number().int().min(0).optional(),
  user: z.number().int().min(0).optional(),
  value: z.number().int().min(0).max(0xffff_ffff).optional(),
  lasts: z.number().int().min(0).optional(),
})

/** Parses steps given from outside (`--plan`, fast-check); throws `INVALID_OPTIONS`. */
export function parseSteps(input: unknown): SimStep[] {
  const result = z.array(stepSchema).safeParse(input)
  if (!result.success)
    throw new InvalidOptionsError(`plan: ${z.prettifyError(result.error)}`, result.error.issues)
  return result.data.map((s) => ({
    at: s.at,
    op: s.op,
    peer: s.peer ?? 0,
    user: s.user ?? 0,
    value: s.value ?? 0,
    lasts: s.lasts ?? 0,
  }))
}

/** Steps that only a device takes: on the server (peer 0) they mean nothing. */
const DEVICE_STEPS: ReadonlySet<StepOp> = new Set([
  'full',
  'delta',
  'sign-in',
  'restore',
  'clock-step',
])
/** Steps that only the server takes, whatever peer they name. */
const SERVER_STEPS: ReadonlySet<StepOp> = new Set(['policy', 'compact'])

/**
 * What a hand-written plan (`--plan`) asks that the site it runs on takes
 * otherwise: a peer past its devices (taken modulo the peers: another
 * peer than the one named), a time past the run (never run), a device's
 * step on the server (run on the last device). One line each; the CLI
 * says them before the run. Not refused: a replay command prints the
 * steps as given (the fast-check scenarios draw peers and times without
 * knowing the site's size), and must replay.
 */
export function stepsNotFitting(steps: readonly SimStep[], config: SimConfig): string[] {
  const out: string[] = []
  steps.forEach((step, i) => {
    const where = `plan step ${i + 1} (${step.op} at ${step.at} ms)`
    if (step.at >= config.durationMs)
      out.push(
        `${where}: the run's workload ends at ${config.durationMs} ms (--days); it never runs`,
      )
    else if (SERVER_STEPS.has(step.op) && step.peer !== 0)
      out.push(`${where}: the server's step; its peer ${step.peer} is ignored`)
    else if (DEVICE_STEPS.has(step.op) && step.peer === 0)
      out.push(
        `${where}: a device's step on peer 0 (the server): it runs on device ${config.devices}`,
      )
    else if (step.peer > config.devices)
      out.push(
        `${where}: peer ${step.peer} is past the site's ${config.devices} device(s) (0 is the server, 1..${config.devices} the devices): it wraps around to another peer`,
      )
  })
  return out
}

/** Relative weights of the workload's operations (they need not sum to anything). */
const WORKLOAD_WEIGHTS: ReadonlyArray<readonly [StepOp, 'server' | 'device', number]> = [
  ['put', 'device', 16],
  ['patch', 'device', 20],
  ['delete', 'device', 6],
  ['put', 'server', 12],
  ['patch', 'server', 14],
  ['delete', 'server', 4],
  ['full', 'device', 4],
  ['delta', 'device', 6],
  ['sign-in', 'device', 10],
  ['policy', 'server', 2],
]
const WEIGHT_TOTAL = WORKLOAD_WEIGHTS.reduce((sum, [, , w]) => sum + w, 0)

/**
 * When retiring device `device` (1-based) stops being used: early enough that
 * its short retention runs out before the workload ends.
 */
export function retireAt(config: SimConfig, device: number): number | undefined {
  if (device < 1 || device > config.retiring) return undefined
  return Math.max(0, config.durationMs - config.shortRetentionMs - 2 * HOUR_MS)
}

/** The workload step number `i`, drawn from its own stream. */
function workloadStep(config: SimConfig, workload: Prng, i: number): SimStep {
  const rng = workload.fork(`op#${i}`)
  const at = rng.int(0, Math.max(0, config.durationMs - 1))
  let roll = rng.int(0, WEIGHT_TOTAL - 1)
  let chosen = WORKLOAD_WEIGHTS[0] as (typeof WORKLOAD_WEIGHTS)[number]
  for (const entry of WORKLOAD_WEIGHTS) {
    if (roll < entry[2]) {
      chosen = entry
      break
    }
    roll -= entry[2]
  }
  const [op, side] = chosen
  // Retired devices are left alone (so their retention runs out): their
  // operations go to a device still in use, or to the server.
  const inUse: number[] = []
  for (let d = 1; d <= config.devices; d++) {
    const retired = retireAt(config, d)
    if (retired === undefined || at < retired) inUse.push(d)
  }
  const devicePick = rng.int(0, 0x7fff_ffff)
  const peer = side === 'server' || inUse.length === 0 ? 0 : (inUse[devicePick % inUse.length] ?? 0)
  const deviceOnly = op === 'full' || op === 'delta' || op === 'sign-in'
  return {
    at,
    op: deviceOnly && peer === 0 ? 'patch' : op,
    peer,
    user: rng.int(0, config.users - 1),
    value: rng.nextUint32(),
    lasts: 0,
  }
}

/** The fault steps of one kind, `n` of them, each drawn from its own stream. */
function faultSteps(config: SimConfig, faults: Prng, op: StepOp, n: number): SimStep[] {
  const steps: SimStep[] = []
  for (let i = 0; i < n; i++) {
    const rng = faults.fork(`${op}#${i}`)
    const at = rng.int(0, Math.max(0, config.durationMs - 1))
    const value = rng.nextUint32()
    let peer = rng.int(0, config.devices)
    let lasts: number
    switch (op) {
      case 'crash':
        lasts = logUniform(rng, 100, 2 * HOUR_MS)
        break
      case 'restore':
        peer = rng.int(1, config.devices)
        // `value` is how old the backup is: from a minute to a day.
        lasts = logUniform(rng, 1_000, 30 * MINUTE_MS)
        steps.push({
          at,
          op,
          peer,
          user: 0,
          value: logUniform(rng, MINUTE_MS, 24 * HOUR_MS),
          lasts,
        })
        continue
      case 'partition':
        lasts = logUniform(rng, 30_000, 6 * HOUR_MS)
        break
      case 'clock-step':
        steps.push({
          at,
          op,
          peer: rng.int(1, config.devices),
          user: 0,
          value: logUniform(rng, 2 * HOUR_MS, 5 * 24 * HOUR_MS),
          lasts: logUniform(rng, MINUTE_MS, 12 * HOUR_MS),
        })
        continue
      default:
        lasts = logUniform(rng, 1_000, 10 * MINUTE_MS)
    }
    steps.push({ at, op, peer, user: 0, value, lasts })
  }
  return steps
}

/**
 * The plan a seed gives: `ops` workload steps plus the faults the config
 * asks for, ordered by time (ties: workload first, in drawing order).
 */
export function planFromSeed(config: SimConfig): SimStep[] {
  const root = new Prng(config.seed)
  const workload = root.fork('workload')
  const faults = root.fork('faults')
  const steps: SimStep[] = []
  for (let i = 0; i < config.ops; i++) steps.push(workloadStep(config, workload, i))
  steps.push(...faultSteps(config, faults, 'partition', config.partitions))
  steps.push(...faultSteps(config, faults, 'crash', config.crashes))
  steps.push(...faultSteps(config, faults, 'restore', config.backupRestores))
  steps.push(...compactionSteps(config, root.fork('compactions')))
  // Clogs beyond the per-message clog rate: a few long ones on random links.
  const clogs = config.clog > 0 ? Math.max(1, Math.round(config.durationMs / (12 * HOUR_MS))) : 0
  steps.push(...faultSteps(config, faults, 'clog', clogs))
  steps.push(...faultSteps(config, faults, 'clock-step', config.clockSteps))
  return sortSteps(steps)
}

/**
 * The compactions (new generations) of a run, each at a random moment, and
 * around some of them the faults a switch must survive: a device cut off
 * from everyone from before the switch to after it (its edits made
 * meanwhile are unsent edits of the old generation), and a device restored,
 * after the switch, from a backup taken just before it. Each compaction
 * draws from its own stream (prefix-stable, as the other faults).
 */
function compactionSteps(config: SimConfig, rng: Prng): SimStep[] {
  const steps: SimStep[] = []
  if (config.devices < 1) return steps
  for (let i = 0; i < config.compactions; i++) {
    const r = rng.fork(`compact#${i}`)
    const at = r.int(0, Math.max(0, config.durationMs - 1))
    steps.push({ at, op: 'compact', peer: 0, user: 0, value: r.nextUint32(), lasts: 0 })
    if (r.chance(0.4)) {
      // One device isolated (partition kind 2) across the switch.
      const before = logUniform(r, 1_000, 2 * HOUR_MS)
      const x = r.nextUint32()
      steps.push({
        at: Math.max(0, at - before),
        op: 'partition',
        peer: r.int(1, config.devices),
        user: 0,
        value: x - (x % 4) + 2,
        lasts: before + logUniform(r, 1_000, 4 * HOUR_MS),
      })
    }
    if (r.chance(0.3)) {
      // A device restored, after the switch, from a backup taken before it.
      const after = logUniform(r, 1_000, 2 * HOUR_MS)
      steps.push({
        at: at + after,
        op: 'restore',
        peer: r.int(1, config.devices),
        user: 0,
        value: after + logUniform(r, 1_000, 30 * MINUTE_MS),
        lasts: logUniform(r, 1_000, 30 * MINUTE_MS),
      })
    }
  }
  return steps
}

/** Steps in time order; a stable sort keeps the given order of simultaneous steps. */
export function sortSteps(steps: readonly SimStep[]): SimStep[] {
  return steps
    .map((step, index) => ({ step, index }))
    .sort((a, b) => a.step.at - b.step.at || a.index - b.index)
    .map(({ step }) => step)
}
