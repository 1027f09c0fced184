/**
 * Valid user records for the workload (core/schema.ts's default fields),
 * drawn from a step's own seed. Values come from small sets so that
 * different writers sometimes write the same value, and patches clear fields
 * (null, "" or []) as often as real edits do, so that rule 2's vacant cases
 * come up. PINs are given already hashed (a plain PIN is hashed with a random
 * salt, which would make runs differ).
 */
import type { Card, CardType, FieldValue } from '../core/schema.js'
import { CARD_TYPES } from '../core/schema.js'
import { Prng } from './prng.js'

const NAMES = ['Ann', 'Bo', 'Cleo', 'Dev', 'Eli', 'Fay', 'Gus', 'Hal']
const DEPARTMENTS = ['ops', 'hr', 'it', 'security', 'facilities']
const TITLES = ['engineer', 'guard', 'manager', 'contractor']
const GROUPS = ['g1', 'g2', 'g3', 'g4', 'g5']

/** The fields the workload writes and how each value is drawn. */
const FIELD_DRAWS: Readonly<Record<string, (rng: Prng) => FieldValue>> = {
  name: (rng) => rng.pick(NAMES),
  email: (rng) => `${rng.pick(NAMES).toLowerCase()}${rng.int(0, 9)}@example.com`,
  phone: (rng) => `+4420${rng.int(1000000, 1000009)}`,
  department: (rng) => rng.pick(DEPARTMENTS),
  title: (rng) => rng.pick(TITLES),
  status: (rng) => (rng.chance(0.8) ? 'active' : 'disabled'),
  validFrom: (rng) => `2024-0${rng.int(1, 9)}-1${rng.int(0, 9)}`,
  validUntil: (rng) => `2026-0${rng.int(1, 9)}-2${rng.int(0, 8)}`,
  groups: (rng) => GROUPS.filter(() => rng.chance(0.4)),
  accessLevels: (rng) => (rng.chance(0.5) ? ['lvl1'] : ['lvl1', 'lvl2']),
  pin: (rng) => `sha256$${hex(rng, 16)}$${hex(rng, 32)}`,
  cards: (rng) =>
    Array.from({ length: rng.int(1, 2) }, (): Card => ({
      type: rng.pick<CardType>(CARD_TYPES),
      value: `${rng.int(1000, 1015)}`,
    })),
  fingerprints: (rng) => [bytes(rng, rng.int(8, 32))],
  faces: (rng) => [bytes(rng, 16)],
  photo: (rng) => bytes(rng, rng.int(16, 64)),
}

/** Field names the workload writes (every default field). */
export const WORKLOAD_FIELDS: readonly string[] = Object.keys(FIELD_DRAWS)

/** Fields whose policy the workload changes (a subset, so that most stay shared). */
export const POLICY_FIELDS: readonly string[] = ['title', 'department', 'phone', 'photo', 'groups']

function hex(rng: Prng, byteCount: number): string {
  let out = ''
  for (let i = 0; i < byteCount; i++) out += rng.int(0, 255).toString(16).padStart(2, '0')
  return out
}

function bytes(rng: Prng, length: number): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = rng.int(0, 255)
  return out
}

/** A vacant value of the field's kind: null, or "" / [] as a client would send. */
function vacantFor(field: string, rng: Prng): FieldValue {
  const listy = ['groups', 'accessLevels', 'cards', 'fingerprints', 'faces'].includes(field)
  if (rng.chance(0.5)) return null
  if (listy) return []
  if (field === 'status' || field === 'photo' || field.startsWith('valid') || field === 'pin')
    return null
  return ''
}

/** A whole record for `put`: a random subset of fields (the rest vacant). */
export function recordFor(userId: string, value: number): Record<string, FieldValue> {
  const rng = new Prng(value)
  const record: Record<string, FieldValue> = { id: userId }
  for (const field of WORKLOAD_FIELDS) {
    if (rng.chance(0.45)) record[field] = (FIELD_DRAWS[field] as (r: Prng) => FieldValue)(rng)
  }
  if (record.name === undefined) record.name = rng.pick(NAMES)
  return record
}

/** The fields of a `patch`: one to three fields, a quarter of them cleared. */
export function patchFor(value: number): Record<string, FieldValue> {
  const rng = new Prng(value)
  const patch: Record<string, FieldValue> = {}
  const n = rng.int(1, 3)
  for (let i = 0; i < n; i++) {
    const field = rng.pick(WORKLOAD_FIELDS)
    patch[field] = rng.chance(0.25)
      ? vacantFor(field, rng)
      : (FIELD_DRAWS[field] as (r: Prng) => FieldValue)(rng)
  }
  return patch
}

/** The user id of pool index `user`. */
export const userIdOf = (user: number): string => `u${String(user).padStart(3, '0')}`
