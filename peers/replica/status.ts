/**
 * Whether the replica still takes work: closed (by `close`), or broken (a
 * storage failure left memory unlike the store and reloading failed too).
 * One small object the rooms share, so that each asks the same question
 * rather than keeping a copy of the answer.
 */
import { PeerClosedError, StorageError } from '../../core/errors.js'

/** The replica's lifecycle flags. */
export class ReplicaStatus {
  /** Set first thing in close: a write made from then on is refused. */
  closed = false
  /** Set when a storage failure left memory unlike the store: every write is then refused. */
  broken: unknown = undefined

  /** The error a new write is refused with, or undefined when it may queue. */
  refusal(): Error | undefined {
    if (this.closed) return new PeerClosedError()
    if (this.broken !== undefined) return this.brokenError()
    return undefined
  }

  brokenError(): StorageError {
    return new StorageError(
      'the store failed and could not be reloaded; reopen the peer',
      this.broken,
    )
  }
}
