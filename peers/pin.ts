/**
 * PINs are stored hashed (SEMANTICS: `pin (stored hashed)`). A salted
 * SHA-256 keeps bulk enrolment fast; the salt makes equal PINs differ.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { PIN_HASH_PATTERN, PIN_PLAIN_PATTERN, type ParsedRecord } from '../core/schema.js'

/** Hashes a plain PIN as `sha256$<salt hex>$<digest hex>`. */
export function hashPin(pin: string, salt: Uint8Array = randomBytes(16)): string {
  const digest = createHash('sha256').update(salt).update(pin, 'utf8').digest('hex')
  return `sha256$${Buffer.from(salt).toString('hex')}$${digest}`
}

/** True when `pin` matches a stored hash. */
export function verifyPin(pin: string, stored: string): boolean {
  if (!PIN_HASH_PATTERN.test(stored)) return false
  const [, saltHex = '', digestHex = ''] = stored.split('$')
  const expected = Buffer.from(digestHex, 'hex')
  const actual = createHash('sha256')
    .update(Buffer.from(saltHex, 'hex'))
    .update(pin, 'utf8')
    .digest()
  return timingSafeEqual(expected, actual)
}

/** Replaces a plain PIN in a parsed record by its hash (hashes pass through). */
export function hashRecordPin(record: ParsedRecord): ParsedRecord {
  const pin = record.fields.pin
  if (typeof pin !== 'string' || !PIN_PLAIN_PATTERN.test(pin)) return record
  return { id: record.id, fields: { ...record.fields, pin: hashPin(pin) } }
}
