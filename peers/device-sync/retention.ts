/**
 * What a retention wipe's `roster-wiped` event says (README, "Retention"):
 * how long the device was unused and, when its changes may have gone with
 * the roster, why. During an outage the failed push before the wipe logs
 * no `sync-failed` of its own (one per outage), and a saved edit went with
 * the roster without a word (a probe).
 */
import { clip } from '../../core/errors.js'
import { durationText } from '../../core/duration-text.js'

/** The event: unused for `retentionMs`, then `note` if any. */
export function wipeEvent(
  retentionMs: number,
  note: string | undefined,
): { readonly type: 'roster-wiped'; readonly message: string } {
  const unused = `unused for ${durationText(retentionMs)} (retention)`
  return { type: 'roster-wiped', message: note === undefined ? unused : `${unused}; ${note}` }
}

const LOST = "what the server lacked of this device's changes is gone"

/** The push before the wipe failed with `error`. */
export function pushFailedNote(error: unknown): string {
  const { code, message } = error as { code?: string; message?: string }
  return `the push before it failed (${clip(`${code ?? 'SYNC_FAILED'}: ${message ?? String(error)}`, 160)}): ${LOST}`
}

/** No push was made: the server refuses this device. */
export const REFUSED_NOTE = `no push, the server refuses this device: ${LOST}`
