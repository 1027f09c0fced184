/**
 * The shape of replicated data. The Yjs document holds one root map per
 * writer (`u:<writerId>`, user id → entry) plus the server's meta map
 * (`m:server`, field name → policy). A writer may write only its own roots,
 * which makes authorising a peer a check on root names, and keeps every
 * merge decision in `resolve()`.
 *
 * Entries are immutable plain values (Yjs `ContentAny`): a change replaces the
 * whole entry, so one user costs one Yjs item per writer that touched it.
 */
import type { FieldValue } from './schema.js'
import type { HlcStamp } from './hlc.js'
import { asWriterId, SERVER_ID, type WriterId } from './ids.js'

/** How a field replicates. */
export type FieldPolicy = 'shared' | 'device-specific' | 'last-writer-wins'
/** All field policies. */
export const FIELD_POLICIES: readonly FieldPolicy[] = [
  'shared',
  'device-specific',
  'last-writer-wins',
]

/** Field name → value, as stored. */
export type Fields = Readonly<Record<string, FieldValue>>

/**
 * The server's record of one user.
 * - `e` (epoch) counts the server's deletes of this id; device writes made
 *   before the device saw the latest delete carry a smaller epoch and are void.
 * - `t` is the server's stamp of its latest change to this user: a device's
 *   local delete hides the user until `t` moves.
 * - `d` marks a tombstone (the server deleted the user).
 * - `f` holds the non-vacant fields.
 * - `s` holds stamps of last-writer-wins fields.
 * - `x` holds the stamps at which the server cleared a field: device values
 *   older than that do not fill it again.
 * - `a` holds, for each field whose value the server adopted from a device
 *   (rule 2) and has not written itself since, where that value came from
 *   and when the server took the field: see {@link Adoption}.
 */
export interface ServerEntry {
  readonly e: number
  readonly t: HlcStamp
  readonly d?: 1
  readonly f?: Fields
  readonly s?: Readonly<Record<string, HlcStamp>>
  readonly x?: Readonly<Record<string, HlcStamp>>
  readonly a?: Readonly<Record<string, Adoption>>
}

/**
 * One level of an adopted field's history: the device write the server
 * holds for it (stamp and writer; a fill, or a clear that voided the value)
 * and the server's stamp when it took the field.
 */
export type AdoptionLevel = readonly [held: HlcStamp, writer: string, takenAt: HlcStamp]

/** An adoption level still to be written: `takenAt` undefined is the server's stamp of the write. */
export type PendingLevel = readonly [held: HlcStamp, writer: string, takenAt: HlcStamp | undefined]

/**
 * An adopted field's origin (rule 2), as levels. Device writes made before
 * a level's `takenAt` could not have seen that adoption: the latest of them
 * wins, as it would have had they all reached the server before it adopted
 * anything, and the server adopts it in turn, keeping `takenAt`. Writes from
 * `takenAt` on are later edits of a field that is the server's (rule 1),
 * unless the latest write before it was a clear: then the field was vacant,
 * a later fill fills it, and the server adopts that one as a new level
 * (at most `ADOPTION_LEVELS_MAX`, the oldest dropped first). Every level but
 * the last holds a clear.
 */
export type Adoption = readonly AdoptionLevel[]

/** The most levels an adopted field keeps. */
export const ADOPTION_LEVELS_MAX = 4

/**
 * One device's contribution to one user: the values it wrote (`f`, vacant
 * values omitted), the stamp of each field it wrote (`s`, vacant writes
 * included), and the server epoch it had seen (`e`).
 */
export interface DeviceEntry {
  readonly e: number
  readonly f: Fields
  readonly s: Readonly<Record<string, HlcStamp>>
}

/** A field's policy and the server stamp at which it took effect. */
export interface PolicyEntry {
  readonly p: FieldPolicy
  readonly t: HlcStamp
}

/** Root map of a writer's user entries. */
export const usersRootName = (writer: WriterId): string => `u:${writer}`
/** Root map of the server's site settings (field policies). */
export const SERVER_META_ROOT = 'm:server'
/**
 * Root map of the devices the server revoked: device id -> {@link RevocationEntry}.
 * Devices learn revocations through it (it travels like every server
 * write, signed by the server, relayed by anyone) and from then on refuse
 * the revoked device's envelopes and leave its part out of their views.
 */
export const REVOCATIONS_ROOT = 'r:server'
/** Prefix of every writer's users root. */
export const USERS_ROOT_PREFIX = 'u:'

/** The writer that owns a root, or undefined for names rostersync never writes. */
export function rootOwner(rootName: string): WriterId | undefined {
  if (rootName.startsWith(USERS_ROOT_PREFIX) && rootName.length > USERS_ROOT_PREFIX.length) {
    return asWriterId(rootName.slice(USERS_ROOT_PREFIX.length))
  }
  if (rootName === SERVER_META_ROOT || rootName === REVOCATIONS_ROOT) return SERVER_ID
  return undefined
}

