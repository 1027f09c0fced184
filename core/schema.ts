/**
 * The user record and its validation. zod parses at the boundary (API input,
 * wire, files) and nowhere else; after parsing, records are plain data.
 */
import { z } from 'zod'
import { InvalidOptionsError, InvalidRecordError } from './errors.js'
import { asUserId, type UserId } from './ids.js'
import { limits } from './limits.js'

/** The credential technologies a card may carry. */
export const CARD_TYPES = [
  'csn',
  'wiegand',
  'secure-credential',
  'access-on-card',
  'mobile',
] as const
/** One credential type. */
export type CardType = (typeof CARD_TYPES)[number]
/** One credential held by a user. */
export interface Card {
  readonly type: CardType
  readonly value: string
}

/** A value a field may hold once parsed (null clears the field). */
export type FieldValue =
  | string
  | number
  | boolean
  | readonly string[]
  | readonly Card[]
  | readonly Uint8Array[]
  | Uint8Array
  | null

/** The field names every site has. */
export const DEFAULT_FIELDS = [
  'name',
  'email',
  'phone',
  'department',
  'title',
  'status',
  'validFrom',
  'validUntil',
  'groups',
  'accessLevels',
  'pin',
  'cards',
  'fingerprints',
  'faces',
  'photo',
] as const

/**
 * What a field holds, for forms that edit records (the admin page): each
 * default field's kind, and a custom field's declared type.
 */
export type FieldKind =
  | 'text'
  | 'status'
  | 'date'
  | 'list'
  | 'pin'
  | 'cards'
  | 'templates'
  | 'bytes'
  | 'number'
  | 'boolean'

const DEFAULT_FIELD_KINDS: Record<(typeof DEFAULT_FIELDS)[number], FieldKind> = {
  name: 'text',
  email: 'text',
  phone: 'text',
  department: 'text',
  title: 'text',
  status: 'status',
  validFrom: 'date',
  validUntil: 'date',
  groups: 'list',
  accessLevels: 'list',
  pin: 'pin',
  cards: 'cards',
  fingerprints: 'templates',
  faces: 'templates',
  photo: 'bytes',
}

const CUSTOM_FIELD_KINDS: Record<CustomFieldType, FieldKind> = {
  string: 'text',
  number: 'number',
  boolean: 'boolean',
  'string[]': 'list',
  bytes: 'bytes',
}

/** Kinds a site's custom field may have. */
export const CUSTOM_FIELD_TYPES = ['string', 'number', 'boolean', 'string[]', 'bytes'] as const
/** One custom field kind. */
export type CustomFieldType = (typeof CUSTOM_FIELD_TYPES)[number]

/**
 * The shape of a stored (hashed) PIN (peers/pin.ts):
 * `scrypt$ln=<log2 N>,r=<r>,p=<p>[,k=<pepper id>]$<salt hex>$<digest hex>`,
 * or the older `sha256$<salt hex>$<digest hex>`. {@link isPinHash} also
 * bounds the scrypt parameters.
 */
export const PIN_HASH_PATTERN =
  /^(?:sha256\$[0-9a-f]{32}|scrypt\$ln=([0-9]{1,2}),r=([0-9]{1,2}),p=([0-9])(?:,k=[0-9a-f]{8})?\$[0-9a-f]{32})\$[0-9a-f]{64}$/

/**
 * True for a stored PIN hash whose scrypt parameters are within bounds
 * (`limits.pinKdf*`): a hash comes from any writer, and verifying it must
 * not cost more than a bounded scrypt.
 */
export function isPinHash(value: string): boolean {
  const match = PIN_HASH_PATTERN.exec(value)
  if (match === null) return false
  if (match[1] === undefined) return true
  const logN = Number(match[1])
  const r = Number(match[2])
  const p = Number(match[3])
  return (
    logN >= limits.pinKdfLogNMin &&
    logN <= limits.pinKdfLogNMax &&
    r === limits.pinKdfBlockSize &&
    p >= 1 &&
    p <= limits.pinKdfParallelismMax
  )
}
/** A PIN as a person types it. */
export const PIN_PLAIN_PATTERN = /^[0-9]{4,12}$/

