/**
 * Tables for a terminal. A user's fields come from anyone who may write
 * them (the administrator, a device's fill the server adopted), and only
 * ids forbid control characters: printed raw, an escape sequence in a name
 * would drive the operator's terminal (clear it, retitle it, recolour what
 * follows), a newline would forge a row and a bidi override would reorder
 * what the eye reads. Every cell is shown with those characters escaped.
 */

/**
 * What a terminal acts on or reorders besides the C0 controls: DEL, the C1
 * controls, the line and paragraph separators, the bidi controls and marks.
 */
const ACTING = '\\u007f-\\u009f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069'
/** Those and the C0 controls. */
const UNSAFE = new RegExp(`[\\u0000-\\u001f${ACTING}]`, 'g')
/** Those without the C0 controls, which JSON.stringify escapes already. */
const UNSAFE_IN_JSON = new RegExp(`[${ACTING}]`, 'g')

const escape = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`

/** `text` with every character that would act on a terminal written as `\uXXXX`. */
export function terminalSafe(text: string): string {
  return text.replace(UNSAFE, escape)
}

/**
 * JSON text (JSON.stringify's) with the characters it leaves raw that a
 * terminal acts on written as `\uXXXX`: they can only stand inside strings,
 * where the escape means the same.
 */
export function terminalSafeJson(json: string): string {
  return json.replace(UNSAFE_IN_JSON, escape)
}

/** One cell: a string as it is (escaped), anything else as JSON, nothing as empty. */
function cell(value: unknown, json: (v: unknown) => string): string {
  if (value === undefined) return ''
  return terminalSafe(typeof value === 'string' ? value : json(value))
}

/**
 * Prints `rows` (objects) under `columns`, each column as wide as its widest
 * cell, then a count line (`3 user(s)`).
 */
export function printTable<T>(
  columns: readonly (keyof T & string)[],
  rows: readonly T[],
  noun: string,
  json: (v: unknown) => string,
): void {
  const cells = rows.map((row) => columns.map((c) => cell(row[c], json)))
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => (r[i] ?? '').length)))
  console.log(columns.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  '))
  for (const row of cells) console.log(row.map((v, i) => v.padEnd(widths[i] ?? 0)).join('  '))
  console.log(`${rows.length} ${noun}(s)`)
}
