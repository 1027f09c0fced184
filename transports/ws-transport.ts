/**
 * WebSocket as a transport: `wsConnect` opens a client connection, and
 * `wrapWebSocket` turns a socket the server accepted into a `Connection`.
 */
import type { Duplex } from 'node:stream'
import WebSocket from 'ws'
import { RostersyncError } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import type { CloseInfo, Connection, Transport } from '../core/transport.js'
import { closeReason } from '../core/close-reason.js'
import { type ReceiveBudget, ReceiveDeadline } from './receive-deadline.js'

let nextId = 1

/**
 * Wraps an open `ws` socket. `tcp`, the socket's underlying stream (the
 * server passes the upgraded request's socket), makes a close by this side
 * final at once (issue 11): reading stops (frames the peer already sent are
 * neither read nor parsed; a refused flood's backlog costs nothing), the
 * stream is ended after the close frame, and destroyed
 * `netLimits.closedLinkLingerMs` later if still open.
 *
 * With `deferClose` too (the server's, `netLimits.closesPerTurnMax`), a
 * read that starts with the peer's close frame is put back and reading
 * stops; `deferClose` gets the function that hands it to `ws` (which
 * answers the close, ends the stream and reports the link closed) when
 * its turn comes. Nothing is reordered: the link reads nothing in between.
 */
export function wrapWebSocket(
  socket: WebSocket,
  remote: string,
  options: {
    readonly tcp?: Duplex
    readonly deferClose?: (answer: () => boolean) => void
    /** The socket's `maxPayload`, for the reason of a refused frame (`netLimits.messageBytesMax`). */
    readonly messageBytesMax?: number | undefined
    /** The peer's bound on messages in progress on all its links (the server's). */
    readonly receiving?: ReceiveBudget
  } = {},
): Connection {
  const { tcp, deferClose } = options
  const id = `ws-${nextId++}`
  let closeHandler: ((info: CloseInfo) => void) | undefined
  let messageHandler: ((message: Uint8Array) => void) | undefined
  // Messages that arrive before a handler is set wait for it (bounded by the
  // socket's own limits): a session may start a tick after the socket opens.
  const early: Uint8Array[] = []
  let closed = false
  /** This side began the close (its close frame went first). */
  let closing = false
  socket.binaryType = 'nodebuffer'
  // A message begun and not finished is closed on (RECEIVE_STALLED); the
  // server's links only, whose frames the gate follows.
  const deadline = new ReceiveDeadline(
    (reason) => connection.close(1008, reason),
    options.receiving,
  )
  if (tcp !== undefined && deferClose !== undefined)
    gateCloseFrame(tcp, deferClose, () => closed, deadline)
  socket.on('message', (data: Buffer) => {
    // Frames ws parsed from a read before a close by this side: dropped.
    if (closed) return
    const message = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    if (messageHandler === undefined) early.push(message)
    else messageHandler(message)
  })
  // Once: a close by this side with `tcp` is final before ws reports it.
  const finish = (info: CloseInfo): void => {
    if (closed) return
    closed = true
    deadline.stop()
    closeHandler?.(info)
  }
  // Not closed by this side, and not dropped: the peer's close frame.
  socket.on('close', (code, reason) =>
    finish({ code, reason: reason.toString(), ...(!closing && code !== 1006 && { byPeer: true }) }),
  )
  // A frame ws will not read (past `maxPayload`, not a valid frame) makes
  // its receiver call `close(code)` with no reason, before it emits the
  // error: the only call of this socket's `close` with a code alone (this
  // link's own closes give a reason, ws's echo of a peer's close frame
  // gives the peer's). The peer is told why, as every other refusal does
  // (PROTOCOL.md, "Refusals"), and this side hears it as a refused frame.
  const wsClose = socket.close.bind(socket)
  socket.close = (code?: number, data?: string | Buffer): void => {
    // Open only: a frame read while this side's own close is under way is
    // not a refusal to report (its close is).
    const open = socket.readyState === WebSocket.OPEN
    if (code === undefined || data !== undefined || !open || !(code in refusedFrameReasons)) {
      wsClose(code, data)
      return
    }
    const reason = refusedFrameReasons[code]?.(options.messageBytesMax ?? netLimits.messageBytesMax)
    closeLink({ code, reason: reason ?? '', refusedFrame: true })
  }
  // Errors end in 'close'; nothing else to do with them here.
  socket.on('error', () => undefined)
  const connection: Connection = {
    id,
    remote,
    get open() {
      return !closed && socket.readyState === WebSocket.OPEN
    },
    get bufferedBytes() {
      return socket.bufferedAmount
    },
    pauseReading() {
      if (socket.readyState === WebSocket.OPEN) socket.pause()
    },
    resumeReading() {
      if (socket.readyState === WebSocket.OPEN) socket.resume()
    },
    send(message) {
      if (socket.readyState !== WebSocket.OPEN) return
      if (socket.bufferedAmount > netLimits.sendBufferBytesMax) {
        // A peer that does not read cannot make the sender hold unbounded memory.
        socket.terminate()
        return
      }
      socket.send(message)
    },
    onMessage(handler) {
      messageHandler = handler
      for (const message of early.splice(0)) handler(message)
    },
    onClose(handler) {
      closeHandler = handler
    },
    close(code = 1000, reason = '') {
      closeLink({ code, reason })
    },
  }
  /** Closes the link with `info`'s code and reason; final at once with `tcp` (wrapWebSocket). */
  function closeLink(info: CloseInfo): void {
    if (closed) return
    const wasOpen = socket.readyState === WebSocket.OPEN
    // Not when the peer's close frame came first (ws is closing already).
    if (wasOpen) closing = true
    // Clipped: `ws` throws on a reason past 123 bytes, inside whichever
    // handler closed (another link's read: the process went down).
    wsClose(info.code, closeReason(info.reason))
    if (tcp === undefined || !wasOpen) {
      // A refused frame is this side's close whatever the peer answers.
      if (info.refusedFrame === true) finish(info)
      return
    }
    // Nothing more of this link is wanted: stop reading now (ws parses
    // whatever it reads, close handshake or not), end after the close
    // frame (the peer reads it, then the end), and let go of the socket
    // shortly after whatever the peer does.
    socket.pause()
    tcp.end()
    const linger = setTimeout(() => socket.terminate(), netLimits.closedLinkLingerMs)
    linger.unref()
    socket.once('close', () => clearTimeout(linger))
    // Reading nothing more, this side will not see the peer's end: the
    // link is closed as of now, with this side's code.
    finish(info)
  }
  return connection
}