/**
 * A string Yjs stores as it is: no lone UTF-16 surrogate. Yjs writes
 * strings as UTF-8, which turns one into U+FFFD, so the peer that wrote it
 * would show another value than every other peer (until it restarts).
 */
const wellFormed = (s: string): boolean => !/\p{Cs}/u.test(s)
const LONE_SURROGATE = 'no lone UTF-16 surrogates (not valid Unicode text)'
const text = z.string().max(limits.textCharsMax).refine(wellFormed, LONE_SURROGATE)
const bytes = (bytesMax: number) =>
  z.instanceof(Uint8Array).refine((b) => b.byteLength <= bytesMax, {
    message: `at most ${bytesMax} bytes`,
  })
const date = z.union([z.iso.date(), z.iso.datetime({ offset: true })], {
  error: 'expected a date (YYYY-MM-DD) or a date and time with its offset (RFC 3339)',
})

/**
 * A schema's refusal in plain words, one clause per problem: `field:
 * what was expected` (`cards[0].type: …`). zod's own layout (a cross, an
 * arrow, one line each) reached the admin page as it was (a probe).
 */
function issuesText(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = issue.path
        .map((key, i) =>
          typeof key === 'number' ? `[${key}]` : i === 0 ? String(key) : `.${String(key)}`,
        )
        .join('')
      return path === '' ? issue.message : `${path}: ${issue.message}`
    })
    .join('; ')
}
const idList = z
  .array(z.string().min(1).max(limits.textCharsMax).refine(wellFormed, LONE_SURROGATE))
  .max(limits.groupsPerUserMax)
const card = z.strictObject({
  type: z.enum(CARD_TYPES),
  value: z.string().min(1).max(limits.cardValueCharsMax).refine(wellFormed, LONE_SURROGATE),
})

const defaultFieldSchemas = {
  name: text,
  email: text,
  phone: text,
  department: text,
  title: text,
  status: z.enum(['active', 'disabled']),
  validFrom: date,
  validUntil: date,
  groups: idList,
  accessLevels: idList,
  pin: z.string().refine((p) => PIN_PLAIN_PATTERN.test(p) || isPinHash(p), {
    message: 'a PIN is 4 to 12 digits (or an already hashed PIN)',
  }),
  cards: z.array(card).max(limits.cardsPerUserMax),
  fingerprints: z.array(bytes(limits.templateBytesMax)).max(limits.fingerprintsPerUserMax),
  faces: z.array(bytes(limits.templateBytesMax)).max(limits.facesPerUserMax),
  photo: bytes(limits.photoBytesMax),
} satisfies Record<(typeof DEFAULT_FIELDS)[number], z.ZodType>

const customFieldSchemas: Record<CustomFieldType, z.ZodType> = {
  string: text,
  number: z.number().finite(),
  boolean: z.boolean(),
  'string[]': idList,
  bytes: bytes(limits.photoBytesMax),
}

/**
 * Whether no HTTP path reaches user `id` (/api/users/<id>): a slash splits
 * the segment, and browsers and URL parsers resolve `.` and `..` (even
 * percent-encoded) before a request is sent. Such ids are not written.
 */
export function unreachableUserId(id: string): boolean {
  return id === '.' || id === '..' || /[/\\]/.test(id)
}

/** A user id as one may be stored (written before unreachableUserId held). */
const storedUserIdSchema = z
  .string()
  .min(1)
  .max(limits.userIdCharsMax)
  .refine((id) => !/\p{Cc}/u.test(id), 'no control characters')
  .refine(wellFormed, LONE_SURROGATE)
const userIdSchema = storedUserIdSchema.refine(
  (id) => !unreachableUserId(id),
  'not "." or "..", and no "/" or "\\" (an id is a segment of /api/users/<id>)',
)

/** A parsed write: the user id and the fields it sets (null clears). */
export interface ParsedRecord {
  readonly id: UserId
  readonly fields: Readonly<Record<string, FieldValue>>
}

/**
 * The record schema of one site: the default fields plus its custom fields.
 * Built once per peer; `parseRecord` and `parsePatch` are the only entry
 * points through which user data enters the engine.
 */
