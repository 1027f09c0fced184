/**
 * How each kind of write changes a replicated entry. Pure: the caller passes
 * the previous entry, the parsed change and a fresh HLC stamp, and stores the
 * entry returned. Device-specific fields never reach these functions; the
 * peer keeps them in local state.
 */
import type {
  Adoption,
  DeviceEntry,
  Fields,
  PendingLevel,
  PolicyEntry,
  ServerEntry,
} from './entries.js'
import type { HlcStamp } from './hlc.js'
import type { FieldValue } from './schema.js'
import { isVacant } from './vacant.js'

type Mutable<T> = { -readonly [K in keyof T]: T[K] }

/**
 * The fields a write sets: a patch sets the fields it names; a put (whole
 * record) sets every replicated field of the schema, absent ones to vacant.
 */
export function writtenFields(
  mode: 'put' | 'patch',
  changes: Fields,
  replicatedFieldNames: readonly string[],
): Map<string, FieldValue> {
  const names = mode === 'put' ? replicatedFieldNames : Object.keys(changes)
  const written = new Map<string, FieldValue>()
  for (const name of names) written.set(name, changes[name] ?? null)
  return written
}

/**
 * The server's write of some fields. A cleared field that the view showed
 * (`shownFields`) or that the write clears explicitly is stamped in `x`, so
 * that older device values do not fill it again.
 */
export function serverWrite(
  prev: ServerEntry | undefined,
  written: ReadonlyMap<string, FieldValue>,
  stamp: HlcStamp,
  policies: ReadonlyMap<string, PolicyEntry>,
  shownFields: ReadonlySet<string>,
  explicitClears: ReadonlySet<string>,
): ServerEntry {
  const live = prev !== undefined && prev.d !== 1
  const f: Record<string, FieldValue> = live ? { ...prev.f } : {}
  const s: Record<string, HlcStamp> = live ? { ...prev.s } : {}
  const x: Record<string, HlcStamp> = live ? { ...prev.x } : {}
  const a: Record<string, Adoption> = live ? { ...prev.a } : {}
  for (const [field, value] of written) {
    delete a[field]
    const lww = policies.get(field)?.p === 'last-writer-wins'
    if (lww) s[field] = stamp
    if (isVacant(value)) {
      const hadValue = !isVacant(f[field]) || shownFields.has(field)
      delete f[field]
      if (!lww && (hadValue || explicitClears.has(field))) x[field] = stamp
    } else {
      f[field] = value
      delete x[field]
    }
  }
  return compactServerEntry({ e: prev?.e ?? 0, t: stamp }, f, s, x, a)
}

/** The server's delete: a tombstone one epoch later (rule 4). */
export function serverDelete(prev: ServerEntry | undefined, stamp: HlcStamp): ServerEntry {
  return { e: (prev?.e ?? 0) + 1, t: stamp, d: 1 }
}

/**
 * The server adopting device fills into its own record (rule 2): the value
 * of each field of `fills`, none for each of `vacated` (a device's clear
 * made before the adoption voided it), and for both the adoption levels
 * (`levels`, see {@link Adoption}), a level taken now stamped `stamp`. A
 * clear's stamp (`x`) stays: device writes older than the server's clear
 * still do not fill the field.
 */
export function serverAdopt(
  prev: ServerEntry | undefined,
  fills: ReadonlyMap<string, FieldValue>,
  vacated: Iterable<string>,
  levels: ReadonlyMap<string, readonly PendingLevel[]>,
  stamp: HlcStamp,
): ServerEntry {
  const live = prev !== undefined && prev.d !== 1
  const f: Record<string, FieldValue> = live ? { ...prev.f } : {}
  const x: Record<string, HlcStamp> = live ? { ...prev.x } : {}
  const a: Record<string, Adoption> = live ? { ...prev.a } : {}
  for (const [field, value] of fills) f[field] = value
  for (const field of vacated) delete f[field]
  for (const [field, pending] of levels)
    a[field] = pending.map(([held, writer, takenAt]) => [held, writer, takenAt ?? stamp] as const)
  return compactServerEntry({ e: prev?.e ?? 0, t: stamp }, f, live ? { ...prev.s } : {}, x, a)
}

