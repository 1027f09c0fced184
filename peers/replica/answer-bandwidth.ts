/**
 * The bytes of answers untrusted peers are sent, shared (issue 11,
 * "Amplification"). Per link, a peer may have 50 step 1s answered a
 * second (`netLimits.step1AnswersPerSecondMax`), and an answer may be the
 * whole roster: a cached one costs nothing to make, but writing it to the
 * socket does. Twenty made-up ids with the site key, each asking the whole
 * roster of 2,000 users with photos (16 MB) as fast as they read, in their
 * own process, were sent 415 MiB a second, and an honest device's write
 * took 498 ms p99 to reach the server instead of 13 (a probe, 2026-12-07).
 *
 * So every message of an answer to an untrusted peer is counted here
 * against one bucket for the whole replica: `netLimits.answerBytesPerSecondMax`
 * a second, `netLimits.answerBytesBurstMax` at once. A message may take the
 * bucket below zero (a part is made before its size is known); while it
 * is below zero, or others wait, an answer waits for its next message, and
 * the waiter whose peer was sent the least lately (a count that decays by
 * half every `ANSWERED_HALF_LIFE_MS`) goes first, one message at a time
 * as the bucket refills. A device's delta goes before the peers that keep
 * fetching the roster once its own fetches are older than theirs (a device
 * that fetched a 340 MB roster a moment ago waits about a minute behind 20
 * of them). No peer goes past the line, and a peer with no count that
 * must wait starts as the most served: made-up ids, each new, would
 * otherwise go before everyone (a review).
 *
 * The bucket refills on the real clock only: on an injected one (the
 * simulator, a test's), nothing waits here (as answer turns take no
 * slices there: peers/replica/answer-turns.ts), so no run depends on a
 * timer its clock may never fire.
 */
import { netLimits } from '../../core/limits.js'

/** How fast a peer's count of bytes sent lately decays: by half in this long, ms. */
export const ANSWERED_HALF_LIFE_MS = 30_000

/** Peers whose counts are kept (the least recently sent forgotten first). */
const COUNTS_KEPT_MAX = 16_384

/** One answer's pass through the bandwidth (AnswerBandwidth.gate). */
export interface BandwidthGate {
  /** Undefined when the answer's next message may be made now, else a promise resolving once it may. */
  ready(): Promise<void> | undefined
  /** Its message of `bytes` was made (to be sent). */
  sent(bytes: number): void
}

interface Waiter {
  readonly who: string
  readonly grant: () => void
}

/** The bytes of answers to untrusted peers (see the module comment). */
export class AnswerBandwidth {
  /** Bytes left in the bucket; below zero after a message larger than what was left. */
  private tokens = netLimits.answerBytesBurstMax
  private refilledAt: number
  /** Each peer's bytes sent lately, decayed to `at`; least recently sent first (Map order). */
  private readonly counts = new Map<string, { bytes: number; at: number }>()
  private waiting: Waiter[] = []
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    private readonly now: () => number,
    /** False on an injected clock: nothing waits (see the module comment). */
    private readonly enabled: boolean,
  ) {
    this.refilledAt = now()
  }

  /** The pass of one answer to `who` (a device id): ask `ready` before each message. */
  gate(who: string): BandwidthGate {
    let granted = false
    return {
      ready: () => {
        if (granted || !this.enabled) return undefined
        this.refill()
        if (this.tokens >= 0 && this.waiting.length === 0) return undefined
        // A peer known and sent little lately (a device asking deltas) goes
        // at once, charged after: a device's round trip waited for the
        // bucket behind 20 links reading the roster, 2.7x idle against
        // 1.3-1.6x without the bucket (npm run bench -- --only flood).
        const known = this.counts.has(who)
        if (known && this.lately(who) < netLimits.answerBytesUnwaitedMax) return undefined
        // A peer never sent anything lately waits as the most served does:
        // else made-up ids, each new, would go before every device that
        // just fetched the roster (a review: a delta waited 2 minutes).
        if (!known) this.counts.set(who, { bytes: this.mostLately(), at: this.now() })
        return new Promise<void>((resolve) => {
          this.waiting.push({
            who,
            grant: () => {
              granted = true
              resolve()
            },
          })
          this.schedule()
        })
      },
      sent: (bytes) => {
        granted = false
        this.refill()
        this.tokens -= bytes
        this.count(who, bytes)
      },
    }
  }

  /** Answers waiting for their next message (tests). */
  get waiters(): number {
    return this.waiting.length
  }

  /** Bytes `who` was sent lately, decayed to now. */
  lately(who: string): number {
    const entry = this.counts.get(who)
    if (entry === undefined) return 0
    // A clock set back reads as no time passed (not as a count grown).
    return entry.bytes * 0.5 ** (Math.max(0, this.now() - entry.at) / ANSWERED_HALF_LIFE_MS)
  }

  /** The most bytes any peer was sent lately (0 with none). */
  private mostLately(): number {
    let most = 0
    for (const who of this.counts.keys()) most = Math.max(most, this.lately(who))
    return most
  }

  /** Stops the timer (the replica closes); waiters go. */
  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    for (const waiter of this.waiting.splice(0)) waiter.grant()
  }

  private count(who: string, bytes: number): void {
    const now = this.now()
    const bytesNow = this.lately(who) + bytes
    this.counts.delete(who)
    if (this.counts.size >= COUNTS_KEPT_MAX) {
      const oldest = this.counts.keys().next().value
      if (oldest !== undefined) this.counts.delete(oldest)
    }
    this.counts.set(who, { bytes: bytesNow, at: now })
  }

  private refill(): void {
    const now = this.now()
    const elapsed = Math.max(0, now - this.refilledAt)
    this.refilledAt = now
    this.tokens = Math.min(
      netLimits.answerBytesBurstMax,
      this.tokens + (elapsed * netLimits.answerBytesPerSecondMax) / 1000,
    )
  }

  /** The next grant: once the bucket is back to zero. */
  private schedule(): void {
    if (this.timer !== undefined || this.waiting.length === 0) return
    this.refill()
    const ms =
      this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / netLimits.answerBytesPerSecondMax)
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.grantOne()
    }, ms)
    // A wait of a few ms at most per message: never what keeps a process up.
    this.timer.unref?.()
  }

  /**
   * Lets the waiter sent the least lately make its message (one: its
   * charge, made before the next timer, says when the next may).
   */
  private grantOne(): void {
    if (this.waiting.length === 0) return
    this.refill()
    if (this.tokens < 0) return this.schedule()
    let best = 0
    let bestBytes = Infinity
    this.waiting.forEach((waiter, i) => {
      const bytes = this.lately(waiter.who)
      if (bytes < bestBytes) {
        best = i
        bestBytes = bytes
      }
    })
    const [next] = this.waiting.splice(best, 1)
    next?.grant()
    this.schedule()
  }
}