export class RecordSchema {
  /** Every field name this site knows, default fields first. */
  readonly fieldNames: readonly string[]
  /** Field name → what it holds (FieldKind). */
  readonly fieldKinds: Readonly<Record<string, FieldKind>>
  private readonly fieldSchemas: Readonly<Record<string, z.ZodType>>
  private readonly patchSchema: z.ZodType<Record<string, unknown>>

  constructor(customFields: Readonly<Record<string, CustomFieldType>> = {}) {
    const custom = Object.entries(customFields)
    if (custom.length > limits.customFieldsMax) {
      throw new InvalidOptionsError(`at most ${limits.customFieldsMax} custom fields`)
    }
    const schemas: Record<string, z.ZodType> = { ...defaultFieldSchemas }
    const kinds: Record<string, FieldKind> = { ...DEFAULT_FIELD_KINDS }
    for (const [name, type] of custom) {
      if (
        name === 'id' ||
        Object.hasOwn(defaultFieldSchemas, name) ||
        // A plain object's own names (`constructor`, `toString`): read off
        // an entry that lacks the field, they would be a value.
        name in Object.prototype ||
        !/^[A-Za-z][A-Za-z0-9_-]{0,63}$/.test(name)
      ) {
        throw new InvalidOptionsError(
          `custom field name ${JSON.stringify(name)} is not allowed (a letter, then up to 63 letters, digits, _ or -; not a built-in field nor a name JavaScript objects have, such as constructor)`,
        )
      }
      const schema = customFieldSchemas[type]
      if (schema === undefined) {
        throw new InvalidOptionsError(`custom field ${name}: unknown type ${JSON.stringify(type)}`)
      }
      schemas[name] = schema
      kinds[name] = CUSTOM_FIELD_KINDS[type]
    }
    this.fieldSchemas = schemas
    this.fieldKinds = kinds
    this.fieldNames = Object.keys(schemas)
    // "" is vacant (SEMANTICS.md), as null is: a field whose values cannot
    // be "" (a PIN, a date, a status) takes it as a clear, as text fields
    // take it (a probe: `pin: ""` was refused, `email: ""` cleared).
    // (A preprocess, not a union: a union's error says "Invalid input" where
    // the field's own says what it takes.)
    const shape = Object.fromEntries(
      Object.entries(schemas).map(([name, schema]) => [
        name,
        schema.safeParse('').success
          ? schema.nullable().optional()
          : z.preprocess((value) => (value === '' ? null : value), schema.nullable()).optional(),
      ]),
    )
    this.patchSchema = z.strictObject(shape)
  }

  /** True when `name` is a field of this site. */
  hasField(name: string): boolean {
    return Object.hasOwn(this.fieldSchemas, name)
  }

  /** Validates a whole record (`id` plus fields). Throws `InvalidRecordError`. */
  parseRecord(input: unknown): ParsedRecord {
    if (typeof input !== 'object' || input === null || Array.isArray(input)) {
      throw new InvalidRecordError('a user record must be an object with an id')
    }
    const { id, ...fields } = input as Record<string, unknown>
    return { id: this.parseUserId(id), fields: this.parseFields(fields) }
  }

  /** Validates a patch (fields only). Throws `InvalidRecordError`. */
  parsePatch(id: unknown, input: unknown): ParsedRecord {
    if (typeof input !== 'object' || input === null || Array.isArray(input)) {
      throw new InvalidRecordError('a patch must be an object of fields')
    }
    if (Object.hasOwn(input, 'id')) throw new InvalidRecordError('a patch cannot change the id')
    return { id: this.parseUserId(id), fields: this.parseFields(input) }
  }

  /**
   * Validates a user id to write. Throws `InvalidRecordError`. With
   * `stored`, one that may already be stored (to delete or export it):
   * an id no HTTP path reaches is taken too.
   */
  parseUserId(id: unknown, stored = false): UserId {
    const result = (stored ? storedUserIdSchema : userIdSchema).safeParse(id)
    if (!result.success) {
      throw new InvalidRecordError(
        `invalid user id: ${issuesText(result.error)}`,
        result.error.issues,
      )
    }
    return asUserId(result.data)
  }

