/**
 * The JSON API's encoding of values (server-peer/http-api.ts), in a module
 * of its own so that the CLI can read the API's answers without loading the
 * server.
 */
import { excerpt, InvalidRecordError } from '../core/errors.js'

/** JSON with byte arrays as `{ base64 }`. */
export function toWire(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    v instanceof Uint8Array ? { base64: Buffer.from(v).toString('base64') } : v,
  )
}

/** Turns `{ base64 }` objects back into byte arrays. */
export function fromWire(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(fromWire)
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value)
    if (entries.length === 1 && entries[0]?.[0] === 'base64' && typeof entries[0][1] === 'string') {
      const text = entries[0][1]
      const bytes = Buffer.from(text, 'base64')
      // Node skips what is not base64: "!!!!" would be no bytes (a vacant
      // field), "AQ=ID@@" one byte. Only the text the bytes encode back to.
      if (bytes.toString('base64') !== text)
        throw new InvalidRecordError(`${excerpt(text, 32)} is not base64 (RFC 4648, padded)`)
      return new Uint8Array(bytes)
    }
    return Object.fromEntries(entries.map(([k, v]) => [k, fromWire(v)]))
  }
  return value
}
