/**
 * An answer to a state exchange made part by part (issue 13): the server
 * encoded a 1M-user roster's whole answer (about 340 MB) before its first
 * part went out, a fifth of a fresh device's full sync. Each part is made
 * when a link first asks for it (one more is made ahead, to know whether a
 * part is the last: it goes as step 2), and kept, so that every link
 * streaming the same answer (the answer cache's) shares each part.
 *
 * The structs being walked must never change under the walk, and an
 * answer must hold nothing of this peer's that is not durable: before any
 * transaction on its document starts (Yjs's 'beforeTransaction'), the
 * replica cuts every answer still being made (`cut`): the parts made stay
 * as they are, and the rest is what a peer holding what they bring
 * (`covered`: the asker's clocks and the parts' runs) lacks of the
 * document once it is durable again (`resume`, which a reader calls
 * inside whenDurable when `needsResume`): the new structs and the delete
 * set as they are then. Each part still applies with nothing pending.
 * Making the rest at once instead held the loop for the whole rest of the
 * answer at every write (a 1M-user roster's 340 MB: seconds) during a
 * fresh device's full sync.
 *
 * A costly answer an untrusted peer asked for (`lazy`) is made in slices
 * of the event loop instead, each in a turn (peers/replica/answer-turns.ts):
 * `work` goes on from where the last slice stopped, up to a deadline (the
 * source pauses every few hundred structs: core/answer-chunks.ts).
 *
 * Invariant: `made` holds the parts made, in order; `source` is undefined
 * once the last is made, the answer was dropped (`dropped`), or it is cut
 * and not resumed (`cutAt`, what the parts made bring).
 */
import type { CutSignal } from '../../core/answer-chunks.js'

/** An answer's parts, made as they are asked for (see the module comment). */
export class AnswerStream {
  private readonly made: Uint8Array[] = []
  private source: Iterator<Uint8Array | null> | undefined
  private madeBytes = 0
  private dropped: string | undefined
  private readerCount = 0
  private begun = false
  /** Cut, its rest not begun: `resume` first. */
  private cutAt: ReadonlyMap<number, number> | undefined

  /**
   * `source` yields the parts in order, at least one, and `null` where it
   * may pause; `onPart` hears of each part made (its bytes) and `onDone`
   * of the last. `lazy`: made only in turns for untrusted peers (see the
   * module comment).
   */
  constructor(
    source: Iterator<Uint8Array | null>,
    private readonly onPart: (stream: AnswerStream, bytes: number) => void = () => undefined,
    private readonly onDone: (stream: AnswerStream) => void = () => undefined,
    readonly lazy = false,
    /**
     * What the parts yielded so far bring (diffParts' `covered`), and the
     * rest of the answer from a peer holding that, of the document as it
     * is then; without it, `cut` is refused (the caller makes it whole).
     */
    private readonly resumable?: {
      covered: ReadonlyMap<number, number>
      /** Asks `source` to end at once, its open part yielded (diffParts' `cut`). */
      cut: CutSignal
      readonly resume: (
        stream: AnswerStream,
        covered: ReadonlyMap<number, number>,
      ) => {
        parts: Iterator<Uint8Array | null>
        covered: ReadonlyMap<number, number>
        cut: CutSignal
      }
    },
  ) {
    this.source = source
  }

  /** Whether it was cut and its rest must be resumed (inside whenDurable) before anything more is made. */
  get needsResume(): boolean {
    return this.cutAt !== undefined
  }

  /**
   * Cuts it (the document is about to change: see the module comment):
   * false when it cannot be (made whole, dropped, or not resumable). The
   * structs walked since the last part go out as one more part first: a
   * slice's work is never thrown away, so answers finish however often
   * the document changes (diffParts' `cut`).
   */
  cut(): boolean {
    const source = this.source
    if (source === undefined || this.resumable === undefined) return false
    const signal = this.resumable.cut
    signal.requested = true
    try {
      for (let next = source.next(); next.done !== true; next = source.next())
        if (next.value !== null) this.add(next.value)
    } catch (error) {
      // Its readers find it dropped (their links close; the peers ask again).
      this.drop(error instanceof Error ? error.message : String(error))
      return false
    }
    this.source = undefined
    // It came to its end before the change (its last part was made, the
    // end not seen yet): complete, nothing to resume. Cut again and again
    // there, an answer chasing a document written every turn never ended.
    if (this.begun && signal.stopped !== true) {
      this.onDone(this)
      return false
    }
    this.cutAt = new Map(this.resumable.covered)
    return true
  }

  /**
   * Goes on after a `cut`, from the document as it is now (call it inside
   * whenDurable); nothing when not cut.
   */
  resume(): void {
    const from = this.cutAt
    if (from === undefined || this.resumable === undefined) return
    this.cutAt = undefined
    const next = this.resumable.resume(this, from)
    this.resumable.covered = next.covered
    this.resumable.cut = next.cut
    this.source = next.parts
  }

