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
 * The bytes of every message in progress on this process's links: each
 * link's deadline bounds how long it holds its own, and this how much all
 * of them hold together (`netLimits.receivingBytesMax`). A device's or
 * key holder's links each holding most of a large message, sent and never
 * finished, would otherwise pin a message's worth of memory per link for
 * minutes. Past the bound the link holding the most is closed (1008
 * `TOO_MANY_QUEUED_MESSAGES`): a peer sending one large message at a time
 * is never the one, unless it is alone (then it holds past the bound).
 */
const receiving = new Set<ReceiveDeadline>()
let receivingBytes = 0

export class ReceiveDeadline {
  /** When the message in progress started (ms, `performance.now`), if one is. */
  private startedAt: number | undefined
  private bytes = 0
  /** Bytes of the message in progress. */
  get held(): number {
    return this.bytes
  }
  /** Messages ended as of the last read (a change: a new message began). */
  private ended = 0
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(private readonly onStall: (message: string) => void) {}

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
    receivingBytes += bytes - this.bytes
    this.bytes = bytes
    receiving.add(this)
    if (this.startedAt === undefined || newMessage) {
      this.startedAt = performance.now()
      this.arm()
    }
    if (receivingBytes > netLimits.receivingBytesMax) overBudget()
  }

  /** The link closed: nothing more to watch. */
  stop(): void {
    this.startedAt = undefined
    receivingBytes -= this.bytes
    receiving.delete(this)
    this.bytes = 0
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }

  private deadline(): number {
    const started = this.startedAt ?? performance.now()
    return (
      started + netLimits.receiveStallMsMax + (this.bytes * 1000) / netLimits.receiveRateBytesMin
    )
  }

  private arm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = setTimeout(() => this.check(), Math.max(0, this.deadline() - performance.now()))
    this.timer.unref?.()
  }

  /** Closes the link (past `receivingBytesMax`, see `receiving`). */
  shed(): void {
    const bytes = this.bytes
    this.stop()
    this.onStall(
      `TOO_MANY_QUEUED_MESSAGES: messages in progress on this peer's links hold more than ${netLimits.receivingBytesMax} bytes; this link's, ${bytes} bytes, the most`,
    )
  }

  private check(): void {
    this.timer = undefined
    if (this.startedAt === undefined) return
    // Bytes that came meanwhile moved the deadline on.
    if (performance.now() < this.deadline()) {
      this.arm()
      return
    }
    const seconds = Math.round((performance.now() - this.startedAt) / 1000)
    const bytes = this.bytes
    this.stop()
    this.onStall(
      `RECEIVE_STALLED: a message still incomplete after ${seconds} s (${bytes} bytes read)`,
    )
  }
}

/** Closes the links holding the most until the rest fit `receivingBytesMax`. */
function overBudget(): void {
  while (receivingBytes > netLimits.receivingBytesMax && receiving.size > 1) {
    let most: ReceiveDeadline | undefined
    for (const deadline of receiving)
      if (most === undefined || deadline.held > most.held) most = deadline
    most?.shed()
  }
}
