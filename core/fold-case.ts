/** Case folding for the admin searches (users, devices). */

/**
 * `text` case-folded for a case-insensitive match: lower case (composed
 * forms first, NFC), then the folds lower-casing alone misses: `ß` (and
 * `ẞ`, which lower-cases to it) as `ss`, final sigma as sigma, Turkish
 * dotless `ı` as `i`, and the dot `İ` keeps after lower-casing dropped (a
 * probe: `STRASSE` missed "Hauptstraße", `ilker` missed "İlker"). ASCII
 * text is only lower-cased.
 */
export function foldCase(text: string): string {
  const lower = text.toLowerCase()
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(lower)) return lower
  return text
    .normalize('NFC')
    .toLowerCase()
    .replace(/ß|ς|ı|\u0307/g, (c) => FOLDS[c] ?? c)
}

const FOLDS: Readonly<Record<string, string>> = { ß: 'ss', ς: 'σ', ı: 'i', '\u0307': '' }
