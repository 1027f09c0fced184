/**
 * A full sync's wipe (SEMANTICS.md, "Full sync": push, then clear, then
 * fetch): staged only if this device wrote nothing since the server
 * acknowledged its push, else it pushes again. A device enrolling in a
 * burst wrote after every push, and its full sync failed (`wipe skipped`;
 * a black-box probe: 3 rounds in 10): from the second push on, its own
 * writes are held in the write queue (remote updates still apply), as they
 * are anyway while the roster is fetched, and go once it is back (the
 * staged wipe's commit or abandon ends the hold).
 */
import * as Y from 'yjs'
import { WipeSkippedError, type Replica } from '../replica.js'
import type { SyncAnswer } from '../sync-session.js'
import { PUSH_ROUNDS_MAX } from './sync-errors.js'

/**
 * Stages the wipe once the server holds every own change (`acknowledged`,
 * then each answer of `pushAgain`); rejects as the wipe or the push did
 * when it cannot (a generation move staged meanwhile, the rounds spent).
 */
export async function stageFullSyncWipe(
  replica: Replica,
  acknowledged: SyncAnswer,
  pushAgain: () => Promise<SyncAnswer>,
): Promise<void> {
  let pushed = acknowledged
  let held = false
  for (let attempt = 1; ; attempt++) {
    const theirs = pushed.theirs
    try {
      await replica.wipe({
        local: false,
        deletes: true,
        staged: true,
        writesHeld: held,
        onlyIf: (doc) => (theirs.get(doc.clientID) ?? 0) >= Y.getState(doc.store, doc.clientID),
      })
      return
    } catch (error) {
      // (Refused because a move was staged meanwhile: this round fails; the
      // round the hello queued stages the move again and completes it.)
      const again = error instanceof WipeSkippedError && !replica.movingGeneration
      if (!again || attempt >= PUSH_ROUNDS_MAX) {
        if (held) replica.releaseWrites()
        throw error
      }
      if (!held) {
        held = true
        replica.holdWrites()
      }
      try {
        pushed = await pushAgain()
      } catch (pushError) {
        replica.releaseWrites()
        throw pushError
      }
    }
  }
}
