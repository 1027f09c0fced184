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
 * The transports tell it after each read whether a message is in progress
 * and how many of its bytes were read (LAN: the frame reader's buffer;
 * WebSocket: the frame boundaries the server follows).
 */
import { netLimits } from '../core/limits.js'

export class ReceiveDeadline {
  /** When the message in progress started (ms, `Date.now`), if one is. */
  private startedAt: number | undefined
  private bytes = 0
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(private readonly onStall: (message: string) => void) {}

  /** After a read: whether a message is in progress, and its bytes read so far. */
  observe(inProgress: boolean, bytes: number): void {
    if (!inProgress) {
      this.stop()
      return
    }
    this.bytes = bytes
    if (this.startedAt === undefined) {
      this.startedAt = Date.now()
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
    const started = this.startedAt ?? Date.now()
    return (
      started + netLimits.receiveStallMsMax + (this.bytes * 1000) / netLimits.receiveRateBytesMin
    )
  }

  private arm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = setTimeout(() => this.check(), Math.max(0, this.deadline() - Date.now()))
    this.timer.unref?.()
  }

  private check(): void {
    this.timer = undefined
    if (this.startedAt === undefined) return
    // Bytes that came meanwhile moved the deadline on.
    if (Date.now() < this.deadline()) {
      this.arm()
      return
    }
    const seconds = Math.round((Date.now() - this.startedAt) / 1000)
    const bytes = this.bytes
    this.stop()
    this.onStall(
      `RECEIVE_STALLED: a message still incomplete after ${seconds} s (${bytes} bytes read)`,
    )
  }
}
