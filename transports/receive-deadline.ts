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

export class ReceiveDeadline {
  /** When the message in progress started (ms, `performance.now`), if one is. */
  private startedAt: number | undefined
  private bytes = 0
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
    this.bytes = bytes
    if (this.startedAt === undefined || newMessage) {
      this.startedAt = performance.now()
      this.arm()
    }
  }

  /** The link closed: nothing more to watch. */
  stop(): void {
    this.startedAt = undefined
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
