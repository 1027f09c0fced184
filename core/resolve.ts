/**
 * The merge rules as pure functions. `resolveUser` is the view of one user
 * from the replicated entries of every writer plus this peer's local-only
 * state. No clock, no randomness, no I/O: two peers holding the same
 * replicated state compute the same view (local state aside), which is what
 * makes the views converge once Yjs has.
 */
import {
  ADOPTION_LEVELS_MAX,
  type AdoptionLevel,
  type PendingLevel,
  type DeviceEntry,
  type Fields,
  type FieldPolicy,
  type PolicyEntry,
  type ServerEntry,
} from './entries.js'
import type { HlcStamp } from './hlc.js'
import { SERVER_ID, type UserId, type WriterId } from './ids.js'
import type { FieldValue } from './schema.js'
import { isVacant } from './vacant.js'

/** What the replicated document says about one user. */
export interface UserReplica {
  readonly server: ServerEntry | undefined
  /** Each device's entry for the user, in any order. */
  readonly devices: ReadonlyArray<readonly [WriterId, DeviceEntry]>
}

/** Field name → policy entry (absent means `shared` since forever). */
export type PolicyTable = ReadonlyMap<string, PolicyEntry>

/** A local delete remembers the server's stamp `t` it hid (0: no server entry). */
export interface DeleteMark {
  readonly t: HlcStamp
  /**
   * The server entry's Yjs item when the device deleted (client, clock):
   * which version the mark names, where stamps alone cannot tell (after a
   * server restored from a backup: PROTOCOL.md, "A restored server").
   * Absent on marks made before it was kept, and without an entry.
   */
  readonly v?: readonly [number, number]
  /**
   * The highest server stamp the mark hid, when a restore's rollback set
   * it to an older entry (settleMarks, settleMoved in
   * peers/replica/local-prune.ts): an entry up to it is a version the
   * device deleted or one before it, not a change (a second restore may
   * bring it back). Absent: `t`.
   */
  readonly h?: HlcStamp
  /**
   * The versions the mark hid when a restore's rollback lowered it, as the
   * highest clock per server clientID of the entry's items walked then (the
   * version named and every one it replaced; a server clientID writes in
   * clock order, so an entry of this user on it up to that clock is one of
   * them). A later restore of the same generation that brings one back
   * (its document a backup taken after the first's) keeps the user hidden,
   * though the device's document no longer holds those items. Only on a
   * generation's own items: a move to another generation drops it.
   */
  readonly p?: ReadonlyArray<readonly [number, number]>
}

/** The highest server stamp `mark` hid (DeleteMark.h). */
export const markHigh = (mark: DeleteMark): HlcStamp => Math.max(mark.t, mark.h ?? 0)

/** True when the item `client`/`clock` is among the versions `mark` hid before a rollback (DeleteMark.p). */
export const markHid = (mark: DeleteMark, client: number, clock: number): boolean =>
  mark.p?.some(([c, highest]) => c === client && clock <= highest) === true

/**
 * Values of device-specific fields on one peer, with the stamp of each write:
 * a value counts only if written after the field's policy took effect, so a
 * policy change re-initialises the field (rule 5).
 */
export interface LocalFields {
  readonly f: Fields
  readonly s: Readonly<Record<string, HlcStamp>>
  /**
   * The server's epoch of the user (its delete count) when these values were
   * written; absent means 0. Values from before a server delete this peer has
   * seen belong to the deleted user and do not show (rule 4), as the server
   * drops its own on delete.
   */
  readonly e?: number
}

/** Local-only state of one user on one peer. */
export interface UserLocal {
  readonly deleted?: DeleteMark | undefined
  readonly fields?: LocalFields | undefined
}

/** A resolved field: its value and the writer it came from. */
export interface ResolvedField {
  readonly value: FieldValue
  readonly source: WriterId
  /** The stamp of the device write it came from (absent when the source is the server). */
  readonly stamp?: HlcStamp
}

/** A user as a peer shows it: id plus non-vacant fields. */
export type UserView = { readonly id: UserId } & Readonly<Record<string, FieldValue>>

/** The policy of a field. */
export const policyOf = (policies: PolicyTable, field: string): FieldPolicy =>
  policies.get(field)?.p ?? 'shared'

/** The server's epoch for a user: how many times the server deleted it. */
const epochOf = (replica: UserReplica): number => replica.server?.e ?? 0

