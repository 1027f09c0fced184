/**
 * A device's writes. Its edits go into its own part of the roster, stamped
 * per field; the view then applies the rules (the server's non-vacant values
 * win). Its deletes are local only (rule 3) and never leave the device.
 */
import { UserNotFoundError } from '../core/errors.js'
import type { UserId, WriterId } from '../core/ids.js'
import {
  overriddenFields,
  serverStampOf,
  type PolicyTable,
  type UserReplica,
} from '../core/resolve.js'
import {
  checkRecordSize,
  checkValidityRange,
  type ParsedRecord,
  type RecordSchema,
} from '../core/schema.js'
import { deviceWrite, writtenFields } from '../core/writes.js'
import type { WriteContext } from './replica.js'
import {
  deviceSpecificFieldNames,
  replicatedFieldNames,
  splitByPolicy,
  writeLocalFields,
  type UserOps,
} from './user-ops.js'

/**
 * Tracks which overridden writes were already logged, so that
 * `edit-overridden-by-server` is logged once per overridden field write.
 */
export class OverrideLog {
  private readonly logged = new Map<string, number>()

  /** Logs the fields of `id` the server overrides that were not logged yet. */
  record(
    ctx: WriteContext,
    self: WriterId,
    id: UserId,
    replica: UserReplica,
    policies: PolicyTable,
  ): void {
    const fresh: string[] = []
    for (const { field, stamp } of overriddenFields(replica, self, policies)) {
      const key = `${id}\u0000${field}`
      if (this.logged.get(key) === stamp) continue
      this.logged.set(key, stamp)
      fresh.push(field)
    }
    if (fresh.length > 0) {
      ctx.event({ type: 'edit-overridden-by-server', userId: id, deviceId: self, fields: fresh })
    }
  }
}

/** The write operations of device `self`. */
export function deviceOps(schema: RecordSchema, self: WriterId, overrides: OverrideLog): UserOps {
  const write = (record: ParsedRecord, mode: 'put' | 'patch') => (ctx: WriteContext) => {
    const { id } = record
    if (mode === 'patch' && ctx.view(id) === undefined) throw new UserNotFoundError(id)
    if (mode === 'patch' && Object.keys(record.fields).length === 0) return // changes nothing
    const policies = ctx.policies()
    const replica = ctx.replicaOf(id)
    const { replicated, local } = splitByPolicy(record.fields, policies)
    const stamp = ctx.stamp()
    const own = replica.devices.find(([writer]) => writer === self)?.[1]
    const written = writtenFields(mode, replicated, replicatedFieldNames(schema, policies))
    if (written.size > 0 || (mode === 'put' && own === undefined)) {
      const entry = deviceWrite(own, replica.server?.e ?? 0, written, stamp)
      checkRecordSize(id, entry.f, own?.f) // before anything changes
      checkValidityRange(id, entry.f, replicated)
      ctx.setOwnEntry(id, entry)
    }
    writeLocalFields(ctx, id, mode, local, deviceSpecificFieldNames(schema, policies), stamp)
    // Enrolling again on this device undoes this device's own delete.
    if (mode === 'put' && ctx.localOf(id).deleted !== undefined) ctx.setDeleted(id, undefined)
    ctx.event({
      type: 'user-update-succeeded',
      origin: 'device',
      userId: id,
      deviceId: self,
      fields: Object.keys(record.fields),
    })
    overrides.record(ctx, self, id, ctx.replicaOf(id), policies)
  }
  return {
    put: (record) => write(record, 'put'),
    patch: (record) => write(record, 'patch'),
    delete: (id: UserId) => (ctx: WriteContext) => {
      if (ctx.view(id) === undefined) return false
      ctx.setDeleted(id, { t: serverStampOf(ctx.replicaOf(id)) })
      ctx.event({ type: 'user-deleted-locally', userId: id, deviceId: self })
      return true
    },
  }
}
