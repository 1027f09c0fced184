/**
 * Tables for a terminal. A user's fields come from anyone who may write
 * them (the administrator, a device's fill the server adopted), and only
 * ids forbid control characters: printed raw, an escape sequence in a name
 * would drive the operator's terminal (clear it, retitle it, recolour what
 * follows), a newline would forge a row and a bidi override would reorder
 * what the eye reads. Every cell is shown with those characters escaped.
 */

/** C0 and C1 controls, DEL, and the Unicode bidi controls and marks. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g

const escape = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`

/** `text` with every character that would act on a terminal written as `\uXXXX`. */
export function terminalSafe(text: string): string {
  return text.replace(UNSAFE, escape)
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