/** True when the server holds a live (not deleted) record. */
export const serverLive = (replica: UserReplica): boolean =>
  replica.server !== undefined && replica.server.d !== 1

/** Device entries written after the device had seen the server's latest delete (rule 4). */
export function validDevices(
  replica: UserReplica,
): ReadonlyArray<readonly [WriterId, DeviceEntry]> {
  const epoch = epochOf(replica)
  return replica.devices.filter(([, entry]) => entry.e >= epoch)
}

/** True when the user exists in the replicated state (before local deletes). */
export function userExists(replica: UserReplica): boolean {
  return serverLive(replica) || validDevices(replica).length > 0
}

/** Writer order for ties: the greater (stamp, writer id) is the later write. */
const later = (a: HlcStamp, aw: WriterId, b: HlcStamp, bw: WriterId): boolean =>
  a > b || (a === b && aw > bw)

/** A device write: its stamp, writer and the entry holding it. */
interface DeviceWrite {
  readonly stamp: HlcStamp
  readonly writer: WriterId
  readonly entry: DeviceEntry
}

/**
 * The latest device write to `field` that still counts: written after the
 * policy took effect and after the server last cleared the field (`floor`),
 * later than `after` when given and stamped before `before` when given.
 */
function latestDeviceWrite(
  devices: ReadonlyArray<readonly [WriterId, DeviceEntry]>,
  field: string,
  floor: HlcStamp,
  after?: { readonly stamp: HlcStamp; readonly writer: WriterId },
  before = Infinity,
): DeviceWrite | undefined {
  let best: DeviceWrite | undefined
  for (const [writer, entry] of devices) {
    const stamp = entry.s[field]
    if (stamp === undefined || stamp <= floor || stamp >= before) continue
    if (after !== undefined && !later(stamp, writer, after.stamp, after.writer)) continue
    if (best === undefined || later(stamp, writer, best.stamp, best.writer)) {
      best = { stamp, writer, entry }
    }
  }
  return best
}

/**
 * The device write that replaces what one level of an adopted field holds
 * (rule 2): the latest device write to `field` made before the server took
 * the field and later than the write the level holds. Undefined when none
 * does.
 */
function rivalAt(
  devices: ReadonlyArray<readonly [WriterId, DeviceEntry]>,
  field: string,
  floor: HlcStamp,
  [held, heldWriter, takenAt]: AdoptionLevel,
): DeviceWrite | undefined {
  return latestDeviceWrite(
    devices,
    field,
    floor,
    { stamp: held, writer: heldWriter as WriterId },
    takenAt,
  )
}

/**
 * A shared field as rules 1 and 2 resolve it (`view`), and, when the server
 * should change what it holds for it (adopt a fill, replace or void an
 * adopted value), the adoption levels it then keeps (`levels`).
 */
interface SharedResolution {
  readonly view: ResolvedField | undefined
  readonly levels?: readonly PendingLevel[]
}

/**
 * Rules 1 and 2 for one shared field. The server's value wins, unless the
 * server adopted it (`a`, see {@link Adoption}) and a device write made
 * before the adoption is later than the write it holds: then that write
 * shows (and the server adopts it, keeping the level's stamp). When the
 * latest write before the last adoption is a clear, the field is vacant on
 * the server, and a device write after that clear fills it (a new level).
 * Without adoption levels: the server's value, else the latest device
 * write after the policy and the server's last clear.
 */
function resolveShared(
  server: ServerEntry | undefined,
  devices: ReadonlyArray<readonly [WriterId, DeviceEntry]>,
  field: string,
  since: HlcStamp,
): SharedResolution {
  const floor = Math.max(since, server?.x?.[field] ?? 0)
  const live = server !== undefined && server.d !== 1
  const value = live ? server.f?.[field] : undefined
  const levels = live ? server.a?.[field] : undefined
  if (levels === undefined || levels.length === 0) {
    if (!isVacant(value)) return { view: { value: value as FieldValue, source: SERVER_ID } }
    return fillAfter(devices, field, floor, undefined, [], false)
  }
  const last = levels.length - 1
  for (let i = 0; i <= last; i++) {
    const level = levels[i] as AdoptionLevel
    const rival = rivalAt(devices, field, floor, level)
    const fill = rival?.entry.f[field]
    if (rival !== undefined && !isVacant(fill)) {
      return {
        view: { value: fill as FieldValue, source: rival.writer, stamp: rival.stamp },
        levels: [...levels.slice(0, i), [rival.stamp, rival.writer, level[2]]],
      }
    }
    if (i < last) continue
    if (rival === undefined && !isVacant(value))
      return { view: { value: value as FieldValue, source: SERVER_ID } }
    // The latest write before the last adoption is a clear: a rival's
    // (which voids the value the server holds) or the one it holds.
    const voids = rival !== undefined && !isVacant(value)
    const base = voids
      ? [...levels.slice(0, i), [rival.stamp, rival.writer, level[2]] as const]
      : levels
    const after = rival ?? { stamp: level[0], writer: level[1] as WriterId }
    return fillAfter(devices, field, floor, after, base, voids)
  }
  return { view: undefined }
}

