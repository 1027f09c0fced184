/**
 * What a session sends, in order, paced by what its connection still
 * buffers. Past `netLimits.sendPauseBufferedBytesMin` buffered, messages
 * wait here, in order, and go out as the connection drains (polled on the
 * injected clock): the parts of an answer, and everything the session sends
 * after them, keep their order. A connection that does not say what it
 * buffers (the simulator's, in-memory links) is never paused.
 *
 * An answer in parts (PROTOCOL.md, "Answers in chunks") is queued as one
 * lazy entry (`sendStream`): each part's message is made only when the
 * connection takes it, from parts the replica makes once for every link,
 * each when a link first asks for it (peers/replica/answer-stream.ts). So an answer of any size (a 1M-user
 * roster is about 340 MB, more than `netLimits.sendBufferBytesMax`) costs a
 * link at most what its connection buffers plus one part, and is paced by
 * progress: a connection that takes nothing for `netLimits.sendStallMsMax`
 * while something waits is closed (`SEND_STALLED`).
 *
 * Invariant: while `waiting` is not empty, a poll is scheduled, or the head
 * stream's next message is waited for (`making`), or the connection is
 * closed; `waitingBytes` is the sum of the sizes of the
 * messages made and waiting (lazy entries count nothing until made), at
 * most `netLimits.sendBufferBytesMax` (past it the link is closed: a peer
 * that does not read cannot make this side hold unbounded memory).
 */
import type { Clock } from '../../core/clock.js'
import { netLimits } from '../../core/limits.js'
import { CloseCode } from '../../core/protocol.js'
import type { Connection } from '../../core/transport.js'
import { closeReason } from './inbound.js'

/** How often a paused outbox looks whether its connection drained, ms. */
const DRAIN_POLL_MS = 5

/** Messages made one at a time, as the connection takes them. */
interface Lazy {
  next: number
  readonly make: (index: number) => Uint8Array
  /** Whether message `index` (made) is the last. */
  readonly isLast: (index: number) => boolean
  /** Called once, when it leaves the outbox (its last sent, or dropped). */
  readonly release: () => void
  /** MessageStream.ready. */
  readonly ready: ((index: number) => Promise<void> | undefined) | undefined
}

/** Messages made as they are asked for, in order, until the last (at least one). */
export interface MessageStream {
  message(index: number): Uint8Array
  isLast(index: number): boolean
  /** This outbox is done with it (its last sent, or dropped): called once. */
  release?(): void
  /**
   * Undefined when message `index` may be made now, else a promise
   * resolving once it may (a part made in turns: the outbox waits for it,
   * everything after it too, without polling).
   */
  ready?(index: number): Promise<void> | undefined
}

type Entry = Uint8Array | Lazy

