/** Counting a document's operations, for tests that bound time by them. */
import * as Y from 'yjs'

/** Operations in `doc`: the sum of its state vector's clocks (what a fresh peer lacks of it). */
export function operationsOf(doc: Y.Doc): number {
  let n = 0
  for (const clock of Y.decodeStateVector(Y.encodeStateVector(doc)).values()) n += clock
  return n
}
