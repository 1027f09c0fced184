/**
 * "Vacant" is the pivot of rule 2: a device may fill a field only where the
 * server's is vacant. A field is vacant when it is absent, null, the empty
 * string, an empty list or an empty byte string.
 */
export function isVacant(value: unknown): boolean {
  if (value === undefined || value === null || value === '') return true
  if (Array.isArray(value)) return value.length === 0
  if (value instanceof Uint8Array) return value.byteLength === 0
  return false
}