/** A connection's outbound messages (see the module comment). */
export class Outbox {
  private readonly waiting: Entry[] = []
  private waitingBytes = 0
  /** Lazy entries (answers) in `waiting`. */
  private streamsWaiting = 0
  /** Callers of `roomForStream` waiting for fewer answers to wait here. */
  private roomWaiters: Array<{ readonly below: number; readonly resolve: () => void }> = []
  private timer: unknown
  /** Whether the head stream's next message is being waited for (MessageStream.ready). */
  private making = false
  /** When the connection last took something or buffered less than at the poll before. */
  private progressAt = 0
  private lastBuffered = 0

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
      this.closeWith(undefined, 1008, 'SEND_BUFFER_FULL: the peer does not read')
      return
    }
    this.enqueue(bytes)
    this.waitingBytes += bytes.byteLength
  }

  /**
   * Sends `count` messages, `make(0)` to `make(count - 1)`, in order after
   * what waits; each is made when the connection takes it (see the module
   * comment).
   */
  sendEach(count: number, make: (index: number) => Uint8Array): void {
    if (count <= 0) return
    this.sendStream({ message: make, isLast: (i) => i >= count - 1 })
  }

  /**
   * Sends `stream`'s messages, in order after what waits, up to the one it
   * says is the last; each is made when the connection takes it (an
   * answer encoded part by part: its count is known only at its end).
   */
  sendStream(stream: MessageStream): void {
    if (!this.connection.open) {
      stream.release?.()
      return
    }
    let released = false
    this.enqueue({
      next: 0,
      make: (i) => stream.message(i),
      isLast: (i) => stream.isLast(i),
      ready: stream.ready === undefined ? undefined : (i) => stream.ready?.(i),
      release: () => {
        if (released) return
        released = true
        stream.release?.()
      },
    })
    if (this.waiting.length === 1 && !this.making) this.flush()
  }

  /**
   * Resolves once fewer than `below` answers (streams) wait here, or the
   * connection is gone. An untrusted link's next step 1 is answered only
   * then: each waiting answer holds its parts, and a peer that asks and
   * never reads made the server hold a whole roster per step 1 (5 MB each
   * for 400 users, 1 GB in 200 asks) while its socket stayed under the
   * send-buffer bound.
   */
  roomForStream(below: number): Promise<void> {
    if (this.streamsWaiting < below || !this.connection.open) return Promise.resolve()
    return new Promise((resolve) => this.roomWaiters.push({ below, resolve }))
  }

  /**
   * Closes the connection with `code` and `reason`, after `last` (an error
   * message) when given: what waits is dropped, so that the error goes out
   * at once, after only what the connection buffers already, and the peer
   * learns why.
   */
  closeWith(last: Uint8Array | undefined, code: number, reason: string): void {
    this.stop()
    if (!this.connection.open) return
    if (last !== undefined) this.connection.send(last)
    this.connection.close(code, reason)
  }

  /** Drops what waits (the session stopped or the link closed). */
  stop(): void {
    this.cancelPoll()
    for (const entry of this.waiting) if (!(entry instanceof Uint8Array)) entry.release()
    this.waiting.length = 0
    this.waitingBytes = 0
    this.streamsWaiting = 0
    this.wakeRoom()
  }

  private enqueue(entry: Entry): void {
    if (this.waiting.length === 0) this.noteProgress()
    this.waiting.push(entry)
    if (!(entry instanceof Uint8Array)) this.streamsWaiting++
    this.schedule()
  }

  /** A stream left `waiting`: wakes the callers it makes room for. */
  private streamDone(): void {
    this.streamsWaiting--
    this.wakeRoom()
  }

  private wakeRoom(): void {
    if (this.roomWaiters.length === 0) return
    const stay: typeof this.roomWaiters = []
    for (const waiter of this.roomWaiters)
      if (this.streamsWaiting < waiter.below || !this.connection.open) waiter.resolve()
      else stay.push(waiter)
    this.roomWaiters = stay
  }

  private paused(): boolean {
    return (this.connection.bufferedBytes ?? 0) > netLimits.sendPauseBufferedBytesMin
  }

  private noteProgress(): void {
    this.progressAt = this.clock.now()
    this.lastBuffered = this.connection.bufferedBytes ?? 0
  }

  private cancelPoll(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer)
    this.timer = undefined
  }

  /**
   * Waits for the head stream's next message to be ready (`wait`), then
   * goes on; no poll meanwhile (the wait is progress, not a stall).
   */
  private waitFor(wait: Promise<void>): void {
    this.cancelPoll()
    this.making = true
    wait.then(
      () => {
        this.making = false
        if (this.waiting.length === 0) return
        this.noteProgress()
        this.flush()
      },
      (error: unknown) => {
        this.making = false
        this.closeWith(undefined, CloseCode.internal, closeReason(`INTERNAL: ${String(error)}`))
      },
    )
  }

  private schedule(): void {
    if (this.timer !== undefined || this.making) return
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined
      this.flush()
    }, DRAIN_POLL_MS)
  }

  private flush(): void {
    if (this.making) return
    if (!this.connection.open) return this.stop()
    const before = this.waiting.length === 0 ? undefined : this.waiting[0]
    const beforeNext = before instanceof Uint8Array ? -1 : before?.next
    while (this.waiting.length > 0 && !this.paused()) {
      const head = this.waiting[0] as Entry
      if (head instanceof Uint8Array) {
        this.waiting.shift()
        this.waitingBytes -= head.byteLength
        this.connection.send(head)
        continue
      }
      const index = head.next
      let bytes: Uint8Array
      try {
        const wait = head.ready?.(index)
        if (wait !== undefined) return this.waitFor(wait)
        head.next++
        bytes = head.make(index)
        if (head.isLast(index)) {
          this.waiting.shift()
          this.streamDone()
          head.release()
        }
      } catch (error) {
        // Made on a timer, outside the session's handling: the link closes
        // rather than the process (the peer asks again on its next link).
        this.closeWith(undefined, CloseCode.internal, closeReason(`INTERNAL: ${String(error)}`))
        return
      }
      this.connection.send(bytes)
      if (!this.connection.open) return this.stop()
    }
    if (this.waiting.length === 0) {
      // Everything went (a stream flushed as it was queued): no poll is
      // left to wake for nothing.
      this.cancelPoll()
      return
    }
    const buffered = this.connection.bufferedBytes ?? 0
    const head = this.waiting[0]
    if (
      head !== before ||
      (head instanceof Uint8Array ? -1 : head?.next) !== beforeNext ||
      buffered < this.lastBuffered
    )
      this.noteProgress()
    else if (this.clock.now() - this.progressAt > netLimits.sendStallMsMax) {
      this.closeWith(undefined, 1008, 'SEND_STALLED: the peer does not read')
      return
    }
    this.schedule()
  }
}
