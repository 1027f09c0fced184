/**
 * Costly answers of untrusted peers take turns per replica (issue 11,
 * "Amplification"). The answer cache (peers/replica/answer-cache.ts) shares
 * one encode among the peers that ask the same, but a peer holding the site
 * key can ask for something different each time: 16 links, each within its
 * own step-1 rate, naming a different clock of the server's each time, had
 * a 20k-user server encode nearly the whole roster 16 times per slice of
 * I/O, and held its event loop up to 3.8 s (`npm run bench -- --only
 * variants`). Answers that cost (`limits.answerTurnCostMin` operations or
 * more, not in the cache) wait here, and are made one
 * after another while the turn lasts (`sliceMs` of the event loop); then
 * the poll for I/O runs (every link's messages, the HTTP API), and, when
 * other answers wait, a pause as long as the turn took, before the next
 * turn: such answers take at most about half of the loop when several
 * peers ask. An answer alone in the line (a fresh device's full sync made
 * in slices) goes on after the poll for I/O only.
 *
 * Who goes next: the waiter whose peer (`who`: a device id) was served
 * least recently, first come first served among equals; a peer never
 * served counts as served long ago. A key holder with hundreds of made-up
 * ids asking all along is served round and round, and an honest device
 * that fell behind goes before them (a probe: with first come, first
 * served, it waited about 110 ms per attacking link). An id made up
 * afresh goes first once too: the registry bounds how many a key holder
 * has (`limits.devicesRegisteredMax`; approval mode, `approveDevices`,
 * ends it).
 *
 * An answer larger than a slice is made over several turns
 * (AnswerStream.work, up to `deadline()`): the waiter going on with an
 * answer begun goes first (`goesOn`), so that few are half made at a
 * time (each holds its parts made until it ends; a change of the document
 * cuts them, and their rest is made later: peers/replica/answer-stream.ts).
 *
 * Each waiter says whether its answer is still costly (`costly`): when an
 * answer is made, every waiter whose answer it was too (a restart's fresh
 * devices all ask with the empty state vector) now finds it in the cache,
 * and goes at once, before anything can change the document; so does one
 * whose answer became cheap while it waited.
 *
 * The next turn comes from `defer` (the replica's: on the real clock after
 * the poll for I/O and the pause; with an injected clock, a microtask, and
 * `sliceMs` 0: nothing of a simulation may wait for the real event loop or
 * depend on real time, sim/scheduler.ts, and a test's clock may never run
 * a timer).
 *
 * Invariant: `busy` while an answer holds the turn or a grant is on its way
 * (`defer`); a granted waiter always releases (the session does it in a
 * finally); a waiter granted without a turn (no longer costly) holds
 * nothing.
 */

/** Ends an answer's turn (call it once the answer is made). */
export type EndTurn = () => void

interface Waiter {
  readonly who: string
  readonly costly: () => boolean
  readonly resolve: (end: EndTurn) => void
  /** An answer begun in an earlier turn: goes before those not begun. */
  readonly goesOn: boolean
}

/** What a waiter granted without a turn gets: it holds nothing. */
export const holdsNothing: EndTurn = () => undefined

/** Peers whose last service is remembered (the least recently served are forgotten first). */
const SERVED_KEPT_MAX = 16_384

export class AnswerTurns {
  private waiting: Waiter[] = []
  private busy = false
  private grants = 0
  /** Grant number of each peer's last answer, least recent first (Map order). */
  private readonly served = new Map<string, number>()
  /** When the running turn began (performance.now), undefined between turns. */
  private turnStart: number | undefined

  /**
   * `defer(fn, turnMs)` runs `fn` in a later turn of the event loop (see
   * above); `turnMs` is how long the turn that ends took (0 when no other
   * answer waits: no pause is owed). Answers are made one after another
   * in a turn until it took `sliceMs`.
   */
  constructor(
    private readonly defer: (fn: () => void, turnMs: number) => void,
    private readonly sliceMs: number,
  ) {}

  /** Answers granted a turn so far (tests count them). */
  get granted(): number {
    return this.grants
  }

  /** Answers waiting for their turn. */
  get size(): number {
    return this.waiting.length
  }

  /**
   * Until when (performance.now(), ms) the answer holding the turn may go
   * on being made: the turn's slice; with a slice of 0, no end (each
   * answer is made whole in its turn, and ends it).
   */
  deadline(): number {
    if (this.sliceMs <= 0) return Number.POSITIVE_INFINITY
    return (this.turnStart ?? performance.now()) + this.sliceMs
  }

  /**
   * The running turn counts from now: its holder waited (for durability:
   * ReplicaAnswers.made) without the CPU, and neither its slice nor the
   * pause after it should count the wait.
   */
  restartTurn(): void {
    if (this.turnStart !== undefined) this.turnStart = performance.now()
  }

  /**
   * Resolves once it is this answer's turn, with the function that ends it
   * (call it once), or at once with one that holds nothing when the answer
   * is no longer `costly()` by then (see the module comment). `who`: the
   * asking peer.
   */
  take(who: string, costly: () => boolean, goesOn = false): Promise<EndTurn> {
    return new Promise((resolve) => {
      this.waiting.push({ who, costly, resolve, goesOn })
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

  /**
   * The first waiter going on with an answer begun in an earlier turn (so
   * that one answer at a time is left half made), else the one whose peer
   * was served least recently, taken out: the first in arrival order among
   * equals (`waiting` keeps that order).
   */
  private next(): Waiter | undefined {
    const goingOn = this.waiting.findIndex((w) => w.goesOn)
    if (goingOn >= 0) return this.waiting.splice(goingOn, 1)[0]
    let best = -1
    let bestRank = Infinity
    for (let i = 0; i < this.waiting.length; i++) {
      const rank = this.served.get((this.waiting[i] as Waiter).who) ?? -1
      if (rank < bestRank) {
        best = i
        bestRank = rank
        if (rank === -1) break // never served, and the first such in arrival order
      }
    }
    if (best < 0) return undefined
    return this.waiting.splice(best, 1)[0]
  }

  /** Grants the next costly waiter (letting cheap ones go), or frees the turn when none waits. */
  private grant(): void {
    this.sweep()
    const next = this.next()
    if (next === undefined) {
      this.busy = false
      this.turnStart = undefined
      return
    }
    this.turnStart ??= performance.now()
    this.grants++
    this.served.delete(next.who)
    this.served.set(next.who, this.grants)
    if (this.served.size > SERVED_KEPT_MAX) {
      const oldest = this.served.keys().next().value
      if (oldest !== undefined) this.served.delete(oldest)
    }
    let released = false
    next.resolve(() => {
      if (released) return
      released = true
      // Those asking for the answer just made find it in the cache now.
      this.sweep()
      const turnMs = performance.now() - (this.turnStart ?? 0)
      if (turnMs < this.sliceMs) {
        this.grant()
        return
      }
      // The next waits for the poll of I/O that this turn held up, and
      // for a pause as long when other answers wait: alone (a fresh
      // device's full sync going on in slices), only for the poll.
      this.turnStart = undefined
      this.defer(() => this.grant(), this.waiting.length > 0 ? turnMs : 0)
    })
  }
}
