/**
 * Where each field of a user's view came from, for the admin page: the
 * server's own record, a device whose value fills it (rule 2, not adopted
 * yet), or the server's device-specific value. For a server value the event
 * log says whether a device filled it first (and the server adopted it) or
 * the server wrote it, and when, as long as the bounded log still holds
 * that event.
 */
import { UserNotFoundError } from '../core/errors.js'
import type { EventQuery, RosterEvent } from '../core/events.js'
import type { FieldPolicy } from '../core/entries.js'
import { stampMs } from '../core/hlc.js'
import { SERVER_ID, asUserId } from '../core/ids.js'
import { policyOf, resolveReplicated, type ResolvedField } from '../core/resolve.js'
import type { Replica } from '../peers/replica.js'

/** The source of one field of a view. */
export interface FieldSource {
  readonly field: string
  readonly policy: FieldPolicy
  /**
   * `server`: the server's record holds it; `device`: a device's value fills
   * it (`deviceId`, written at `at`); `local`: the server's own value of a
   * device-specific field.
   */
  readonly source: 'server' | 'device' | 'local'
  readonly deviceId?: string
  /** When the value was written (ms since the epoch), where known. */
  readonly at?: number
  /** For a server value: who wrote it last, per the event log (a device's fill the server adopted, or the server). */
  readonly origin?: 'server' | 'device'
}

/** The sources of every field of a user's view; `USER_NOT_FOUND` without a view. */
export function fieldSources(
  replica: Replica,
  events: { query(q: EventQuery): RosterEvent[] },
  rawId: string,
): { id: string; fields: FieldSource[] } {
  const id = asUserId(rawId)
  const view = replica.view(id)
  if (view === undefined) throw new UserNotFoundError(rawId)
  const policies = replica.policies()
  const userReplica = replica.replicaOf(id)
  const resolved = resolveReplicated(userReplica, policies) ?? new Map<string, ResolvedField>()
  const updates = events.query({ type: 'user-update-succeeded', userId: id })
  const fields: FieldSource[] = []
  for (const field of Object.keys(view)) {
    if (field === 'id') continue
    const policy = policyOf(policies, field)
    const result = resolved.get(field)
    if (result === undefined) {
      const stamp = replica.localOf(id).fields?.s[field]
      fields.push({ field, policy, source: 'local', ...(stamp === undefined ? {} : atOf(stamp)) })
    } else if (result.source !== SERVER_ID) {
      const entry = userReplica.devices.find(([writer]) => writer === result.source)?.[1]
      const stamp = entry?.s[field]
      fields.push({
        field,
        policy,
        source: 'device',
        deviceId: result.source,
        ...(stamp === undefined ? {} : atOf(stamp)),
      })
    } else {
      fields.push({ field, policy, source: 'server', ...lastWrite(updates, field) })
    }
  }
  return { id, fields }
}

const atOf = (stamp: number): { at: number } => ({ at: stampMs(stamp) })

/** The newest `user-update-succeeded` event naming the field. */
function lastWrite(
  updates: readonly RosterEvent[],
  field: string,
): { origin?: 'server' | 'device'; deviceId?: string; at?: number } {
  for (let i = updates.length - 1; i >= 0; i--) {
    const event = updates[i]
    if (event?.fields?.includes(field) !== true) continue
    return {
      at: event.at,
      ...(event.origin === undefined ? {} : { origin: event.origin }),
      ...(event.origin === 'device' && event.deviceId !== undefined
        ? { deviceId: event.deviceId }
        : {}),
    }
  }
  return {}
}
