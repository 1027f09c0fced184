/**
 * WebSocket as a transport: `wsConnect` opens a client connection, and
 * `wrapWebSocket` turns a socket the server accepted into a `Connection`.
 */
import WebSocket from 'ws'
import { RostersyncError } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import type { CloseInfo, Connection, Transport } from '../core/transport.js'

let nextId = 1

/** Wraps an open `ws` socket. */
export function wrapWebSocket(socket: WebSocket, remote: string): Connection {
  const id = `ws-${nextId++}`
  let closeHandler: ((info: CloseInfo) => void) | undefined
  let messageHandler: ((message: Uint8Array) => void) | undefined
  // Messages that arrive before a handler is set wait for it (bounded by the
  // socket's own limits): a session may start a tick after the socket opens.
  const early: Uint8Array[] = []
  let closed = false
  socket.binaryType = 'nodebuffer'
  socket.on('message', (data: Buffer) => {
    const message = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    if (messageHandler === undefined) early.push(message)
    else messageHandler(message)
  })
  socket.on('close', (code, reason) => {
    closed = true
    closeHandler?.({ code, reason: reason.toString() })
  })
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
      socket.close(code, reason)
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
