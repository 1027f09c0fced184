/**
 * Copies of values crossing the public API, so that outside code never
 * holds an object the document holds.
 *
 * Yjs keeps a map entry's value as the JavaScript object it was given (and
 * `Y.Map#get` returns that same object): a view built from it shares its
 * arrays and bytes with the document. Changing such an array in place
 * changed the document in memory behind every check; the next write of the
 * user copied it into a new entry, stored and replicated it unvalidated,
 * and a full sync sent it to other devices. The same holds the other way:
 * bytes given to `users.put` were kept as they were, so changing them after
 * the put changed the stored record in memory only.
 *
 * So views, events and registry rows leave a peer as copies, and parsed
 * records enter it as copies. A copy of the values a roster holds (JSON-like
 * values and bytes) is cheap next to the write or the view it guards.
 */

/**
 * A deep copy of a JSON-like value that may hold bytes: arrays and plain
 * objects copied, every `Uint8Array` (a Node `Buffer` included) copied into
 * a plain `Uint8Array` of its own, anything else (strings, numbers,
 * booleans, null, undefined) as it is.
 */
export function detached<T>(value: T): T {
  if (typeof value !== 'object' || value === null) return value
  if (value instanceof Uint8Array) return new Uint8Array(value) as T
  if (Array.isArray(value)) return value.map(detached) as T
  const copy: Record<string, unknown> = {}
  for (const key of Object.keys(value)) {
    const item = detached((value as Record<string, unknown>)[key])
    // An own key named __proto__ (JSON.parse makes them) stays a key: an
    // assignment would set the copy's prototype instead.
    if (key === '__proto__')
      Object.defineProperty(copy, key, {
        value: item,
        enumerable: true,
        writable: true,
        configurable: true,
      })
    else copy[key] = item
  }
  return copy as T
}
