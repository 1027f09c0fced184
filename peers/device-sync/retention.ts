/**
 * What a retention wipe's `roster-wiped` event says (README, "Retention"):
 * how long the device was unused, why the push before it failed, and what
 * became of the changes its server lacked (./retained.ts). During an
 * outage the failed push logs no `sync-failed` of its own (one per
 * outage), and a saved edit went with the roster without a word (a probe).
 */
import { clip } from '../../core/errors.js'
import { durationText } from '../../core/duration-text.js'
import type { Replica, WipeOptions } from '../replica.js'
import type { Persisted } from './types.js'
import { retainedRecords } from './retained.js'
import { holdsUnsent } from './unsent.js'
import { refusedError } from './sync-errors.js'

/**
 * What became of this device's changes its server lacked at the wipe:
 * none were left, they were kept (./retained.ts), or they went with it.
 */
export type Unsent = 'none' | 'kept' | 'lost'

const UNSENT: Record<Unsent, string> = {
  none: '',
  kept: "this device's changes the server lacked are kept, shown nowhere, and go to it after the next full sync",
  lost: "what the server lacked of this device's changes is gone",
}

/** The event: unused for `retentionMs`, then `note` if any, then what became of unsent changes. */
export function wipeEvent(
  retentionMs: number,
  note: string | undefined,
  unsent: Unsent = 'none',
): { readonly type: 'roster-wiped'; readonly message: string } {
  const unused = `unused for ${durationText(retentionMs)} (retention)`
  const message = [unused, note, UNSENT[unsent]].filter((part) => part !== undefined && part !== '')
  return { type: 'roster-wiped', message: message.join('; ') }
}

/** The push before the wipe failed with `error`. */
export function pushFailedNote(error: unknown): string {
  const { code, message } = error as { code?: string; message?: string }
  return `the push before it failed (${clip(`${code ?? 'SYNC_FAILED'}: ${message ?? String(error)}`, 160)})`
}

/** No push was made: the server refuses this device (what it lacked is not kept: it never will take it). */
export const REFUSED_NOTE = 'no push, the server refuses this device'

/**
 * The retention wipe of `replica`, whose sync record is `record`, with its
 * server `link` (undefined: no server). Own changes the server lacks are
 * kept (./retained.ts) unless nothing can ever take them: no server, or one
 * that revoked this device (another refusal, a wrong site key say, may be
 * set right: a review); the event says which.
 */
export function wipeOptions(
  replica: Replica,
  record: readonly [string, string, Persisted],
  link: { readonly state: string; readonly reason?: string | undefined } | undefined,
  note: string | undefined,
  retentionMs: number,
): WipeOptions {
  const acked = record[2].acked
  const unsent = holdsUnsent(replica, acked)
  const revoked =
    link?.state === 'refused' &&
    refusedError(link.reason?.replace(/^\d+: /, '')).code === 'PEER_REVOKED'
  const keep = unsent && link !== undefined && !revoked
  return {
    local: true,
    event: wipeEvent(retentionMs, note, keep ? 'kept' : unsent ? 'lost' : 'none'),
    // The kept entries are read right before the wipe, after every write queued earlier.
    records: (doc) => [record, ...(keep ? retainedRecords(replica, doc, acked) : [])],
  }
}
