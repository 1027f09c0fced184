/**
 * Where a mutant's edits go. A mutant names a snippet of source text, not a
 * line number or a file: the snippet is looked for in every product file, so
 * the list survives code moving between files (the replica split) as long
 * as the snippet itself is moved verbatim. A snippet that matches no place,
 * or more than one, is an error that says the list needs updating.
 */

/** The folders a snippet is looked for in (the product, not its tests). */
export const PRODUCT_DIRS = ['core', 'peers', 'server-peer', 'storage', 'transports', 'sim']

/** One deliberate change: `find` (exact text) becomes `replace`. */
export interface Edit {
  /** Exact, distinctive source text: a line or a few, indentation included. */
  readonly find: string
  readonly replace: string
  /** Where to look first (a path from the project root); the rest is searched if it is not there. */
  readonly file?: string
}

/** A snippet that matches no place or more than one: the mutant list needs updating. */
export class SnippetError extends Error {
  constructor(
    readonly mutant: string,
    message: string,
  ) {
    super(
      `mutant ${mutant}: ${message}. The code changed under the mutant list: update ` +
        `scripts/mutants/list.ts (docs/MUTANTS.md, "When a snippet is not found").`,
    )
    this.name = 'SnippetError'
  }
}

/** Where a snippet is: the file and the character offset. */
export interface Place {
  readonly file: string
  readonly at: number
}

function occurrences(text: string, snippet: string): number[] {
  const found: number[] = []
  for (let at = text.indexOf(snippet); at >= 0; at = text.indexOf(snippet, at + 1)) found.push(at)
  return found
}

const firstLine = (snippet: string): string =>
  JSON.stringify(snippet.trim().split('\n')[0]?.trim() ?? '')

/**
 * The one place of `edit.find` among `files` (path → text): in the hinted
 * file when it holds it, else anywhere. Throws {@link SnippetError} on no
 * match or on more than one (in the hinted file, or over all files).
 */
export function locate(mutant: string, edit: Edit, files: ReadonlyMap<string, string>): Place {
  if (edit.find.trim() === '') throw new SnippetError(mutant, 'an edit has an empty snippet')
  if (edit.file !== undefined) {
    const text = files.get(edit.file)
    const inHint = text === undefined ? [] : occurrences(text, edit.find)
    if (inHint.length > 1) {
      throw new SnippetError(
        mutant,
        `the snippet ${firstLine(edit.find)} is in ${edit.file} ${inHint.length} times`,
      )
    }
    const at = inHint[0]
    if (at !== undefined) return { file: edit.file, at }
  }
  const places: Place[] = []
  for (const [file, text] of files)
    for (const at of occurrences(text, edit.find)) places.push({ file, at })
  const only = places[0]
  if (only === undefined) {
    throw new SnippetError(mutant, `the snippet ${firstLine(edit.find)} is in no product file`)
  }
  if (places.length > 1) {
    const where = [...new Set(places.map((p) => p.file))].join(', ')
    throw new SnippetError(
      mutant,
      `the snippet ${firstLine(edit.find)} matches ${places.length} places (${where}): make it longer`,
    )
  }
  return only
}

/**
 * Applies `edits` in order, each located in the text as the earlier ones
 * left it. Returns the changed files (path → new text); `files` is not
 * modified. An edit whose replacement equals its snippet is refused: it
 * would be a mutant that changes nothing.
 */
export function applyEdits(
  mutant: string,
  edits: readonly Edit[],
  files: ReadonlyMap<string, string>,
): Map<string, string> {
  if (edits.length === 0) throw new SnippetError(mutant, 'it has no edits')
  const current = new Map(files)
  const changed = new Map<string, string>()
  for (const edit of edits) {
    if (edit.find === edit.replace) throw new SnippetError(mutant, 'an edit changes nothing')
    const place = locate(mutant, edit, current)
    const text = current.get(place.file) as string
    const next = text.slice(0, place.at) + edit.replace + text.slice(place.at + edit.find.length)
    current.set(place.file, next)
    changed.set(place.file, next)
  }
  return changed
}
