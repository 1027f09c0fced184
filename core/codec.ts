/**
 * Binary encoding of plain values (objects, arrays, strings, numbers,
 * booleans, null, byte arrays) with lib0's `any` codec: the same encoding Yjs
 * uses for map values, so templates and photos round-trip without base64.
 */
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { readAnyValue } from './any-reader.js'
import { MalformedMessageError } from './errors.js'

/** Encodes a plain value. */
export function encodeValue(value: unknown): Uint8Array {
  const encoder = encoding.createEncoder()
  encoding.writeAny(encoder, value as Parameters<typeof encoding.writeAny>[1])
  return encoding.toUint8Array(encoder)
}

/** Decodes a value written by `encodeValue`; throws `MalformedMessageError` on bad bytes. */
export function decodeValue(bytes: Uint8Array): unknown {
  try {
    const decoder = decoding.createDecoder(bytes)
    const value: unknown = readAnyValue(decoder)
    if (decoding.hasContent(decoder)) throw new Error('trailing bytes')
    return value
  } catch (cause) {
    throw new MalformedMessageError('value does not decode', cause)
  }
}

/**
 * Encodes a state vector (client -> clock) in the layout of
 * `Y.encodeStateVector`: the count, then client and clock pairs.
 */
export function encodeStateVectorMap(vector: ReadonlyMap<number, number>): Uint8Array {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, vector.size)
  for (const [client, clock] of vector) {
    encoding.writeVarUint(encoder, client)
    encoding.writeVarUint(encoder, clock)
  }
  return encoding.toUint8Array(encoder)
}
