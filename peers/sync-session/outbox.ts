/**
 * What a session sends, in order, paced by what its connection still
 * buffers. An answer in parts (PROTOCOL.md, "Answers in chunks") is queued
 * at once, at the moment it is taken: a whole 1M-user roster (about 340 MB)
 * handed to a socket in one go is more than a connection may buffer
 * (`netLimits.sendBufferBytesMax`, past which the transport drops the
 * link). Past `netLimits.sendPauseBufferedBytesMin` buffered, messages wait
 * here, in order, and go out as the connection drains (polled on the
 * injected clock): the parts, and everything the session sends after them,
 * keep their order. A connection that does not say what it buffers (the
 * simulator's, in-memory links) is never paused.
 *
 * Invariant: while `waiting` is not empty, a poll is scheduled or the
 * connection is closed; `waitingBytes` is the sum of `waiting`'s sizes,
 * at most `netLimits.sendBufferBytesMax` (past it the link is closed: a
 * peer that does not read cannot make this side hold unbounded memory).
 */
import type { Clock } from '../../core/clock.js'
import { netLimits } from '../../core/limits.js'
import type { Connection } from '../../core/transport.js'

/** How often a paused outbox looks whether its connection drained, ms. */
const DRAIN_POLL_MS = 5

/** A connection's outbound messages (see the module comment). */
export class Outbox {
  private readonly waiting: Uint8Array[] = []
  private waitingBytes = 0
  private timer: unknown

  constructor(
    private readonly connection: Connection,
    private readonly clock: Clock,
  ) {}

  /** Sends `bytes` now, or after what waits once the connection drains. */
  send(bytes: Uint8Array): void {
    if (!this.connection.open) return
    if (this.waiting.length === 0 && !this.paused()) {
      this.connection.send(bytes)
      return
    }
    if (this.waitingBytes + bytes.byteLength > netLimits.sendBufferBytesMax) {
      this.stop()
      this.connection.close(1008, 'SEND_BUFFER_FULL: the peer does not read')
      return
    }
    this.waiting.push(bytes)
    this.waitingBytes += bytes.byteLength
    this.schedule()
  }

  /** Drops what waits (the session stopped or the link closed). */
  stop(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer)
    this.timer = undefined
    this.waiting.length = 0
    this.waitingBytes = 0
  }

  private paused(): boolean {
    return (this.connection.bufferedBytes ?? 0) > netLimits.sendPauseBufferedBytesMin
  }

  private schedule(): void {
    if (this.timer !== undefined) return
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined
      this.flush()
    }, DRAIN_POLL_MS)
  }

  private flush(): void {
    if (!this.connection.open) return this.stop()
    while (this.waiting.length > 0 && !this.paused()) {
      const next = this.waiting.shift() as Uint8Array
      this.waitingBytes -= next.byteLength
      this.connection.send(next)
    }
    if (this.waiting.length > 0) this.schedule()
  }
}
