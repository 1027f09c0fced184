/**
 * The transport port. The sync protocol runs over any ordered, reliable
 * message link: WebSocket, libp2p streams, an in-memory pair, the simulator.
 * Each implementation runs `test/contracts/transport.contract.ts`.
 */

/** Why a connection closed: a code (WebSocket numbering) and a reason. */
export interface CloseInfo {
  readonly code: number
  readonly reason: string
  /**
   * Set when this side's transport closed the link on a frame it would not
   * read: past the link's message size (1009 `MESSAGE_TOO_LARGE`) or not a
   * valid frame (1002 / 1007 `MALFORMED_MESSAGE`). The reason starts with
   * the error code, and the peer's close frame says the same.
   */
  readonly refusedFrame?: boolean
  /**
   * Set when the peer closed the link (its close frame came first): the
   * code and reason are its words, not this side's refusal.
   */
  readonly byPeer?: boolean
}

/** One open, ordered, reliable message link between two peers. */
export interface Connection {
  /** Unique within the process; used to avoid echoing an update to its sender. */
  readonly id: string
  /** Who is at the other end (address or peer id), for logs and the registry. */
  readonly remote: string
  /** Queues one message; messages arrive whole and in order, or the link closes. */
  send(message: Uint8Array): void
  /** Sets the handler of incoming messages (one handler; a later call replaces it). */
  onMessage(handler: (message: Uint8Array) => void): void
  /** Sets the handler called once when the link closes, from either side. */
  onClose(handler: (info: CloseInfo) => void): void
  /** Closes the link; the other side sees `code` and `reason`. Idempotent. */
  close(code?: number, reason?: string): void
  /** True until the link closed. */
  readonly open: boolean
  /**
   * Bytes queued by `send` and not yet handed to the network, when the
   * transport knows (a sender paces large answers by it: peers/sync-session/outbox.ts).
   */
  readonly bufferedBytes?: number | undefined
  /**
   * Sets the longest message this link reads from now on, when the
   * transport frames messages itself (libp2p): a longer one closes the link
   * with 1009 `MESSAGE_TOO_LARGE` as soon as its length is known, before
   * any of it is buffered. A link at a LAN door reads little (lan-auth.ts).
   */
  limitMessageBytes?(messageBytesMax: number): void
  /**
   * Stops reading from the network until `resumeReading`, when the
   * transport can: a receiver that cannot keep up lets the sender's buffer
   * fill instead of its own inbox (peers/sync-session.ts), and the sender's
   * outbox then waits.
   */
  pauseReading?(): void
  /** Reads from the network again after `pauseReading`. */
  resumeReading?(): void
}

/** Something that opens connections to addresses. */
export interface Transport {
  /** Opens a connection; rejects with a typed error when it cannot. */
  connect(address: string): Promise<Connection>
  /** Stops the transport and closes its connections. */
  close(): Promise<void>
}
