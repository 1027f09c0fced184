/**
 * A fresh Yjs document, as every peer makes them.
 *
 * `new Y.Doc()` draws a random `guid` (lib0's `uuidv4`: 31 separate calls
 * into WebCrypto), which Yjs reads only for subdocuments. rostersync has no
 * subdocuments (core/authorize.ts refuses the content that would carry
 * one), so its documents share one guid and skip the draw: a device makes a
 * document on every open, wipe and generation switch, and the simulator
 * makes thousands (0.7% of its CPU went to the draw).
 */
import * as Y from 'yjs'

/** The guid every rostersync document carries (never read: no subdocuments). */
const DOC_GUID = 'rostersync'

/** A fresh document with garbage collection on (Yjs's default). */
export function newDoc(): Y.Doc {
  return new Y.Doc({ gc: true, guid: DOC_GUID })
}
