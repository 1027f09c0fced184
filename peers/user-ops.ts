/**
 * Pieces every peer's write operations share: splitting a change by field
 * policy, keeping device-specific values local, and the `users` API object
 * both peers expose.
 */
import type { Fields } from '../core/entries.js'
import type { HlcStamp } from '../core/hlc.js'
import type { UserId } from '../core/ids.js'
import { policyOf, type LocalFields, type PolicyTable, type UserView } from '../core/resolve.js'
import type { FieldValue, ParsedRecord, RecordSchema } from '../core/schema.js'
import { detached } from '../core/detach.js'
import { isVacant } from '../core/vacant.js'
import type { Replica, WriteContext } from './replica.js'

/** A change split into the fields that replicate and those that stay local. */
export interface SplitChange {
  readonly replicated: Record<string, FieldValue>
  readonly local: Record<string, FieldValue>
}

/** Splits a change by the field policies in force (rule 5). */
export function splitByPolicy(fields: Fields, policies: PolicyTable): SplitChange {
  const replicated: Record<string, FieldValue> = {}
  const local: Record<string, FieldValue> = {}
  for (const [field, value] of Object.entries(fields)) {
    if (policyOf(policies, field) === 'device-specific') local[field] = value
    else replicated[field] = value
  }
  return { replicated, local }
}

/** The schema's fields that replicate under the policies in force. */
export function replicatedFieldNames(schema: RecordSchema, policies: PolicyTable): string[] {
  return schema.fieldNames.filter((field) => policyOf(policies, field) !== 'device-specific')
}

/** The schema's device-specific fields. */
export function deviceSpecificFieldNames(schema: RecordSchema, policies: PolicyTable): string[] {
  return schema.fieldNames.filter((field) => policyOf(policies, field) === 'device-specific')
}

/**
 * Writes the device-specific part of a change into local state. A put
 * replaces every device-specific field; a patch only those it names.
 */
export function writeLocalFields(
  ctx: WriteContext,
  id: UserId,
  mode: 'put' | 'patch',
  change: Record<string, FieldValue>,
  names: readonly string[],
  stamp: HlcStamp,
): void {
  const written = mode === 'put' ? names : Object.keys(change)
  if (written.length === 0) return
  // Values written before the server's latest delete belong to the deleted
  // user: a write after it starts afresh (see LocalFields.e).
  const epoch = ctx.replicaOf(id).server?.e ?? 0
  const kept = ctx.localOf(id).fields
  const prev = (kept?.e ?? 0) >= epoch ? kept : undefined
  const f: Record<string, FieldValue> = { ...prev?.f }
  const s: Record<string, HlcStamp> = { ...prev?.s }
  for (const field of written) {
    const value = change[field] ?? null
    s[field] = stamp
    if (isVacant(value)) delete f[field]
    else f[field] = value
  }
  const next: LocalFields = { f, s, e: epoch }
  ctx.setLocalFields(id, next)
}

/** The write operations one kind of peer implements. */
export interface UserOps {
  put(record: ParsedRecord): (ctx: WriteContext) => void
  patch(record: ParsedRecord): (ctx: WriteContext) => void
  delete(id: UserId): (ctx: WriteContext) => boolean
}

/** The `users` API of API.md. */
export interface UsersApi {
  /** Stores a whole record (id + fields); resolves once durable. Rejects with `INVALID_RECORD`. */
  put(record: unknown): Promise<void>
  /** Changes some fields; `null` clears one. Rejects with `INVALID_RECORD` or `USER_NOT_FOUND`. */
  patch(id: string, fields: unknown): Promise<void>
  /** Deletes a user (on a device: on that device only). Resolves true if it was shown. */
  delete(id: string): Promise<boolean>
  /** The view of one user, or undefined. */
  get(id: string): UserView | undefined
  /** Every user's view, ordered by id. */
  list(): UserView[]
}

/**
 * Builds the `users` API over a replica. Validation happens here, at the
 * boundary, before anything is queued: a bad record rejects and changes
 * nothing. `prepare` lets a peer transform a parsed record (PIN hashing),
 * at once or later (a promise: the hash runs off the main thread). Writes
 * are queued in call order whatever waits for its preparation: a put with
 * a PIN followed by a patch of the same user lands in that order.
 */
export function usersApi(
  replica: Replica,
  schema: RecordSchema,
  ops: UserOps,
  prepare: (record: ParsedRecord) => ParsedRecord | Promise<ParsedRecord>,
  touch: () => void = () => undefined,
  /** Throws when this peer may not write now (a device not offline-ready, its server out of reach). */
  writable: () => void = () => undefined,
): UsersApi {
  const guard = <T>(fn: () => Promise<T>): Promise<T> => {
    // Whether it may write is judged before the use wakes the link (a
    // device wiped by retention while its server was down: the use set its
    // paused link connecting, and the write got through the gate, a probe).
    let refusal: Error | undefined
    try {
      writable()
    } catch (error) {
      refusal = error instanceof Error ? error : new Error(String(error))
    }
    touch()
    if (refusal !== undefined) return Promise.reject(refusal)
    try {
      return fn()
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)))
    }
  }
  // Writes whose preparation is pending, and the point after which the
  // last of them has been queued: a later write waits for it.
  let preparing = 0
  let queued: Promise<void> = Promise.resolve()
  const write = <T, R>(
    ready: T | Promise<T>,
    op: (value: T) => (ctx: WriteContext) => R,
  ): Promise<R> => {
    if (preparing === 0 && !(ready instanceof Promise)) return replica.write(op(ready))
    preparing++
    const turn = Promise.all([queued, ready])
    const written = turn.then(([, value]) => replica.write(op(value)))
    // Registered after `written`'s: runs once this write is queued (or its
    // preparation failed, which queues nothing and changes nothing).
    queued = turn.then(
      () => undefined,
      () => undefined,
    )
    void queued.then(() => preparing--)
    return written
  }
  // A copy of what a caller gives (core/detach.ts): zod copies arrays and
  // objects but keeps the caller's bytes, which it could change after the
  // write. Here only: validating a device's update parses its entries too.
  const own = (parsed: ParsedRecord): ParsedRecord => ({
    id: parsed.id,
    fields: detached(parsed.fields),
  })
  return {
    put: (record) =>
      guard(() => write(prepare(own(schema.parseRecord(record))), (r) => ops.put(r))),
    patch: (id, fields) =>
      guard(() =>
        write(prepare(own(schema.parsePatch(id, withoutSameId(id, fields)))), (r) => ops.patch(r)),
      ),
    // An id written before unreachableUserId held can still be deleted.
    delete: (id) => guard(() => write(schema.parseUserId(id, true), (u) => ops.delete(u))),
    get: (id) => {
      touch()
      // A copy (core/detach.ts): the view shares its values with the document.
      return typeof id === 'string' ? detached(replica.shown.view(id as UserId)) : undefined
    },
    list: () => {
      touch()
      return replica.shown.list().map(detached)
    },
  }
}

/**
 * A patch's fields without an `id` naming the user patched (`patch(id,
 * { ...view, email })`, a view holding its id): only a different id is a
 * change of it (refused).
 */
function withoutSameId(id: unknown, fields: unknown): unknown {
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) return fields
  if (!Object.hasOwn(fields, 'id') || (fields as { id?: unknown }).id !== id) return fields
  const { id: _same, ...rest } = fields as Record<string, unknown>
  return rest
}
