/**
 * Executes one step of a plan on the site: workload operations through the
 * peers' public API (users.*, sync.*, signIn, setFieldPolicies), faults
 * through the site. An operation aimed at a peer that is down is skipped,
 * as a user cannot use a device that is off. Acknowledged writes go into
 * the ledger; refusals are counted by code, and an error no caller should
 * ever see (a TypeError, a refused valid record) is a violation.
 */
import type { FieldPolicy } from '../core/entries.js'
import { RostersyncError } from '../core/errors.js'
import { asUserId } from '../core/ids.js'
import { leakDelete } from './canary.js'
import type { Violation, WriteLedger } from './checks.js'
import type { HistoryRecorder, PendingWrite } from './history-recorder.js'
import type { WriteOp } from './oracle/history.js'
import type { SimStep } from './plan.js'
import { patchFor, POLICY_FIELDS, recordFor, userIdOf } from './records.js'
import type { DevicePeer } from '../peers/create-device.js'
import type { ServerPeer } from '../server-peer/create-server.js'
import type { PeerSlot, SimSite } from './site.js'

/** What the workload did, by operation. */
export interface WorkloadStats {
  /** Steps run, by op. */
  readonly steps: Record<string, number>
  /** Operations skipped because their peer was down. */
  skipped: number
  /** Operations whose promise resolved. */
  acknowledged: number
  /** Rejections, by error code (USER_NOT_FOUND, SYNC_TIMEOUT ...). */
  readonly refused: Record<string, number>
}

/** Error codes an operation may legitimately end with under faults. */
const EXPECTED_CODES = new Set([
  'USER_NOT_FOUND',
  'SYNC_FAILED',
  'SYNC_TIMEOUT',
  'SAVE_TO_SERVER_FAILED',
  'PEER_CLOSED',
])

const POLICIES: readonly FieldPolicy[] = ['shared', 'device-specific', 'last-writer-wins']

/** What a step needs from the run. */
export interface StepContext {
  readonly site: SimSite
  readonly ledger: WriteLedger
  readonly stats: WorkloadStats
  readonly violation: (violation: Violation) => void
  /** Virtual ms since the start. */
  readonly elapsed: () => number
  /** Records what ran, for the oracle. */
  readonly history: HistoryRecorder
}

/** Empty workload counters. */
export function newWorkloadStats(): WorkloadStats {
  return { steps: {}, skipped: 0, acknowledged: 0, refused: {} }
}

/** Runs `step` now (at its virtual time). */
export function runStep(ctx: StepContext, step: SimStep): void {
  const { site, stats } = ctx
  stats.steps[step.op] = (stats.steps[step.op] ?? 0) + 1
  switch (step.op) {
    case 'crash': {
      const slot = site.slot(step.peer)
      if (slot.down) {
        ctx.stats.skipped++
        return
      }
      if (step.value % 2 === 1) {
        slot.crashOnWrite = true
        slot.pendingDownMs = step.lasts
      } else {
        site.crash(slot, step.lasts)
      }
      return
    }
    case 'restore':
      if (!site.restore(deviceSlot(site, step.peer), step.lasts)) ctx.stats.skipped++
      return
    case 'partition':
      site.partition(step.value, step.lasts, step.peer)
      return
    case 'clog':
      site.clog(step.peer, step.value, step.lasts)
      return
    case 'clock-step':
      site.stepClock(deviceSlot(site, step.peer), step.value, step.lasts)
      return
    case 'compact':
      site.compact(step.value)
      return
    default:
      runOperation(ctx, step)
  }
}

/** The device slot a step's `peer` names (devices are 1..N; 0 wraps to the last one). */
export function deviceSlot(site: SimSite, peer: number): PeerSlot {
  const n = site.devices.length
  return site.devices[(((peer - 1) % n) + n) % n] as PeerSlot
}

/**
 * Settles an operation: counts it, then runs `then` once it is
 * acknowledged. With `write` (the oracle's record of it), a resolved
 * `false` (a delete of a user not shown) counts as refused there.
 */
type Done = (promise: Promise<unknown>, then?: () => void, write?: PendingWrite) => void

function runOperation(ctx: StepContext, step: SimStep): void {
  const { site, stats } = ctx
  const onServer = step.op === 'policy' || step.peer % (site.devices.length + 1) === 0
  const slot = onServer ? site.server : deviceSlot(site, step.peer)
  if (!slot.alive || (slot.server === undefined && slot.device === undefined)) {
    stats.skipped++
    return
  }
  // A resolved write is acknowledged: durable on its peer, whatever happens
  // to the peer later (a crash is an event of its own, after this one's
  // continuations have run).
  const done: Done = (promise, then, write) => {
    promise.then(
      (result) => {
        stats.acknowledged++
        if (write !== undefined) {
          if (result === false) ctx.history.refused(write)
          else ctx.history.acked(write)
        }
        then?.()
      },
      (error: unknown) => {
        if (write !== undefined) ctx.history.refused(write)
        refused(ctx, slot, step, error)
      },
    )
  }
  if (slot.server !== undefined) serverOperation(ctx, step, slot.server, done)
  else if (slot.device !== undefined) deviceOperation(ctx, step, slot.device, done)
}

