/**
 * Branded identifiers. A `UserId` and a `WriterId` are both strings on the
 * wire; the brands stop one being passed where the other is meant.
 */
declare const userIdBrand: unique symbol
declare const writerIdBrand: unique symbol

/** The id of a user record. */
export type UserId = string & { readonly [userIdBrand]: true }
/** The id of a writer: `server` or a device id. */
export type WriterId = string & { readonly [writerIdBrand]: true }
/** A device id is a writer id other than `server`. */
export type DeviceId = WriterId

/** The server's writer id. */
export const SERVER_ID = 'server' as WriterId

/** Brands a string already validated as a user id. */
export const asUserId = (id: string): UserId => id as UserId
/** Brands a string already validated as a writer id. */
export const asWriterId = (id: string): WriterId => id as WriterId

// Issue 11: front door

/**
 * What a device id may look like: a letter or digit, then letters, digits
 * and `.`, `_`, `:`, `-`. Ids travel in join URLs, registry keys and the
 * Yjs root map names, so they are plain ASCII: no case folding, no Unicode
 * look-alikes, and compared exactly as stored.
 */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/

/**
 * The key under which ids that differ only by case collide. The server
 * refuses a device id whose fold equals a taken id's (the server's, or a
 * registered device's) unless it is that very id: `T-1` and `t-1` are one
 * device to a person reading the registry, so they may not be two to the
 * server (a revoked `T-1` must not come back as `t-1`).
 */
export const idFold = (id: string): string => id.toLowerCase()

/** True for `server` in any case: reserved for the server peer. */
export const isReservedWriterId = (id: string): boolean => idFold(id) === idFold(SERVER_ID)

/**
 * Terminal escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL/ST`, and
 * two-byte `ESC x`), removed whole so that no half of one survives.
 */
/* eslint-disable no-control-regex -- matching control characters is the point */
const ANSI_ESCAPE = /\u001b(?:\[[0-?]*[ -/]*[@-~]|\][^\u0007\u001b]*(?:\u0007|\u001b\\)?|[@-_])/g
/**
 * Control characters (C0, DEL, C1) and the invisible bidirectional
 * overrides that make a name read differently from what it is.
 */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g
/* eslint-enable no-control-regex */

/**
 * A peer's free text (an error message it sends) as this peer shows and
 * logs it: escape sequences and control characters removed, at most
 * `charsMax` characters, the cut said. Only the first `charsMax * 16`
 * characters are read. A LAN peer's messages were logged whole, ANSI
 * escapes and all (a probe: 30 MB of events in 3 s).
 */
export function cleanText(text: string, charsMax: number): string {
  const scanned = charsMax * 16
  const cleaned = cleanLabel(text, charsMax + 1, scanned)
  if (cleaned.length <= charsMax && text.length <= scanned) return cleaned
  return `${cleanLabel(cleaned, charsMax)}… (cut)`
}

/**
 * A display label (device name, serial) as the registry keeps it: escape
 * sequences and control characters removed, whitespace trimmed, at most
 * `charsMax` characters (never half of a surrogate pair), from the first
 * `scanned` characters of `text`. A device chooses
 * its own name, and that name ends up in tables, logs and the admin page.
 */
export function cleanLabel(text: string, charsMax: number, scanned = charsMax * 4): string {
  // Cut first: a 10 MB name must not cost 10 MB of regex work.
  let label = text.slice(0, scanned)
  label = label.replace(ANSI_ESCAPE, '').replace(CONTROL, '').trim()
  if (label.length > charsMax) {
    label = label.slice(0, charsMax)
    if (/[\uD800-\uDBFF]$/.test(label)) label = label.slice(0, -1)
  }
  return label
}