/**
 * The latest device write after `floor` and `after` filling a field the
 * server holds vacant, with the levels `base` plus a new one for it; or
 * vacant (with `base` when `changed`).
 */
function fillAfter(
  devices: ReadonlyArray<readonly [WriterId, DeviceEntry]>,
  field: string,
  floor: HlcStamp,
  after: { readonly stamp: HlcStamp; readonly writer: WriterId } | undefined,
  base: readonly PendingLevel[],
  changed: boolean,
): SharedResolution {
  const write = latestDeviceWrite(devices, field, floor, after)
  const value = write?.entry.f[field]
  if (write === undefined || isVacant(value))
    return changed ? { view: undefined, levels: base } : { view: undefined }
  return {
    view: { value: value as FieldValue, source: write.writer, stamp: write.stamp },
    levels: [...base, [write.stamp, write.writer, undefined] as const].slice(-ADOPTION_LEVELS_MAX),
  }
}

/**
 * Rules 1 and 2 for one shared field: the view (see {@link resolveShared}).
 * A field without adoption levels, nearly every one, resolves here without
 * the adoption bookkeeping: views are computed for every user a batch
 * touches.
 */
function resolveSharedField(
  replica: UserReplica,
  devices: ReadonlyArray<readonly [WriterId, DeviceEntry]>,
  field: string,
  since: HlcStamp,
): ResolvedField | undefined {
  const server = replica.server
  if (server?.a?.[field] !== undefined && server.d !== 1)
    return resolveShared(server, devices, field, since).view
  if (server !== undefined && server.d !== 1) {
    const value = server.f?.[field]
    if (!isVacant(value)) return { value: value as FieldValue, source: SERVER_ID }
  }
  const write = latestDeviceWrite(devices, field, Math.max(since, server?.x?.[field] ?? 0))
  const value = write?.entry.f[field]
  if (write === undefined || isVacant(value)) return undefined
  return { value: value as FieldValue, source: write.writer, stamp: write.stamp }
}

/** Last-writer-wins across the server and the devices, by stamp. */
function resolveLwwField(
  replica: UserReplica,
  devices: ReadonlyArray<readonly [WriterId, DeviceEntry]>,
  field: string,
  since: HlcStamp,
): ResolvedField | undefined {
  const server = replica.server
  const write = latestDeviceWrite(devices, field, since)
  const serverHas =
    server !== undefined &&
    server.d !== 1 &&
    (server.f?.[field] !== undefined || server.s?.[field] !== undefined)
  const serverStamp = server?.s?.[field] ?? 0
  if (
    serverHas &&
    (write === undefined || later(serverStamp, SERVER_ID, write.stamp, write.writer))
  ) {
    const value = server.f?.[field]
    return isVacant(value) ? undefined : { value: value as FieldValue, source: SERVER_ID }
  }
  const value = write?.entry.f[field]
  if (write === undefined || isVacant(value)) return undefined
  return { value: value as FieldValue, source: write.writer, stamp: write.stamp }
}

/** Every field name the replicated entries mention. */
function mentionedFields(replica: UserReplica): Set<string> {
  const names = new Set<string>()
  const server = replica.server
  if (server !== undefined && server.d !== 1) {
    for (const name of Object.keys(server.f ?? {})) names.add(name)
    for (const name of Object.keys(server.s ?? {})) names.add(name)
  }
  for (const [, entry] of replica.devices) for (const name of Object.keys(entry.s)) names.add(name)
  return names
}

/**
 * The replicated (shared and last-writer-wins) fields of a user, each with
 * its source; device-specific fields are left out. Undefined when the user
 * does not exist in the replicated state.
 */