const POLICY_OF = (value: number): Record<string, FieldPolicy> => ({
  [POLICY_FIELDS[value % POLICY_FIELDS.length] as string]: POLICIES[
    (value >>> 8) % POLICIES.length
  ] as FieldPolicy,
})

function serverOperation(ctx: StepContext, step: SimStep, server: ServerPeer, done: Done): void {
  const userId = userIdOf(step.user)
  const record = (): void => ctx.ledger.server(server.replica, asUserId(userId), ctx.elapsed())
  const begin = (op: WriteOp): PendingWrite => ctx.history.begin(server.id, op)
  switch (step.op) {
    case 'put': {
      const fields = recordFor(userId, step.value)
      const write = begin({ kind: 'put', user: userId, fields: withoutId(fields) })
      done(server.users.put(fields), record, write)
      return
    }
    case 'patch': {
      const patch = patchFor(step.value)
      const write = begin({ kind: 'patch', user: userId, fields: patch })
      done(server.users.patch(userId, patch), record, write)
      return
    }
    case 'delete': {
      const write = begin({ kind: 'delete', user: userId })
      done(
        server.users.delete(userId).then((deleted) => {
          if (deleted) record()
          return deleted
        }),
        undefined,
        write,
      )
      return
    }
    case 'policy': {
      const policies = POLICY_OF(step.value)
      const [field, policy] = Object.entries(policies)[0] as [string, FieldPolicy]
      const write = begin({ kind: 'policy', field, policy })
      done(
        server.setFieldPolicies(policies).then((changed) => changed.length > 0),
        undefined,
        write,
      )
      return
    }
  }
}

function deviceOperation(ctx: StepContext, step: SimStep, device: DevicePeer, done: Done): void {
  const { site } = ctx
  const userId = userIdOf(step.user)
  const record = (fields: readonly string[]) => (): void =>
    ctx.ledger.device(device.id, device.replica, asUserId(userId), fields, ctx.elapsed())
  const begin = (op: WriteOp): PendingWrite => ctx.history.begin(device.id, op)
  switch (step.op) {
    case 'put': {
      const fields = recordFor(userId, step.value)
      const write = begin({ kind: 'put', user: userId, fields: withoutId(fields) })
      done(device.users.put(fields), record(Object.keys(fields).filter((f) => f !== 'id')), write)
      return
    }
    case 'patch': {
      const patch = patchFor(step.value)
      const write = begin({ kind: 'patch', user: userId, fields: patch })
      done(device.users.patch(userId, patch), record(Object.keys(patch)), write)
      return
    }
    case 'delete': {
      const write = begin({ kind: 'delete', user: userId })
      const deleting = device.users.delete(userId)
      done(
        site.config.canary === 'leak-delete'
          ? deleting.then(async (deleted) => {
              if (deleted) await leakDelete(device, userId)
              return deleted
            })
          : deleting,
        undefined,
        write,
      )
      return
    }
    case 'full': {
      const sync = ctx.history.fullSync(device.id)
      const full = device.sync.full()
      void full.then(
        () => ctx.history.fullSyncEnded(sync, true),
        () => ctx.history.fullSyncEnded(sync, false),
      )
      done(full)
      return
    }
    case 'delta':
      done(device.sync.delta())
      return
    case 'sign-in':
      done(device.signIn(userId))
      return
  }
}

function refused(ctx: StepContext, slot: PeerSlot, step: SimStep, error: unknown): void {
  const code = error instanceof RostersyncError ? error.code : 'UNEXPECTED'
  ctx.stats.refused[code] = (ctx.stats.refused[code] ?? 0) + 1
  if (EXPECTED_CODES.has(code)) return
  // Online only until the first full sync (SEMANTICS.md): a write refused
  // so is expected of a device not offline-ready, a bug of one that is.
  if (code === 'OFFLINE_NOT_READY' && slot.device?.sync.status().offlineReady !== true) return
  ctx.violation({
    rule: 'unexpected-error',
    atMs: ctx.elapsed(),
    peer: slot.id,
    user: userIdOf(step.user),
    detail: `${step.op} on ${slot.id} failed with ${code}: ${error instanceof Error ? error.message : String(error)}`,
  })
}

/** A record's fields without its id. */
function withoutId(record: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const { id: _id, ...fields } = record
  return fields
}
