/**
 * Costly answers of untrusted peers, one at a time per replica, each in an
 * event-loop turn of its own (issue 11, "Amplification"). The answer cache
 * (peers/replica/answer-cache.ts) shares one encode among the peers that
 * ask the same, but a peer holding the site key can ask for something
 * different each time: 16 links, each within its own step-1 rate, naming a
 * different clock of the server's each time, had a 20k-user server encode
 * nearly the whole roster 16 times per slice of I/O, and held its event
 * loop up to 3.8 s (`npm run bench -- --only variants`). Answers that cost
 * (`limits.answerTurnClocksMin` operations or more, not in the cache) now
 * wait here: the first in line is answered, then the poll for I/O runs
 * (every link's messages, the HTTP API) before the next is granted. Waiting
 * is first come, first served; each link has at most one step 1 in hand
 * (its messages are handled one at a time), so the line is a round of
 * every asking link, and a flooding device gets one answer per round
 * however many step 1s it sends.
 *
 * Each waiter says whether its answer is still costly (`costly`): when an
 * answer is made, every waiter whose answer it was too (a restart's fresh
 * devices all ask with the empty state vector) now finds it in the cache,
 * and goes at once, before anything can change the document; so does one
 * whose answer became cheap while it waited.
 *
 * The next turn comes from `defer` (the replica's: on the real clock after
 * the poll for I/O and a pause as long as the answer before took, at most
 * `limits.answerTurnPauseMsMax`; with an injected clock, a microtask:
 * nothing of a simulation may wait for the real event loop,
 * sim/scheduler.ts, and a test's clock may never run a timer).
 *
 * Invariant: `busy` while an answer holds the turn or a grant is on its way
 * (`defer`); a granted waiter always releases (the session does it in a
 * finally); a waiter granted without a turn (no longer costly) holds
 * nothing.
 */

/** Ends an answer's turn; `busyMs`: how long the answer kept the event loop (the pause's length). */
export type EndTurn = (busyMs?: number) => void

interface Waiter {
  readonly costly: () => boolean
  readonly resolve: (end: EndTurn) => void
}

const holdsNothing: EndTurn = () => undefined

export class AnswerTurns {
  private waiting: Waiter[] = []
  private busy = false
  private grants = 0

  /**
   * `defer(fn, busyMs)` runs `fn` in a later turn of the event loop (see
   * above); `busyMs` is how long the answer before kept the loop.
   */
  constructor(private readonly defer: (fn: () => void, busyMs: number) => void) {}

  /** Answers granted a turn so far (tests count them). */
  get granted(): number {
    return this.grants
  }

  /** Answers waiting for their turn. */
  get size(): number {
    return this.waiting.length
  }

  /**
   * Resolves once it is this answer's turn, with the function that ends it
   * (call it once), or at once with one that holds nothing when the answer
   * is no longer `costly()` by then (see the module comment).
   */
  take(costly: () => boolean): Promise<EndTurn> {
    return new Promise((resolve) => {
      this.waiting.push({ costly, resolve })
      if (!this.busy) {
        this.busy = true
        this.grant()
      }
    })
  }

  /** Lets every waiter whose answer is no longer costly go, without a turn. */
  private sweep(): void {
    if (this.waiting.length === 0) return
    const stay: Waiter[] = []
    for (const waiter of this.waiting)
      if (waiter.costly()) stay.push(waiter)
      else waiter.resolve(holdsNothing)
    this.waiting = stay
  }

  /** Grants the first costly waiter (letting cheap ones go), or frees the turn when none waits. */
  private grant(): void {
    this.sweep()
    const next = this.waiting.shift()
    if (next === undefined) {
      this.busy = false
      return
    }
    this.grants++
    let released = false
    const grantedAt = performance.now()
    next.resolve((busyMs) => {
      if (released) return
      released = true
      // Those asking for the answer just made find it in the cache now.
      this.sweep()
      // The next costly one waits for the poll of I/O that this one held up.
      this.defer(() => this.grant(), busyMs ?? performance.now() - grantedAt)
    })
  }
}