export function resolveReplicated(
  replica: UserReplica,
  policies: PolicyTable,
): Map<string, ResolvedField> | undefined {
  if (!userExists(replica)) return undefined
  const devices = validDevices(replica)
  const resolved = new Map<string, ResolvedField>()
  for (const field of mentionedFields(replica)) {
    const policy = policies.get(field)
    const since = policy?.t ?? 0
    const kind = policy?.p ?? 'shared'
    if (kind === 'device-specific') continue
    const result =
      kind === 'last-writer-wins'
        ? resolveLwwField(replica, devices, field, since)
        : resolveSharedField(replica, devices, field, since)
    if (result !== undefined) resolved.set(field, result)
  }
  return resolved
}

/** The server stamp a local delete compares against. */
export const serverStampOf = (replica: UserReplica): HlcStamp => replica.server?.t ?? 0

/**
 * Whether a device's local delete (rule 3), made when the server's entry
 * stood at `deleted.t`, still hides the user: until the server changes the
 * user (its entry's stamp is another). A server restored from a backup is
 * no change: the device that finds it sets its marks to the restored
 * entries (peers/replica/local-prune.ts, settleMarks).
 */
export const deleteHides = (
  deleted: { readonly t: HlcStamp } | undefined,
  replica: UserReplica,
): boolean => deleted !== undefined && deleted.t === serverStampOf(replica)

/**
 * The view of one user on a peer: rules 1-6 applied to the replicated state,
 * then this peer's local-only state (its device deletes and device-specific
 * values). `fieldOrder` orders the view's keys (unknown fields follow, sorted).
 */
export function resolveUser(
  id: UserId,
  replica: UserReplica,
  policies: PolicyTable,
  local: UserLocal,
  fieldOrder: readonly string[],
): UserView | undefined {
  const resolved = resolveReplicated(replica, policies)
  if (resolved === undefined) return undefined
  if (deleteHides(local.deleted, replica)) return undefined
  const values = new Map<string, FieldValue>()
  for (const [field, { value }] of resolved) values.set(field, value)
  // Device-specific values written before a server delete this peer has
  // seen belong to the deleted user, not to one enrolled again under the id.
  if ((local.fields?.e ?? 0) >= (replica.server?.e ?? 0)) {
    for (const [field, value] of localValues(local.fields, policies)) values.set(field, value)
  }
  return orderView(id, values, fieldOrder)
}

/** The device-specific values of a peer that count under the policies in force. */
export function localValues(
  local: LocalFields | undefined,
  policies: PolicyTable,
): Map<string, FieldValue> {
  const values = new Map<string, FieldValue>()
  if (local === undefined) return values
  for (const [field, value] of Object.entries(local.f)) {
    const policy = policies.get(field)
    const stamp = local.s[field] ?? 0
    if (policy?.p === 'device-specific' && stamp >= policy.t && !isVacant(value))
      values.set(field, value)
  }
  return values
}

function orderView(
  id: UserId,
  values: Map<string, FieldValue>,
  fieldOrder: readonly string[],
): UserView {
  const view: Record<string, FieldValue> = { id }
  for (const field of fieldOrder) {
    const value = values.get(field)
    if (value !== undefined) view[field] = value
  }
  const extra = [...values.keys()].filter((field) => !fieldOrder.includes(field)).sort()
  for (const field of extra) view[field] = values.get(field) as FieldValue
  return view as UserView
}

/** What the server adopts for one user (rule 2). */
export interface Adopted {
  /** The server holds no live record, and devices enrolled the user. */
  readonly creates: boolean
  /** Shared fields a device write fills: vacant on the server, or replacing an adopted value. */
  readonly fields: ReadonlyMap<string, ResolvedField>
  /**
   * Adopted fields whose latest write made before the adoption was a
   * device's clear: the server drops the value, field → that device.
   */
  readonly vacated: ReadonlyMap<string, WriterId>
  /** The adoption levels the server keeps for each field of `fields` and `vacated`. */
  readonly levels: ReadonlyMap<string, readonly PendingLevel[]>
}

/**
 * The server's adoption step (rule 2): the shared fields where the server's
 * record is vacant but a device's value fills the view, the adopted fields
 * a device write made before the adoption replaces, and those a clear made
 * before it voids. When the server holds no live record but devices
 * enrolled the user (after any delete they saw), `creates` is true and the
 * server takes the user on.
 */
