/**
 * Costly answers of untrusted peers, one at a time per replica, each in an
 * event-loop turn of its own (issue 11, "Amplification"). The answer cache
 * (peers/replica/answer-cache.ts) shares one encode among the peers that
 * ask the same, but a peer holding the site key can ask for something
 * different each time: 16 links, each within its own step-1 rate, naming a
 * different clock of the server's each time, had a 20k-user server encode
 * nearly the whole roster 16 times per slice of I/O, and held its event
 * loop up to 2.3 s (an honest device's write reached the server 4.3 s
 * late). Answers that cost (`limits.answerTurnClocksMin` operations or
 * more, not in the cache) now wait here: the first in line is answered,
 * then the poll for I/O runs (every link's messages, the HTTP API) before
 * the next is granted. Waiting is first come, first served; each link has
 * at most one step 1 in hand (its messages are handled one at a time), so
 * the line is a round of every asking link, and a flooding device gets one
 * answer per round however many step 1s it sends.
 *
 * The next turn is `setImmediate` on the real clock (after the poll for
 * I/O); with an injected clock (the simulator, a test's), a microtask:
 * nothing of a simulation may wait for the real event loop
 * (sim/scheduler.ts), and a test's clock may never run a timer.
 *
 * Invariant: `busy` while an answer holds the turn or a grant is on its way
 * (`defer`); a granted waiter always releases (the session does it in a
 * finally).
 */
export class AnswerTurns {
  private readonly waiting: Array<(release: () => void) => void> = []
  private busy = false
  private grants = 0

  /**
   * `defer(fn, heldMs)` runs `fn` in a later turn of the event loop (see
   * above); `heldMs` is how long the answer before held the turn.
   */
  constructor(private readonly defer: (fn: () => void, heldMs: number) => void) {}

  /** Answers granted a turn so far (tests count them). */
  get granted(): number {
    return this.grants
  }

  /** Answers waiting for their turn. */
  get size(): number {
    return this.waiting.length
  }

  /** Resolves once it is this answer's turn, with the function that ends it (call it once). */
  take(): Promise<() => void> {
    return new Promise((resolve) => {
      this.waiting.push(resolve)
      if (!this.busy) {
        this.busy = true
        this.grant()
      }
    })
  }

  /** Grants the first waiter, or frees the turn when none waits. */
  private grant(): void {
    const next = this.waiting.shift()
    if (next === undefined) {
      this.busy = false
      return
    }
    this.grants++
    let released = false
    const grantedAt = performance.now()
    next(() => {
      if (released) return
      released = true
      // The next answer waits for the poll of I/O that this one held up.
      this.defer(() => this.grant(), performance.now() - grantedAt)
    })
  }
}
