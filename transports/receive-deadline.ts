/**
 * The time bound on an inbound message in progress (issue 11, floods): a
 * peer that sends most of a large message (up to `messageBytesMax`, 128
 * MiB) and then stops would hold that memory for as long as it keeps the
 * connection open, past every per-second bound (those count complete
 * messages). Once a message's first byte is read, the whole of it must be
 * read within `netLimits.receiveStallMsMax` plus the time its bytes read so
 * far take at `netLimits.receiveRateBytesMin`; else `onStall` runs (the
 * transport closes the link, 1008 `RECEIVE_STALLED`). A message arriving
 * at any speed a link can carry (a megabit a second and more) is never cut.
 *
 * The transports tell it after each read whether a message is in progress,
 * how many of its bytes were read, and how many messages ended so far
 * (LAN: the frame reader; WebSocket: the frame boundaries the server
 * follows): a read that ends one message and starts the next starts the
 * next one's clock, so a peer sending messages back to back for hours is
 * judged message by message. Only a message's own bytes count (a
 * WebSocket's control frames between its fragments do not).
 */
import { netLimits } from '../core/limits.js'

/**
 * The bytes of every message in progress on one peer's links (the
 * server's, or one device's LAN links): each link's deadline bounds how
 * long it holds its own, and this how much all of them hold together
 * (`netLimits.receivingBytesMax`). Links each holding most of a large
 * message, sent and never finished, would otherwise pin a message's worth
 * of memory per link for minutes. Past the bound, of the links holding at
 * least half their share, the one whose message has come the slowest (its
 * bytes over the time since it began) is closed
 * with 1008 `TOO_MANY_QUEUED_MESSAGES`, after the read that went past it:
 * a message arriving at the speed its link carries is not the one,
 * however large, while links that stopped sending hold bytes, or send a
 * byte now and then to look alive (a probe got an honest 6 MiB push shed
 * so when the link silent the longest was the one). To hold the bound
 * against a message at line speed, every hoarding link must keep up that
 * speed: the attacker's bandwidth, not a few bytes a second.
 */
export class ReceiveBudget {
  readonly receiving = new Set<ReceiveDeadline>()
  bytes = 0
  private checking = false

  /** `now`: ms on a monotonic clock (injected in tests). */
  constructor(readonly now: () => number = () => performance.now()) {}

  /** Checks the bound once the current read is handled (not inside another link's handler). */
  check(): void {
    if (this.checking || this.bytes <= netLimits.receivingBytesMax) return
    this.checking = true
    queueMicrotask(() => {
      this.checking = false
      while (this.bytes > netLimits.receivingBytesMax && this.receiving.size > 1) {
        const now = this.now()
        // Among the links holding at least half their share: one between
        // two reads of a small message (or of a frame's head: 0 bytes)
        // looks slow, and closing it frees nothing (a review).
        const share = this.bytes / this.receiving.size / 2
        let slowest: ReceiveDeadline | undefined
        for (const deadline of this.receiving)
          if (
            deadline.held >= share &&
            (slowest === undefined || deadline.rate(now) < slowest.rate(now))
          )
            slowest = deadline
        if (slowest === undefined) break
        slowest.shed()
      }
    })
  }
}

export class ReceiveDeadline {
  /** When the message in progress started (ms, the budget's clock), if one is. */
  private startedAt: number | undefined
  private bytes = 0
  /** Messages ended as of the last read (a change: a new message began). */
  private ended = 0
  private timer: ReturnType<typeof setTimeout> | undefined

  /**
   * `budget`: the peer's (server, device) bound on every link's message in
   * progress together; by default the link's own.
   */
  constructor(
    private readonly onStall: (message: string) => void,
    private readonly budget: ReceiveBudget = new ReceiveBudget(),
  ) {}

  /**
   * After a read: whether a message is in progress, its bytes read so far,
   * and how many messages ended on the link so far.
   */
  observe(inProgress: boolean, bytes: number, ended: number): void {
    const newMessage = ended !== this.ended
    this.ended = ended
    if (!inProgress) {
      this.stop()
      return
    }
    this.budget.bytes += bytes - this.bytes
    this.bytes = bytes
    this.budget.receiving.add(this)
    if (this.startedAt === undefined || newMessage) {
      this.startedAt = this.budget.now()
      this.arm()
    }
    this.budget.check()
  }

  /** Bytes of the message in progress. */
  get held(): number {
    return this.bytes
  }

  /** How fast its message came so far: bytes a millisecond since it began. */
  rate(now: number): number {
    return this.bytes / Math.max(1, now - (this.startedAt ?? now))
  }

  /** The link closed: nothing more to watch. */
  stop(): void {
    this.startedAt = undefined
    this.budget.bytes -= this.bytes
    this.budget.receiving.delete(this)
    this.bytes = 0
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }

  private deadline(): number {
    const started = this.startedAt ?? this.budget.now()
    return (
      started + netLimits.receiveStallMsMax + (this.bytes * 1000) / netLimits.receiveRateBytesMin
    )
  }

  private arm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = setTimeout(() => this.check(), Math.max(0, this.deadline() - this.budget.now()))
    this.timer.unref?.()
  }

  /** Closes the link (past `receivingBytesMax`: see ReceiveBudget). */
  shed(): void {
    const perSecond = Math.round(this.rate(this.budget.now()) * 1000)
    this.stop()
    // Short: a WebSocket close reason is at most 123 bytes (a longer one throws).
    this.onStall(
      `TOO_MANY_QUEUED_MESSAGES: messages in progress past the bound; the slowest, ${perSecond} B/s`,
    )
  }

  private check(): void {
    this.timer = undefined
    if (this.startedAt === undefined) return
    // Bytes that came meanwhile moved the deadline on.
    if (this.budget.now() < this.deadline()) {
      this.arm()
      return
    }
    const seconds = Math.round((this.budget.now() - this.startedAt) / 1000)
    const bytes = this.bytes
    this.stop()
    this.onStall(
      `RECEIVE_STALLED: a message still incomplete after ${seconds} s (${bytes} bytes read)`,
    )
  }
}
