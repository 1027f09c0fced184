/**
 * The names of a Yjs document's root types, for readers of a transaction's
 * `changed` and of an update's parents (which name types, not roots).
 *
 * Yjs keeps roots by name only (`doc.share`), and a server has a root per
 * device: walking them for each root a transaction changed was a tenth of
 * what the server allocated under the load bench, and building the map per
 * check a tenth of its update check. Kept per document, only ever built
 * from `doc.share` itself, and rebuilt on a miss: a new root, and also a
 * root Yjs replaced. An update that reaches a root no one has read yet
 * makes Yjs create it as a placeholder, which the first typed read
 * (`getMap`) replaces in `doc.share` with a typed root, the count of roots
 * unchanged (the admin search's cache, keyed on that count, then missed
 * every later change of that device's part). A replaced placeholder keeps
 * its entry, under its true name, until the next miss.
 */
import type * as Y from 'yjs'

const namesByDoc = new WeakMap<Y.Doc, Map<unknown, string>>()

/** The name of root `type` of `doc`, or undefined if it is none of its roots. */
export function rootNameOf(doc: Y.Doc, type: unknown): string | undefined {
  let names = namesByDoc.get(doc)
  const cached = names?.get(type)
  if (cached !== undefined) return cached
  names = new Map()
  for (const [name, shared] of doc.share) names.set(shared, name)
  namesByDoc.set(doc, names)
  return names.get(type)
}
