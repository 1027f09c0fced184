/**
 * What changing a field's policy would do, said before it is done (rule 5:
 * a policy change re-initialises the field). The consequence is computed,
 * not only described: every user's field is resolved under the policies in
 * force and under the new one (with the server's values dropped when the
 * field becomes device-specific, as `applyPolicies` does), and the users
 * whose server view would lose or change its value are counted. Pure reads:
 * nothing is written.
 */
import { FIELD_POLICIES, type FieldPolicy, type PolicyEntry } from '../core/entries.js'
import { InvalidOptionsError, excerpt } from '../core/errors.js'
import { policyOf, resolveReplicated, valuesEqual, type UserReplica } from '../core/resolve.js'
import type { RecordSchema } from '../core/schema.js'
import { isVacant } from '../core/vacant.js'
import { serverDropField } from '../core/writes.js'
import type { Replica } from '../peers/replica.js'

/** The consequence of one policy change (GET /api/policies/preview). */
export interface PolicyPreview {
  readonly field: string
  readonly from: FieldPolicy
  readonly to: FieldPolicy
  /** False when the field has that policy already (nothing would change). */
  readonly changes: boolean
  /** Users whose view on the server shows a value of the field now. */
  readonly usersWithValue: number
  /** Of those, users whose server view would lose the value or show another. */
  readonly usersLosingValue: number
  /** Users whose server record holds a value of the field that would be cleared. */
  readonly serverValuesCleared: number
  /** Device entries holding a value of the field that would stop counting. */
  readonly deviceValuesDropped: number
  /** The consequence in a sentence or two, for the confirmation. */
  readonly consequence: string
}

/** Checks a field name and a policy; `INVALID_OPTIONS` naming the bad one. */
export function checkPolicyChange(schema: RecordSchema, field: unknown, policy: unknown): void {
  if (typeof field !== 'string' || !schema.hasField(field))
    throw new InvalidOptionsError(`field: unknown field ${excerpt(String(field), 64)}`)
  if (typeof policy !== 'string' || !FIELD_POLICIES.includes(policy as FieldPolicy))
    throw new InvalidOptionsError(
      `policy must be one of ${FIELD_POLICIES.join(', ')}, got ${excerpt(String(policy), 32)}`,
    )
}

/** Computes the consequence of setting `field` to `to` (see the module comment). */
export function policyPreview(
  replica: Replica,
  schema: RecordSchema,
  field: string,
  to: FieldPolicy,
): PolicyPreview {
  checkPolicyChange(schema, field, to)
  const policies = replica.policies()
  const from = policyOf(policies, field)
  const after = new Map<string, PolicyEntry>(policies)
  // A stamp later than every write so far: the change takes effect now.
  after.set(field, { p: to, t: replica.hlcPeek() + 1 })
  const counts = { usersWithValue: 0, usersLosingValue: 0, serverValuesCleared: 0, dropped: 0 }
  if (from !== to) {
    for (const id of replica.allUserIds()) {
      const user = replica.replicaOf(id)
      const before = resolveReplicated(user, policies)?.get(field)
      if (before !== undefined) counts.usersWithValue++
      const dropsServer = to === 'device-specific' && holdsField(user, field)
      // Counted: a value the server shows, not its bookkeeping of the field
      // (a clear's stamp, a deleted user's entry: a probe read 2 of 1).
      const server = user.server
      if (dropsServer && server?.d !== 1 && !isVacant(server?.f?.[field]))
        counts.serverValuesCleared++
      const changed: UserReplica =
        dropsServer && user.server !== undefined
          ? { ...user, server: serverDropField(user.server, field) }
          : user
      const now = resolveReplicated(changed, after)?.get(field)
      if (before !== undefined && (now === undefined || !valuesEqual(now.value, before.value)))
        counts.usersLosingValue++
      for (const [, entry] of user.devices) if (entry.f[field] !== undefined) counts.dropped++
    }
  }
  return {
    field,
    from,
    to,
    changes: from !== to,
    usersWithValue: counts.usersWithValue,
    usersLosingValue: counts.usersLosingValue,
    serverValuesCleared: counts.serverValuesCleared,
    deviceValuesDropped: from === to ? 0 : counts.dropped,
    consequence: consequenceOf(field, from, to, counts),
  }
}

function holdsField(user: UserReplica, field: string): boolean {
  const server = user.server
  return (
    server !== undefined &&
    (server.f?.[field] !== undefined ||
      server.s?.[field] !== undefined ||
      server.x?.[field] !== undefined)
  )
}

function consequenceOf(
  field: string,
  from: FieldPolicy,
  to: FieldPolicy,
  counts: { usersLosingValue: number; serverValuesCleared: number; dropped: number },
): string {
  if (from === to) return `${field} is ${to} already: nothing changes.`
  const losing = `${counts.usersLosingValue} user(s) lose the value the server shows now.`
  if (to === 'device-specific') {
    return (
      `${field} becomes device-specific (rule 5): the server's values are cleared ` +
      `(${counts.serverValuesCleared} user(s)) and the devices' shared values of it stop counting ` +
      `(${counts.dropped} device value(s)); from now on each device keeps its own value, which never leaves it. ` +
      losing
    )
  }
  if (from === 'device-specific') {
    return (
      `${field} becomes ${to} (rule 5): every device's own value of it is dropped; ` +
      `the field starts vacant everywhere and fills again by the rules ` +
      `(server wins, a device fills a vacant value).`
    )
  }
  return (
    `${field} becomes ${to} (rule 5): device values written before the change no longer count ` +
    `(${counts.dropped} device value(s)); the server's values stay. ` +
    losing
  )
}