/** Drops a field from the server's record (its policy became device-specific). */
export function serverDropField(prev: ServerEntry, field: string): ServerEntry {
  if (prev.d === 1) return prev
  const f = { ...prev.f }
  const s = { ...prev.s }
  const x = { ...prev.x }
  const a = { ...prev.a }
  delete f[field]
  delete s[field]
  delete x[field]
  delete a[field]
  return compactServerEntry({ e: prev.e, t: prev.t }, f, s, x, a)
}

function compactServerEntry(
  base: { e: number; t: HlcStamp },
  f: Record<string, FieldValue>,
  s: Record<string, HlcStamp>,
  x: Record<string, HlcStamp>,
  a: Record<string, Adoption>,
): ServerEntry {
  // Empty maps are left out: with 100,000 users every byte per entry counts.
  const entry: Mutable<ServerEntry> = { e: base.e, t: base.t }
  if (Object.keys(f).length > 0) entry.f = f
  if (Object.keys(s).length > 0) entry.s = s
  if (Object.keys(x).length > 0) entry.x = x
  if (Object.keys(a).length > 0) entry.a = a
  return entry
}

/**
 * A device's write. Its previous entry carries over unless it predates the
 * latest server delete the device has seen, in which case the write starts a
 * new user (rule 4).
 */
export function deviceWrite(
  prev: DeviceEntry | undefined,
  serverEpoch: number,
  written: ReadonlyMap<string, FieldValue>,
  stamp: HlcStamp,
): DeviceEntry {
  const carry = prev !== undefined && prev.e >= serverEpoch
  const f: Record<string, FieldValue> = carry ? { ...prev.f } : {}
  const s: Record<string, HlcStamp> = carry ? { ...prev.s } : {}
  for (const [field, value] of written) {
    s[field] = stamp
    if (isVacant(value)) delete f[field]
    else f[field] = value
  }
  return { e: Math.max(serverEpoch, carry ? prev.e : 0), f, s }
}

/**
 * One entry out of several entries of the same device for the same user
 * that Yjs holds as concurrent (the device lost part of its own history:
 * restored from an old backup, or a write made before its own latest entry
 * came back): Yjs keeps only one of them, chosen by clientID, not by time.
 * The merge keeps, field by field, the latest write (greatest stamp) among
 * the entries of the newest epoch: an entry of an older epoch was written
 * for a user the server has deleted since (rule 4). Ties (the same stamp
 * twice, only after a restored HLC) go to the greater encoded value, so
 * every peer merging the same entries gets the same entry.
 */
export function mergeDeviceEntries(entries: readonly DeviceEntry[]): DeviceEntry {
  const e = Math.max(...entries.map((entry) => entry.e))
  const f: Record<string, FieldValue> = {}
  const s: Record<string, HlcStamp> = {}
  const rank = (entry: DeviceEntry, field: string): string =>
    field in entry.f ? JSON.stringify(entry.f[field]) : ''
  const from: Record<string, DeviceEntry> = {}
  for (const entry of entries) {
    if (entry.e !== e) continue
    for (const [field, stamp] of Object.entries(entry.s)) {
      const held = s[field]
      const rival = from[field]
      const newer =
        held === undefined ||
        stamp > held ||
        (stamp === held && rival !== undefined && rank(entry, field) > rank(rival, field))
      if (!newer) continue
      s[field] = stamp
      from[field] = entry
      const value = entry.f[field]
      if (value === undefined) delete f[field]
      else f[field] = value
    }
  }
  return { e, f, s }
}

/** True when two device entries hold the same epoch and the same stamps. */
export function sameDeviceStamps(a: DeviceEntry, b: DeviceEntry): boolean {
  if (a.e !== b.e) return false
  const fields = Object.keys(a.s)
  if (fields.length !== Object.keys(b.s).length) return false
  return fields.every((field) => a.s[field] === b.s[field])
}
