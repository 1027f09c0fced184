/**
 * WebSocket as a transport: `wsConnect` opens a client connection, and
 * `wrapWebSocket` turns a socket the server accepted into a `Connection`.
 */
import type { Duplex } from 'node:stream'
import WebSocket from 'ws'
import { RostersyncError } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import type { CloseInfo, Connection, Transport } from '../core/transport.js'

let nextId = 1

/**
 * Wraps an open `ws` socket. `tcp`, the socket's underlying stream (the
 * server passes the upgraded request's socket), makes a close by this side
 * final at once (issue 11): reading stops (frames the peer already sent are
 * neither read nor parsed; a refused flood's backlog costs nothing), the
 * stream is ended after the close frame, and destroyed
 * `netLimits.closedLinkLingerMs` later if still open.
 */
export function wrapWebSocket(socket: WebSocket, remote: string, tcp?: Duplex): Connection {
  const id = `ws-${nextId++}`
  let closeHandler: ((info: CloseInfo) => void) | undefined
  let messageHandler: ((message: Uint8Array) => void) | undefined
  // Messages that arrive before a handler is set wait for it (bounded by the
  // socket's own limits): a session may start a tick after the socket opens.
  const early: Uint8Array[] = []
  let closed = false
  socket.binaryType = 'nodebuffer'
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
    closeHandler?.(info)
  }
  socket.on('close', (code, reason) => finish({ code, reason: reason.toString() }))
  // Errors end in 'close'; nothing else to do with them here.
  socket.on('error', () => undefined)
  return {
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
      if (closed) return
      const wasOpen = socket.readyState === WebSocket.OPEN
      socket.close(code, reason)
      if (tcp === undefined || !wasOpen) return
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
      finish({ code, reason })
    },
  }
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
      resolve(wrapWebSocket(socket, redact(url)))
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
