/**
 * A replica's answers to other peers' step 1s: the parts of each (made as
 * links ask for them and shared through the answer cache:
 * peers/replica/answer-stream.ts, peers/replica/answer-cache.ts) and the
 * turns that costly ones of untrusted peers take
 * (peers/replica/answer-turns.ts).
 */
import type { Clock } from '../../core/clock.js'
import { limits, netLimits } from '../../core/limits.js'
import { systemClock } from '../system-clock.js'
import type { AnswerStream } from './answer-stream.js'
import { AnswerBandwidth } from './answer-bandwidth.js'
import { AnswerTurns, holdsNothing } from './answer-turns.js'
import type { ReplicaDocument } from './document.js'

/**
 * The real clock's pause between two turns of costly answers (AnswerTurns):
 * as long as the turn took, at most `limits.answerTurnPauseMsMax`, so that
 * answers take at most about half of the event loop while others wait; one
 * poll for I/O at least.
 */
function answerPause(fn: () => void, turnMs: number): void {
  const pause = Math.min(turnMs, limits.answerTurnPauseMsMax)
  if (pause < 1) setImmediate(fn)
  else setTimeout(fn, pause)
}

/** An answer's turn (ReplicaAnswers.turn). */
export interface AnswerTurn {
  /** Ends it (call it once the answer is queued). */
  readonly end: () => void
  /**
   * Whether it holds the turn (false: the answer became cheap, or came in
   * the cache, while it waited): only then may the answer be made now, up
   * to `ReplicaAnswers.deadline()`.
   */
  readonly held: boolean
}

/** A replica's answers (see the module comment). */
export class ReplicaAnswers {
  private readonly turns: AnswerTurns
  /** The bytes of answers to untrusted peers (peers/replica/answer-bandwidth.ts). */
  readonly bandwidth: AnswerBandwidth

  constructor(
    private readonly document: ReplicaDocument,
    clock: Clock,
    /** `ReplicaOptions.answerChunkBytesMax`. */
    private readonly chunkBytesMax: number | undefined,
  ) {
    // The next turn: the event loop's (after its poll for I/O) on the real
    // clock; on an injected one (the simulator, a test's), after the
    // pending continuations (nothing may wait for the real event loop
    // there, sim/scheduler.ts, nor for a timer the test never runs).
    this.turns =
      clock === systemClock
        ? new AnswerTurns(answerPause, limits.answerTurnSliceMs)
        : new AnswerTurns((fn) => queueMicrotask(fn), 0)
    this.bandwidth = new AnswerBandwidth(() => clock.now(), clock === systemClock)
  }

  /**
   * What a peer at `stateVector` lacks, as updates to send in order, one
   * message each, each within `answerChunkBytesMax` with its message
   * (ReplicaDocument.answerParts; the same stream while the document does
   * not change, each part made when first asked for; the caller reads it
   * until `unread()`). Read it inside whenDurable. Made lazily, in turns
   * (`made`), when made now and bringing `lazyFrom` operations or more.
   */
  parts(stateVector: Uint8Array, lazyFrom = Infinity): AnswerStream {
    return this.document.answerParts(stateVector, this.partBytesMax(), lazyFrom)
  }

  /**
   * Waits for an untrusted peer's answer's turn when it costs
   * (`limits.answerTurnCostMin` operations or more, not in the answer
   * cache: peers/replica/answer-turns.ts); resolves with the function that
   * ends the turn once the answer is made, or undefined when the answer
   * needs no turn. `theirs` is the peer's state vector, decoded; `who` the
   * peer (its device id: the least recently served goes first). A waiter
   * goes without a turn once its answer is in the cache (a lookup by its
   * key, not a new walk of the document per waiter and answer). An
   * answer made in its turn is made lazily (`parts(sv, 0)`), up to
   * `deadline()`; the rest of it in later turns (`made`). An untrusted
   * peer's answer not in turn is made lazily too when it costs by the
   * time it is made (`parts(sv, limits.answerTurnCostMin)`): the cache
   * may have let it go meanwhile.
   */
  async turn(theirs: ReadonlyMap<number, number>, who: string): Promise<AnswerTurn | undefined> {
    const { operations, kept } = this.document.answerCost(theirs, this.partBytesMax())
    if (operations < limits.answerTurnCostMin) return undefined
    const end = await this.turns.take(who, () => !kept())
    return { end, held: end !== holdsNothing }
  }

  /** Until when (performance.now()) the answer holding the turn may be made (AnswerTurns.deadline). */
  deadline(): number {
    return this.turns.deadline()
  }

  /**
   * Makes `stream` (a lazy answer: AnswerStream.lazy) until part `index`
   * is ready, in turns, for the untrusted peer `who` reading it: resolves
   * once it is, or once no link reads it any more. Answers begun go
   * before those waiting for their first turn (AnswerTurns).
   *
   * A change that cuts it (AnswerStream.cut) does not send it to the back
   * of the line: in its turn its rest is resumed and a slice of it made in
   * one go, inside `durable` (Replica.whenDurable: at once, or once the
   * batch of this peer's own being stored is; the turn is held
   * meanwhile). Leaving the line at each cut let writes every 50 ms keep
   * answers from finishing while a dozen took turns, and a turn that only
   * resumed it, under writes back to back, found it cut again at its next.
   */
  async made(
    stream: AnswerStream,
    index: number,
    who: string,
    durable: (read: () => void) => Promise<void>,
  ): Promise<void> {
    const waits = (): boolean => !stream.ready(index) && stream.readers > 0
    while (waits()) {
      const end = await this.turns.take(who, waits, stream.started)
      try {
        if (!stream.needsResume) {
          if (waits()) this.slice(stream, index, this.turns.deadline())
          continue
        }
        await durable(() => {
          this.turns.restartTurn()
          stream.resume()
          if (waits()) this.slice(stream, index, this.turns.deadline())
        })
      } finally {
        end()
      }
    }
  }

  /**
   * A turn's slice of `stream` (held by its caller), until `deadline`:
   * part `index`, then on toward its end while the slice lasts.
   */
  slice(stream: AnswerStream, index: number, deadline: number): void {
    if (stream.work(index, deadline)) stream.workOn(deadline)
  }

  /** Answers that waited for a turn and got it (AnswerTurns.granted; tests). */
  get turnsGranted(): number {
    return this.turns.granted
  }

  /** How many large answers were encoded rather than taken from the cache (AnswerCache.encodes). */
  get encoded(): number {
    return this.document.answersEncoded
  }

  private partBytesMax(): number {
    const max = this.chunkBytesMax ?? netLimits.answerChunkBytesMax
    return Math.max(1, max - netLimits.answerChunkOverheadBytesMax)
  }
}
