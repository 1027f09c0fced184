/** Case folding for the admin searches (users, devices). */

/**
 * `text` case-folded for a case-insensitive match: lower case, and the
 * folds lower-casing alone misses (`ß` and `ẞ` as `ss`, Turkish `İ` and
 * `ı` as `i`, final sigma as sigma; a probe: `STRASSE` missed
 * "Hauptstraße", `ilker` missed "İlker"), composed forms first (NFC).
 * ASCII text is only lower-cased.
 */
export function foldCase(text: string): string {
  const lower = text.toLowerCase()
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(lower)) return lower
  return text
    .normalize('NFC')
    .toUpperCase()
    .toLowerCase()
    .replace(/\u0307/g, '')
}
