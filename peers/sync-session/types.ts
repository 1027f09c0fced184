/**
 * What a sync session (peers/sync-session.ts) gives its owner: the
 * running session, and the answers to its step 1s.
 */

/** What the other side holds, as its answer to our step 1 told us. */
export interface SyncAnswer {
  /** The other side's state vector, after it applied everything we sent before. */
  readonly theirs: Map<number, number>
  /** Our state vector when their step 1 was answered (what our step 2 covered). */
  readonly ours: Map<number, number>
  /**
   * Our state vector in the step 1 this answer answers, or an older one
   * of ours (AskedVectors); undefined when not known.
   */
  readonly asked?: Uint8Array | undefined
}

/** A running session. */
export interface SyncSession {
  /** True once the other side's step 2 is durable here. */
  readonly synced: boolean
  /** Resolves once every message received so far has been handled. */
  idle(): Promise<void>
  /**
   * Sends step 1 (our state vector) now. With a peer that answers step 1
   * with its own step 1 and then step 2 (the server), resolves with that
   * answer once its step 2 is durable here (our step 2 answering its step 1
   * has been sent by then); rejects when the connection closes first.
   */
  requestSync(): Promise<SyncAnswer>
  /**
   * Sends step 1 again for the requests still waiting for their answer
   * (their step 1 or a part of the answer was lost on the way): the next
   * answer to arrive settles them. Nothing when none waits or the
   * connection is closed.
   */
  askAgain(): void
  /** True when the oldest request's answer began (its step 1 came; its step 2 not yet). */
  readonly answering: boolean
  /** When a message last arrived on the connection (the replica's clock), or the session started. */
  readonly heardAt: number
  /** Operations the oldest request's answer brings (AnswerWaiters.answerSize; ServerExchange.answer). */
  readonly answerSize: number
  /**
   * Stops forwarding and rejects pending requestSync calls; the connection's
   * owner calls it when the connection closes (the connection stays as it is).
   */
  stop(): void
}