/** The reason of a frame `ws` refused, by the close code its receiver gives (RFC 6455 7.4.1). */
const refusedFrameReasons: Readonly<Record<number, (messageBytesMax: number) => string>> = {
  1002: () => 'MALFORMED_MESSAGE: not a valid WebSocket frame',
  1007: () => 'MALFORMED_MESSAGE: a text frame that is not UTF-8',
  1008: () => 'MALFORMED_MESSAGE: a message in too many fragments',
  1009: (max) => `MESSAGE_TOO_LARGE: a message is larger than this link's limit of ${max} bytes`,
}

/** A WebSocket frame header's first byte: a final close frame (RFC 6455, opcode 8). */
const CLOSE_FRAME_FIRST_BYTE = 0x88

/**
 * Where frames start in the bytes a peer sends (RFC 6455 5.2: a 2-byte
 * header, a 2- or 8-byte extended length, a 4-byte mask, the payload). A
 * read may start anywhere inside a frame, and a masked payload byte is
 * 0x88 one time in 256: only a read that starts at a frame's first byte can
 * start with a close frame.
 */
export class FrameBoundaries {
  /** Bytes of the current frame's payload not read yet. */
  private left = 0
  /** The current frame's header bytes read so far (a header may span reads). */
  private header: number[] = []
  /** The current frame's first byte (FIN and opcode), once its header is read. */
  private first = 0
  /** A data frame without FIN ended: its message goes on in continuation frames. */
  private fragmenting = false
  /** Payload bytes of the message in progress read so far (its data frames' only). */
  private messageBytes = 0
  /** Messages ended so far (data frames with FIN read whole). */
  private ended = 0

  /** Whether a message is in progress: inside a frame, or between the fragments of one. */
  get inProgress(): boolean {
    return this.fragmenting || this.left > 0 || this.header.length > 0
  }

  /** Payload bytes of the message in progress read so far (0 between messages). */
  get bytesInProgress(): number {
    return this.inProgress ? this.messageBytes : 0
  }

  /** How many messages ended so far. */
  get messagesEnded(): number {
    return this.ended
  }

  /** Whether `chunk` starts at a frame's first byte; then follows it through `chunk`. */
  startsFrame(chunk: Uint8Array): boolean {
    const atStart = this.left === 0 && this.header.length === 0
    this.follow(chunk)
    return atStart
  }

  private follow(chunk: Uint8Array): void {
    let at = 0
    while (at < chunk.length) {
      if (this.left > 0) {
        const skipped = Math.min(this.left, chunk.length - at)
        this.left -= skipped
        // A control frame between fragments adds nothing to the message.
        if ((this.first & 0x0f) < 8) this.messageBytes += skipped
        at += skipped
        if (this.left === 0) this.frameEnded()
        continue
      }
      this.header.push(chunk[at] as number)
      at++
      if (this.header.length === headerBytes(this.header)) {
        this.first = this.header[0] as number
        this.left = payloadBytes(this.header)
        this.header = []
        if (this.left === 0) this.frameEnded()
      }
    }
  }

  /** A whole frame was read: a data frame's FIN ends its message (control frames interleave). */
  private frameEnded(): void {
    if ((this.first & 0x0f) >= 8) return
    this.fragmenting = (this.first & 0x80) === 0
    if (!this.fragmenting) {
      this.ended++
      this.messageBytes = 0
    }
  }
}

