/**
 * The server's writes: its own edits (rule 1: they win), its deletes (rule
 * 4: they reach everyone), and the adoption of device fills (rule 2).
 */
import { isDeepStrictEqual } from 'node:util'
import type { FieldPolicy } from '../core/entries.js'
import { UserNotFoundError } from '../core/errors.js'
import type { UserId, WriterId } from '../core/ids.js'
import { adoptionFor, type PolicyTable } from '../core/resolve.js'
import {
  checkRecordSize,
  checkValidityRange,
  type FieldValue,
  type ParsedRecord,
  type RecordSchema,
} from '../core/schema.js'
import { isVacant } from '../core/vacant.js'
import {
  serverAdopt,
  serverDelete,
  serverDropField,
  serverWrite,
  writtenFields,
} from '../core/writes.js'
import type { WriteContext } from '../peers/replica.js'
import {
  deviceSpecificFieldNames,
  replicatedFieldNames,
  splitByPolicy,
  writeLocalFields,
  type UserOps,
} from '../peers/user-ops.js'

/** The server's write operations. */
export function serverOps(schema: RecordSchema): UserOps {
  const write = (record: ParsedRecord, mode: 'put' | 'patch') => (ctx: WriteContext) => {
    const { id } = record
    const current = ctx.view(id)
    if (mode === 'patch' && current === undefined) throw new UserNotFoundError(id)
    // A patch of no field changes nothing: it neither logs an update nor
    // restamps the entry (a new stamp is "the server changed the user",
    // which shows it again where a device deleted it: rule 3).
    if (mode === 'patch' && Object.keys(record.fields).length === 0) return
    const policies = ctx.policies()
    const { replicated, local } = splitByPolicy(record.fields, policies)
    const written = writtenFields(mode, replicated, replicatedFieldNames(schema, policies))
    const shown = new Set(Object.keys(current ?? {}))
    // A patch that names a field with a vacant value clears it explicitly. In
    // a put an explicit vacant value means what omitting the field means
    // (vacant is vacant): it clears only what the view showed.
    const clears = new Set(
      mode === 'patch'
        ? Object.keys(replicated).filter((field) => isVacant(replicated[field]))
        : [],
    )
    const stamp = ctx.stamp()
    const prev = ctx.replicaOf(id).server
    const entry = serverWrite(prev, written, stamp, policies, shown, clears)
    // A write that changes nothing (an administrator saving a user again
    // as it was): no update is logged and the entry keeps its stamp, as
    // for a patch of no field (a black-box probe: it showed the user again
    // on every device that had deleted it).
    if (
      prev !== undefined &&
      prev.d !== 1 &&
      isDeepStrictEqual({ ...entry, t: prev.t }, prev) &&
      Object.keys(local).length === 0 &&
      (mode === 'patch' || Object.keys(ctx.localOf(id).fields?.f ?? {}).length === 0)
    )
      return
    checkRecordSize(id, entry.f ?? {}, prev?.d === 1 ? undefined : prev?.f) // before anything changes
    checkValidityRange(id, entry.f ?? {}, replicated)
    ctx.setOwnEntry(id, entry)
    writeLocalFields(ctx, id, mode, local, deviceSpecificFieldNames(schema, policies), stamp)
    ctx.event({
      type: 'user-update-succeeded',
      origin: 'server',
      userId: id,
      fields: Object.keys(record.fields),
    })
  }
  return {
    put: (record) => write(record, 'put'),
    patch: (record) => write(record, 'patch'),
    delete: (id: UserId) => (ctx: WriteContext) => {
      if (ctx.view(id) === undefined) return false
      const stamp = ctx.stamp()
      ctx.setOwnEntry(id, serverDelete(ctx.replicaOf(id).server, stamp))
      if (ctx.localOf(id).fields !== undefined) ctx.setLocalFields(id, undefined)
      ctx.event({ type: 'user-deleted', origin: 'server', userId: id })
      return true
    },
  }
}

/**
 * Rule 2's second half: when device fills reach the server, the server takes
 * them into its own record and logs `user-update-succeeded` (origin device).
 * Runs in the same durable batch as the updates that carried the fills.
 */
export function adoptFills(users: Iterable<UserId>, ctx: WriteContext): void {
  const policies = ctx.policies()
  for (const id of users) {
    const replica = ctx.replicaOf(id)
    const adoption = adoptionFor(replica, policies)
    if (adoption === undefined) continue
    const fills = new Map<string, FieldValue>()
    const bySource = new Map<WriterId, string[]>()
    const credit = (source: WriterId, field: string): void => {
      bySource.set(source, [...(bySource.get(source) ?? []), field])
    }
    for (const [field, { value, source }] of adoption.fields) {
      fills.set(field, value)
      credit(source, field)
    }
    for (const [field, source] of adoption.vacated) credit(source, field)
    if (adoption.creates && bySource.size === 0) {
      const enroller = replica.devices.find(([, entry]) => entry.e >= (replica.server?.e ?? 0))?.[0]
      if (enroller !== undefined) bySource.set(enroller, [])
    }
    const { vacated, levels } = adoption
    ctx.setOwnEntry(id, serverAdopt(replica.server, fills, vacated.keys(), levels, ctx.stamp()))
    for (const [deviceId, fields] of bySource) {
      ctx.event({ type: 'user-update-succeeded', origin: 'device', userId: id, deviceId, fields })
    }
  }
}

/** Whether adoptFills would adopt anything for `users` (reads only). */
export function adoptsAny(users: Iterable<UserId>, ctx: WriteContext): boolean {
  const policies = ctx.policies()
  for (const id of users) if (adoptionFor(ctx.replicaOf(id), policies) !== undefined) return true
  return false
}

/**
 * Applies the site's field policies: records each change with a fresh stamp
 * (values written before it no longer count, rule 5) and, for a field that
 * becomes device-specific, clears the server's shared values of it.
 */
export function applyPolicies(
  wanted: Readonly<Record<string, FieldPolicy>>,
  ctx: WriteContext,
): string[] {
  const changed: string[] = []
  const current: PolicyTable = ctx.policies()
  for (const [field, policy] of Object.entries(wanted)) {
    if ((current.get(field)?.p ?? 'shared') === policy) continue
    ctx.setPolicy(field, { p: policy, t: ctx.stamp() })
    changed.push(field)
    ctx.event({ type: 'policy-changed', fields: [field], message: `${field} is now ${policy}` })
    if (policy !== 'device-specific') continue
    for (const id of ctx.allUserIds()) {
      const server = ctx.replicaOf(id).server
      if (
        server?.f?.[field] !== undefined ||
        server?.s?.[field] !== undefined ||
        server?.x?.[field] !== undefined
      ) {
        ctx.setOwnEntry(id, serverDropField(server, field))
      }
    }
  }
  return changed
}