  /** Whether making it has begun (a part asked for, or `work`). */
  get started(): boolean {
    return this.begun
  }

  /**
   * Whether part `index` and whether it is the last are known without
   * making anything (or nothing more will be made: the last is made, or
   * the answer was dropped).
   */
  ready(index: number): boolean {
    if (this.cutAt !== undefined) return false
    return this.source === undefined || this.made.length >= index + 2
  }

  /**
   * Makes parts until `ready(index)`, stopping at a pause of the source
   * once `performance.now()` reaches `deadline` (some progress always);
   * returns `ready(index)`.
   */
  work(index: number, deadline: number): boolean {
    while (!this.ready(index)) {
      if (!this.step()) break
      if (performance.now() >= deadline && !this.ready(index)) return false
    }
    return this.ready(index)
  }

  /**
   * Makes parts on, toward the last, until `performance.now()` reaches
   * `deadline` (at a pause of the source): what is left of a turn once
   * the part a reader waits for is ready (`work`). An answer chasing a
   * document written every turn stays a few structs behind it: made only
   * until the reader's next part was ready, it never came to its end
   * before the next write cut it again, and its step 2 never went.
   */
  workOn(deadline: number): void {
    while (performance.now() < deadline && this.step());
  }

  /** Whether every part is made. */
  get complete(): boolean {
    return this.source === undefined && this.dropped === undefined && this.cutAt === undefined
  }

  /**
   * Links reading it: counted by `read` (the replica hands it out: every
   * `answerParts`), until each `unread` (the link sent its last part, or
   * stopped). One that nothing reads need not be made to the end before
   * the document changes (peers/replica/answer-cache.ts, `settle`).
   */
  get readers(): number {
    return this.readerCount
  }

  /** One more link reads it (see `readers`). */
  read(): void {
    this.readerCount++
  }

  /** A link that read it is done with it (see `readers`). */
  unread(): void {
    if (this.readerCount > 0) this.readerCount--
  }

  /** Bytes of the parts made so far (all of them once complete). */
  get bytes(): number {
    return this.madeBytes
  }

  /** Part `index`, made if it is not yet (and the one after it); undefined past the last. */
  part(index: number): Uint8Array | undefined {
    // A cut answer's parts made are there still (the one after it waits for its resume).
    if (this.cutAt === undefined || index + 1 >= this.made.length) this.fill(index + 2)
    return this.made[index]
  }

  /** Whether part `index` is the last (the part after it is made to know). */
  isLast(index: number): boolean {
    this.fill(index + 2)
    return this.source === undefined && index === this.made.length - 1
  }

  /** Makes parts until `bytes` are made or there are no more. */
  fillBytes(bytes: number): void {
    while (this.source !== undefined && this.madeBytes < bytes) this.fill(this.made.length + 1)
  }

  /** Every part, made now: the same array every time once complete. */
  all(): readonly Uint8Array[] {
    this.fill(Infinity)
    return this.made
  }

  /** Makes every part not made yet (the document is about to change; a cut one waits for its `resume`). */
  finish(): void {
    if (this.cutAt === undefined && this.dropped === undefined) this.fill(Infinity)
  }

  /**
   * Stops making parts (the document is going away: closing): asking for
   * a part not made yet throws `reason`.
   */
  drop(reason: string): void {
    if (this.source === undefined && this.cutAt === undefined) return
    this.source = undefined
    this.cutAt = undefined
    this.dropped = reason
  }

  private fill(count: number): void {
    if (this.dropped !== undefined && this.made.length < count)
      throw new Error(`answer not made: ${this.dropped}`)
    // Not "no more parts": the rest waits for its resume (a reader's bug).
    if (this.cutAt !== undefined && this.made.length < count)
      throw new Error('answer cut: resume it (inside whenDurable) before reading on')
    while (this.made.length < count && this.step());
  }

  /**
   * Takes the source's next yield (a part, a pause, or its end); false
   * once there is nothing more to make.
   */
  private step(): boolean {
    const source = this.source
    if (source === undefined) return false
    this.begun = true
    let next: IteratorResult<Uint8Array | null>
    try {
      next = source.next()
    } catch (error) {
      // A generator that threw is done: the parts after this one are not
      // "none", they are missing.
      this.drop(error instanceof Error ? error.message : String(error))
      throw error
    }
    if (next.done === true) {
      this.source = undefined
      this.onDone(this)
      return false
    }
    if (next.value !== null) this.add(next.value)
    return true
  }

  private add(part: Uint8Array): void {
    this.made.push(part)
    this.madeBytes += part.byteLength
    this.onPart(this, part.byteLength)
  }
}

/** Part `index` of `stream`, which must have it (a caller past the last is a bug). */
export function answerPart(stream: AnswerStream, index: number): Uint8Array {
  const part = stream.part(index)
  if (part === undefined) throw new Error(`answer part ${index} asked for past the last`)
  return part
}