/**
 * True for a plain object: Object's prototype (or none). A key `__proto__`
 * in a Yjs value sets the decoded object's prototype (lib0's readAny
 * assigns each key), and a device hid fields and stamps there: checks that
 * walk own keys passed them, and readers that read inherited ones took
 * them (a hostile probe: a device erased the server's fields of any user).
 */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false
  const proto: unknown = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

/** True when every object in `value`, nested ones included, is plain (arrays and bytes as built). */
export function plainThroughout(value: unknown): boolean {
  const stack: unknown[] = [value]
  while (stack.length > 0) {
    const v = stack.pop()
    if (typeof v !== 'object' || v === null || v instanceof Uint8Array) continue
    if (Array.isArray(v)) {
      if (Object.getPrototypeOf(v) !== Array.prototype) return false
      for (const item of v) stack.push(item)
    } else if (isPlainObject(v)) {
      for (const item of Object.values(v)) stack.push(item)
    } else return false
  }
  return true
}

const isRecord = (v: unknown): v is Record<string, unknown> => isPlainObject(v)
const isStampMap = (v: unknown): v is Record<string, number> =>
  isRecord(v) && Object.values(v).every((n) => typeof n === 'number' && Number.isFinite(n))

/** Reads a server entry, or undefined when the value is not one. */
export function asServerEntry(value: unknown): ServerEntry | undefined {
  if (!isRecord(value) || typeof value.e !== 'number' || typeof value.t !== 'number')
    return undefined
  if (value.d !== undefined && value.d !== 1) return undefined
  if (value.f !== undefined && !isRecord(value.f)) return undefined
  if (value.s !== undefined && !isStampMap(value.s)) return undefined
  if (value.x !== undefined && !isStampMap(value.x)) return undefined
  if (value.a !== undefined && !isAdoptionMap(value.a)) return undefined
  return value as unknown as ServerEntry
}

/** True for a server entry's `a`: field name → {@link Adoption}. */
export function isAdoptionMap(value: unknown): value is Readonly<Record<string, Adoption>> {
  return isRecord(value) && Object.values(value).every(isAdoption)
}

/** True for an {@link Adoption}: 1 to 4 levels, each two finite stamps around a writer id. */
export function isAdoption(value: unknown): value is Adoption {
  return (
    Array.isArray(value) &&
    value.length >= 1 &&
    value.length <= ADOPTION_LEVELS_MAX &&
    value.every(
      (level) =>
        Array.isArray(level) &&
        level.length === 3 &&
        typeof level[0] === 'number' &&
        Number.isFinite(level[0]) &&
        typeof level[1] === 'string' &&
        typeof level[2] === 'number' &&
        Number.isFinite(level[2]),
    )
  )
}

/** Reads a device entry, or undefined when the value is not one. */
export function asDeviceEntry(value: unknown): DeviceEntry | undefined {
  if (!isRecord(value) || typeof value.e !== 'number') return undefined
  if (!isRecord(value.f) || !isStampMap(value.s)) return undefined
  return value as unknown as DeviceEntry
}

/** A revocation: when the server revoked the device (its HLC stamp). */
export interface RevocationEntry {
  readonly t: HlcStamp
}

/** Reads a revocation entry, or undefined when the value is not one. */
export function asRevocationEntry(value: unknown): RevocationEntry | undefined {
  return isRecord(value) && typeof value.t === 'number'
    ? (value as unknown as RevocationEntry)
    : undefined
}

/** Reads a policy entry, or undefined when the value is not one. */
export function asPolicyEntry(value: unknown): PolicyEntry | undefined {
  if (!isRecord(value) || typeof value.t !== 'number') return undefined
  return FIELD_POLICIES.includes(value.p as FieldPolicy)
    ? (value as unknown as PolicyEntry)
    : undefined
}

// Issue 11: update bounds

/** The keys of a device entry, all required (`DeviceEntry`). */
export const DEVICE_ENTRY_KEYS: readonly string[] = ['e', 'f', 's']
/** The keys a server entry may hold (`ServerEntry`): `e` and `t` required. */
export const SERVER_ENTRY_KEYS: readonly string[] = ['e', 't', 'd', 'f', 's', 'x', 'a']
/** The keys of a revocation entry, all required (`RevocationEntry`). */
export const REVOCATION_ENTRY_KEYS: readonly string[] = ['t']
/** The keys of a policy entry, all required (`PolicyEntry`). */
export const POLICY_ENTRY_KEYS: readonly string[] = ['p', 't']

/**
 * What a writer id looks like (the device id rule of `createDevice` and the
 * server's admission): a root named after anything else is not a writer's.
 */
export const WRITER_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/

/**
 * Calls `visit` with every stamp an entry, policy or revocation value holds
 * (`t`, and the stamps of `s` and `x`); anything else is skipped.
 */
export function forEachStamp(value: unknown, visit: (stamp: number) => void): void {
  if (!isRecord(value)) return
  if (typeof value.t === 'number') visit(value.t)
  for (const map of [value.s, value.x])
    if (isRecord(map))
      for (const stamp of Object.values(map)) if (typeof stamp === 'number') visit(stamp)
}