/** A frame header's length once its first two bytes are known (else 2). */
function headerBytes(header: readonly number[]): number {
  if (header.length < 2) return 2
  const second = header[1] as number
  const length7 = second & 0x7f
  const extended = length7 === 126 ? 2 : length7 === 127 ? 8 : 0
  return 2 + extended + ((second & 0x80) !== 0 ? 4 : 0)
}

/** The payload length a complete frame header states. */
function payloadBytes(header: readonly number[]): number {
  const length7 = (header[1] as number) & 0x7f
  if (length7 < 126) return length7
  let length = 0
  for (let i = 2; i < (length7 === 126 ? 4 : 10); i++) length = length * 256 + (header[i] as number)
  return length
}

/**
 * Puts `ws`'s reading of `tcp` behind a gate: the first read that starts
 * with a close frame (at a frame boundary: FrameBoundaries) is put back into the stream, which stops reading, and
 * waits for `deferClose` to hand it to `ws` and close the connection.
 * Every other read goes to `ws` at once. When `ws`'s reader cannot be
 * found (a `ws` that names it otherwise), it stays as it is.
 */
function gateCloseFrame(
  tcp: Duplex,
  deferClose: (answer: () => boolean) => void,
  closedByUs: () => boolean,
  deadline: ReceiveDeadline,
): void {
  const readers = tcp.listeners('data').filter((l) => l.name === 'socketOnData')
  const wsReader = readers.length === 1 ? (readers[0] as (chunk: Buffer) => void) : undefined
  if (wsReader === undefined) return
  let deferred = false
  const frames = new FrameBoundaries()
  tcp.removeListener('data', wsReader)
  const gate = (chunk: Buffer): void => {
    // Closing: ws reads what is left itself (its 'close' listener).
    if (tcp.destroyed) return
    if (deferred || closedByUs()) {
      wsReader.call(tcp, chunk)
      return
    }
    // Only a read starting at a frame's first byte may be a close frame.
    const atStart = frames.startsFrame(chunk)
    deadline.observe(frames.inProgress, frames.bytesInProgress, frames.messagesEnded)
    if (!atStart || chunk[0] !== CLOSE_FRAME_FIRST_BYTE) {
      wsReader.call(tcp, chunk)
      return
    }
    deferred = true
    // Back into the stream: if the socket goes before its turn, ws reads
    // it from there when it closes (its close code is kept).
    tcp.pause()
    tcp.unshift(chunk)
    deferClose(() => {
      if (tcp.destroyed || closedByUs()) return false
      // read() hands what is buffered to the 'data' listeners (the gate,
      // open now): ws answers the close in this turn (its close frame).
      if (tcp.readableLength > 0) tcp.read()
      // ws would then wait for the peer's end of the stream: peers that
      // read their answers together end together, and each end tears its
      // socket down (ws's and this link's close handlers) in the turn that
      // reads it. Both close frames have gone, so this side closes the
      // connection now (RFC 6455 7.1.1: the server first), once the answer
      // is written.
      tcp.end()
      if (tcp.writableFinished) tcp.destroy()
      else tcp.once('finish', () => tcp.destroy())
      return true
    })
  }
  tcp.on('data', gate)
  // ws takes its reader off at close by reference: the gate goes with it.
  tcp.once('close', () => tcp.removeListener('data', gate))
}

/** Opens a WebSocket to `url`; rejects with `SYNC_FAILED` (or the refusal) when it cannot. */
export function wsConnect(
  url: string,
  options: {
    /** Largest message accepted, in bytes (`netLimits.messageBytesMax`; a test lowers it). */
    readonly messageBytesMax?: number
  } = {},
): Promise<Connection> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, {
      maxPayload: options.messageBytesMax ?? netLimits.messageBytesMax,
    })
    const fail = (code: number, reason: string): void =>
      reject(
        new RostersyncError('SYNC_FAILED', `cannot connect to ${redact(url)}: ${code} ${reason}`),
      )
    socket.once('error', (error) => fail(0, error.message))
    socket.once('close', (code, reason) => fail(code, reason.toString()))
    socket.once('open', () => {
      socket.removeAllListeners('error')
      socket.removeAllListeners('close')
      resolve(wrapWebSocket(socket, redact(url), { messageBytesMax: options.messageBytesMax }))
    })
  })
}

/** The URL without its query (which carries the site key). */
export const redact = (url: string): string => url.replace(/\?.*$/, '')

/** A transport over WebSocket (addresses are ws:// URLs). */
export function wsTransport(): Transport {
  const opened = new Set<Connection>()
  return {
    async connect(address) {
      const conn = await wsConnect(address)
      opened.add(conn)
      conn.onClose(() => opened.delete(conn))
      return conn
    },
    async close() {
      for (const conn of opened) conn.close(1001, 'transport closing')
    },
  }
}
