/**
 * The requests of a session waiting for their answer (SyncSession.requestSync),
 * oldest first, matched to answers by arrival order. An answer is the other
 * side's step 1 (what it holds) and the step 2 after it (what this side
 * lacked, durable here before it counts).
 *
 * A step 2 that arrives before its step 1 (a network that reorders, as the
 * simulator's does; a real connection never does) marks the oldest request
 * "overtaken", and the step 1 that follows completes it at once: otherwise
 * that request would wait for a step 2 that already came, until its timeout.
 */
import * as Y from 'yjs'
import { withoutStack } from '../../core/errors.js'
import type { SyncAnswer } from '../sync-session.js'

interface Waiter {
  readonly resolve: (answer: SyncAnswer) => void
  readonly reject: (error: Error) => void
  /** Filled by the other side's step 1; its step 2 then completes the answer. */
  answer?: SyncAnswer
  /** A step 2 arrived before the step 1: the step 1 completes the answer. */
  overtaken?: true
  /** The most operations a step 1 of the other side said its answer brings (see answerSize). */
  size?: number
}

/** See the module comment. */
export class AnswerWaiters {
  readonly #waiting: Waiter[] = []

  get size(): number {
    return this.#waiting.length
  }

  /** True when the oldest request's answer began: its step 1 came, its step 2 not yet. */
  get answering(): boolean {
    return this.#waiting[0]?.answer !== undefined
  }

  /**
   * The operations the oldest request's answer brings, as the other side's
   * step 1 stated them (0 before one came).
   */
  get answerSize(): number {
    return this.#waiting[0]?.size ?? 0
  }

  /** A request was sent: resolved (or rejected) when its answer completes (or the link closes). */
  add(resolve: (answer: SyncAnswer) => void, reject: (error: Error) => void): void {
    this.#waiting.push({ resolve, reject })
  }

  /**
   * The other side's step 1 arrived (and was answered): it belongs to the
   * oldest request without one. `size`: the operations its answer brings
   * (what this side lacks of the state the step 1 states).
   */
  step1(answer: SyncAnswer, size = 0): void {
    const waiting = this.#waiting
    const waiter = waiting.find((w) => w.answer === undefined)
    if (waiter === undefined) return
    waiter.answer = answer
    // Kept when asked again: the answer to the new step 1 is as large.
    waiter.size = Math.max(waiter.size ?? 0, size)
    // Its step 2 came first and is durable already.
    if (waiter.overtaken === true && waiter === waiting[0]) waiting.shift()?.resolve(answer)
  }

  /** The other side's step 2 is durable here: it completes the oldest request. */
  step2(): void {
    const first = this.#waiting[0]
    if (first === undefined) return
    if (first.answer !== undefined) this.#waiting.shift()?.resolve(first.answer)
    else first.overtaken = true
  }

  /**
   * Step 1 goes again (SyncSession.askAgain): a half answer (a step 1
   * whose step 2 never came, or the reverse) is dropped, and the answer to
   * the new step 1 pairs whole.
   */
  askingAgain(): void {
    for (const w of this.#waiting) {
      delete w.answer
      delete w.overtaken
    }
  }

  /** The link closed: every request fails. */
  rejectAll(): void {
    const pending = this.#waiting.splice(0)
    if (pending.length === 0) return
    // One stackless error for every waiter (a stack shows only this teardown).
    const closed = withoutStack(() => new Error('connection closed'))
    for (const w of pending) w.reject(closed)
  }
}

/**
 * The state vectors of this side's step 1s on a link whose other side
 * sends a step 1 only to begin an answer (a device's server link: the
 * server never asks first), oldest first: each answer's step 1 is matched
 * to the oldest one not answered (SyncAnswer.asked). The other side may
 * answer only the last of several step 1s waiting with it (a server
 * answering a flood once); a step 1 is then matched to an older vector
 * than the one it answers, never a newer one. Past `max` vectors waiting,
 * the matching is given up for the connection (a vector not kept would
 * make a later one stand for it).
 */
export class AskedVectors {
  readonly #sent: Uint8Array[] = []
  #lost = false

  constructor(private readonly max = 64) {}

  /** This side sent a step 1 stating `vector`. */
  sent(vector: Uint8Array): void {
    if (this.#sent.length >= this.max) this.#lost = true
    if (!this.#lost) this.#sent.push(vector)
  }

  /** The other side's step 1 came: the vector it answers, if known. */
  answered(): Uint8Array | undefined {
    const vector = this.#sent.shift()
    return this.#lost ? undefined : vector
  }
}

/**
 * Operations of the state `theirs` that `doc` lacks (Yjs clock units): what
 * an answer to a step 1 stating `theirs` brings (AnswerWaiters.answerSize).
 */
export function lacking(doc: Y.Doc, theirs: ReadonlyMap<number, number>): number {
  let missing = 0
  for (const [client, clock] of theirs)
    missing += Math.max(0, clock - Y.getState(doc.store, client))
  return missing
}
