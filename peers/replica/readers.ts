/**
 * What a peer's readers (`users.get`, `users.list`) are shown: the views of
 * its document, except while a staged wipe (a full sync's, a move to
 * another generation) waits for the roster it fetches. Then they are the
 * views of the document it emptied, which the store still holds, taken as
 * it is emptied. Before, a device showed no user at all for the length of
 * the fetch (a black-box probe: 3,000 users gone for 50-150 ms; a terminal
 * refused every badge then).
 */
import type { UserId } from '../../core/ids.js'
import type { UserView } from '../../core/resolve.js'
import type { ReplicaDocument } from './document.js'

export class Readers {
  private frozen: Map<UserId, UserView> | undefined

  constructor(
    private readonly document: ReplicaDocument,
    /** Whether a staged wipe lasts (UpdateLog.stagedWipe). */
    private readonly staged: () => boolean,
  ) {}

  /** The document is about to be emptied by a staged wipe: keep its views. */
  freeze(): void {
    this.frozen = new Map(this.document.list().map((view) => [view.id, view]))
  }

  /** The frozen views while the staged wipe lasts, else undefined. */
  private held(): Map<UserId, UserView> | undefined {
    if (this.frozen !== undefined && !this.staged()) this.frozen = undefined
    return this.frozen
  }

  /** The view of one user, or undefined. */
  view(id: UserId): UserView | undefined {
    const frozen = this.held()
    return frozen === undefined ? this.document.view(id) : frozen.get(id)
  }

  /** The views of all users, ordered by id. */
  list(): UserView[] {
    const frozen = this.held()
    return frozen === undefined ? this.document.list() : [...frozen.values()]
  }
}
