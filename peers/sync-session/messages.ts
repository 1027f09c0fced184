/**
 * The messages a session forwards, encoded once however many links send
 * them (peers/sync-session.ts).
 */
import { encodeMessage } from '../../core/protocol.js'

/**
 * The update message for a durable change, encoded once however many links
 * forward it (the server fans one change out to every connected device):
 * the replica tells every link of a change in one loop, so the last update
 * encoded is the one to keep.
 */
let lastUpdate: Uint8Array | undefined
let lastMessage: Uint8Array = new Uint8Array(0)
export function updateMessage(update: Uint8Array): Uint8Array {
  if (update !== lastUpdate) {
    lastMessage = encodeMessage({ type: 'sync-update', update })
    lastUpdate = update
  }
  return lastMessage
}

/**
 * The same for signed links: the server's links forward one array of
 * envelopes for a change (ServerSigning signs it once), encoded once.
 */
let lastEnvelopes: readonly Uint8Array[] | undefined
let lastSignedMessage: Uint8Array = new Uint8Array(0)
export function signedUpdateMessage(envelopes: readonly Uint8Array[]): Uint8Array {
  if (envelopes !== lastEnvelopes) {
    lastSignedMessage = encodeMessage({ type: 'signed-update', envelopes })
    lastEnvelopes = envelopes
  }
  return lastSignedMessage
}

export { partMessage } from './answer-messages.js'
