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

  constructor(private readonly document: ReplicaDocument) {}

  /** The document is about to be emptied by a staged wipe: keep its views. */
  freeze(): void {
    this.frozen = new Map(this.document.list().map((view) => [view.id, view]))
  }

  /**
   * The document readers get is whole again: the staged wipe's commit, or
   * the stored state installed again (an abandon, a rollback). Not before
   * that install: a reload reads the store first, with the staged document
   * still in memory (a review).
   */
  thaw(): void {
    this.frozen = undefined
  }

  /** The view of one user, or undefined. */
  view(id: UserId): UserView | undefined {
    return this.frozen === undefined ? this.document.view(id) : this.frozen.get(id)
  }

  /** The views of all users, ordered by id. */
  list(): UserView[] {
    return this.frozen === undefined ? this.document.list() : [...this.frozen.values()]
  }
}
