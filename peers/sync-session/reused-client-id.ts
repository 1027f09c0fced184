/**
 * A peer's step 1 claiming more of this replica's clientID than it holds
 * (peers/sync-session.ts answers every step 1 through it): this data
 * directory was restored from a backup (or copied) after that clientID
 * wrote more.
 */
import * as Y from 'yjs'
import { ImplausibleStateVectorError } from '../../core/errors.js'
import type { Replica } from '../replica.js'

/**
 * ClientIDs each replica minted because a peer's step 1 said it knew more
 * of the one before: nobody else can know anything of those, so a second
 * such claim is a lie, and obeying it would mint a clientID per message.
 */
const mintedOnClaim = new WeakMap<Replica, Set<number>>()

/**
 * The other side knows more operations of our clientID than we have:
 * writing on with it would mint ids that already exist elsewhere with
 * other content, so take a fresh one now. Once per loaded clientID: a
 * claim about one minted here because of such a claim is a lie
 * (`IMPLAUSIBLE_STATE_VECTOR`).
 */
export async function renewIfReused(replica: Replica, theirs: Map<number, number>): Promise<void> {
  const id = replica.doc.clientID
  const claimed = theirs.get(id) ?? 0
  const held = Y.getState(replica.doc.store, id)
  if (claimed <= held) return
  const minted = mintedOnClaim.get(replica) ?? new Set<number>()
  if (minted.has(id)) throw new ImplausibleStateVectorError(id, claimed, held)
  await replica.renewClientId()
  minted.add(replica.doc.clientID)
  mintedOnClaim.set(replica, minted)
}