  private parseFields(input: object): Record<string, FieldValue> {
    const result = this.patchSchema.safeParse(input)
    if (!result.success) {
      throw new InvalidRecordError(
        `invalid record: ${issuesText(result.error)}`,
        result.error.issues,
      )
    }
    const fields: Record<string, FieldValue> = {}
    for (const [name, value] of Object.entries(result.data)) {
      if (value !== undefined) fields[name] = value as FieldValue
    }
    const size = recordBytes(fields)
    if (size > limits.recordBytesMax) {
      throw new InvalidRecordError(`record is ${size} bytes; the limit is ${limits.recordBytesMax}`)
    }
    return fields
  }
}

/**
 * Throws `INVALID_RECORD` when the fields a write leaves in a writer's
 * entry for `id` (its earlier values and this write's) are past
 * `limits.recordBytesMax`: each patch within the limit could grow a record
 * past it (a probe: a photo, then long groups), and a device's entry past
 * it is refused by its server, with every later write of the device.
 */
export function checkRecordSize(
  id: string,
  fields: Readonly<Record<string, unknown>>,
  before: Readonly<Record<string, unknown>> | undefined,
): void {
  const size = recordBytes(fields)
  // Only a write that takes the record past the limit is refused: one
  // already past it (adoptions fill the server's record from several
  // devices) stays editable, or an administrator could not disable a user
  // (a review).
  if (size > limits.recordBytesMax && recordBytes(before ?? {}) <= limits.recordBytesMax)
    throw new InvalidRecordError(
      `the record of ${JSON.stringify(id.slice(0, 64))} would be ${size} bytes; the limit is ${limits.recordBytesMax}`,
    )
}

/** A `date` value that is a day alone (no time). */
const DAY_ONLY = /^\d{4}-\d{2}-\d{2}$/

/** A `date` field's bound, ms: a day alone counts from its start (`from`) or through its end (`until`). */
function boundMs(value: string, end: 'from' | 'until'): number {
  const ms = Date.parse(value)
  return end === 'until' && DAY_ONLY.test(value) ? ms + 86_400_000 - 1 : ms
}

/**
 * Throws `INVALID_RECORD` when a write that sets `validFrom` or
 * `validUntil` leaves the writer's entry for `id` (`fields`) valid until
 * before it is valid from: a user no door could ever admit, written by
 * mistake (swapped dates). Two days alone, or two times, are compared (a
 * day runs through its end); a day beside a time is not (the day's bounds
 * are in the site's local time, which the record does not say). Only the writer's own
 * values are compared: an entry that already held such a range stays
 * editable, and a device's date beside the server's is theirs to settle.
 */
export function checkValidityRange(
  id: string,
  fields: Readonly<Record<string, unknown>>,
  written: Readonly<Record<string, unknown>>,
): void {
  if (!Object.hasOwn(written, 'validFrom') && !Object.hasOwn(written, 'validUntil')) return
  const { validFrom: from, validUntil: until } = fields
  if (typeof from !== 'string' || typeof until !== 'string') return
  // A day alone against a time with its offset: the day's bounds are the
  // site's local time, which the record does not say (a review), so only
  // like with like is compared.
  if (DAY_ONLY.test(from) !== DAY_ONLY.test(until)) return
  if (boundMs(until, 'until') < boundMs(from, 'from'))
    throw new InvalidRecordError(
      `the user ${JSON.stringify(id.slice(0, 64))} would be valid until ${until}, before it is valid from ${from}`,
    )
}

/** An upper estimate of a record's encoded size, in bytes. */
export function recordBytes(fields: Readonly<Record<string, unknown>>): number {
  let total = 0
  const visit = (value: unknown): void => {
    if (value instanceof Uint8Array) total += value.byteLength + 5
    else if (typeof value === 'string') total += value.length * 3 + 5
    else if (Array.isArray(value)) for (const item of value) visit(item)
    else if (typeof value === 'object' && value !== null) {
      for (const [k, v] of Object.entries(value)) {
        total += k.length + 1
        visit(v)
      }
    } else total += 9
  }
  visit(fields)
  return total
}