export function adoptionFor(replica: UserReplica, policies: PolicyTable): Adopted | undefined {
  if (!fillsVacancy(replica, policies)) return undefined
  if (!userExists(replica)) return undefined
  const devices = validDevices(replica)
  const fields = new Map<string, ResolvedField>()
  const vacated = new Map<string, WriterId>()
  const levels = new Map<string, readonly PendingLevel[]>()
  for (const field of mentionedFields(replica)) {
    if (policyOf(policies, field) !== 'shared') continue
    const since = policies.get(field)?.t ?? 0
    const resolution = resolveShared(replica.server, devices, field, since)
    if (resolution.levels === undefined) continue
    levels.set(field, resolution.levels)
    if (resolution.view !== undefined) fields.set(field, resolution.view)
    else vacated.set(field, (resolution.levels.at(-1)?.[1] ?? SERVER_ID) as WriterId)
  }
  const creates = !serverLive(replica)
  return creates || levels.size > 0 ? { creates, fields, vacated, levels } : undefined
}

/**
 * False when adoptionFor has nothing to find: the server holds a live
 * record, no device entry has a stamp on a shared field the server has
 * vacant, and none has a write made before an adoption and later than
 * what the adoption holds. A device can only fill (rule 2) a shared field
 * it wrote and the server left empty, so the common case of a server that
 * holds the user, checked on every batch for every user it touched,
 * resolves nothing.
 */
function fillsVacancy(replica: UserReplica, policies: PolicyTable): boolean {
  const server = replica.server
  if (server === undefined || server.d === 1) return true
  const adopted = server.a ?? {}
  for (const [writer, entry] of replica.devices)
    for (const [field, stamp] of Object.entries(entry.s)) {
      for (const [held, heldWriter, takenAt] of adopted[field] ?? [])
        if (stamp < takenAt && later(stamp, writer, held, heldWriter as WriterId)) return true
      if (isVacant(server.f?.[field]) && policyOf(policies, field) === 'shared') return true
    }
  return false
}

/**
 * Fields this device wrote that the server's value overrides (rule 1): its
 * write counted, but the server holds a different non-vacant value, and no
 * device write made before the adoption replaces it.
 */
export function overriddenFields(
  replica: UserReplica,
  self: WriterId,
  policies: PolicyTable,
): Array<{ field: string; stamp: HlcStamp }> {
  const server = replica.server
  const devices = validDevices(replica)
  const own = devices.find(([writer]) => writer === self)?.[1]
  if (own === undefined || server === undefined || server.d === 1) return []
  const result: Array<{ field: string; stamp: HlcStamp }> = []
  for (const [field, stamp] of Object.entries(own.s)) {
    if (policyOf(policies, field) !== 'shared') continue
    const serverValue = server.f?.[field]
    if (isVacant(serverValue) || valuesEqual(serverValue, own.f[field])) continue
    const since = policies.get(field)?.t ?? 0
    if (server.a?.[field] !== undefined) {
      const shown = resolveShared(server, devices, field, since).view
      if (shown?.source !== SERVER_ID) continue
    }
    result.push({ field, stamp })
  }
  return result
}

/** Structural equality of field values (strings, numbers, lists, bytes, cards). */
export function valuesEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (isVacant(a) && isVacant(b)) return true
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    return a.byteLength === b.byteLength && a.every((byte, i) => byte === b[i])
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, i) => valuesEqual(item, b[i]))
  }
  if (typeof a === 'object' && typeof b === 'object' && a !== null && b !== null) {
    const ka = Object.keys(a)
    const kb = Object.keys(b)
    return (
      ka.length === kb.length &&
      ka.every((k) =>
        valuesEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]),
      )
    )
  }
  return false
}

/**
 * Of two server entries for one user (the document's, and one imported from
 * an export file), the later: the greater epoch (deletes count), then the
 * greater stamp. Both are the server's own, so the later one is what the
 * server holds or held last; the document's wins a tie.
 */
export function laterServerEntry(
  doc: ServerEntry | undefined,
  imported: ServerEntry | undefined,
): ServerEntry | undefined {
  if (imported === undefined) return doc
  if (doc === undefined) return imported
  if (imported.e !== doc.e) return imported.e > doc.e ? imported : doc
  return imported.t > doc.t ? imported : doc
}

/** Of two policy entries for one field (the document's, one imported), the later by stamp. */
export function laterPolicy(
  doc: PolicyEntry | undefined,
  imported: PolicyEntry | undefined,
): PolicyEntry | undefined {
  if (imported === undefined) return doc
  if (doc === undefined) return imported
  return imported.t > doc.t ? imported : doc
}
