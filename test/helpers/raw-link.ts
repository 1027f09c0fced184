/**
 * A raw device connection to a server peer over an in-memory pair: the
 * test sends whatever bytes it likes and sees every message and the close.
 */
import type { CloseInfo, Connection } from '../../core/transport.js'
import { decodeMessage, encodeMessage, type Message } from '../../core/protocol.js'
import type { ServerPeer } from '../../server-peer/create-server.js'
import { memoryPair } from '../../transports/memory-transport.js'

/** One raw link (see the module comment). */
export interface RawLink {
  readonly connection: Connection
  /** The server's end of the link (its id names the link in Replica.heldBackFrom). */
  readonly serverEnd: Connection
  /** Messages received, decoded (undecodable ones are skipped). */
  readonly received: Message[]
  /** Bytes received in all. */
  receivedBytes(): number
  /** How the link closed, once it has. */
  closed(): CloseInfo | undefined
  send(message: Message): void
}

/** The other end's side of a raw connection: what it received, how it closed, a sender. */
export interface RawEnd {
  /** Messages received, decoded (undecodable ones, `lan-auth` frames among them, are skipped). */
  readonly received: Message[]
  /** Bytes received in all. */
  receivedBytes(): number
  /** How the link closed, once it has. */
  closed(): CloseInfo | undefined
  send(message: Message): void
}

/** Watches `connection` (see RawEnd). */
export function rawEnd(connection: Connection): RawEnd {
  const received: Message[] = []
  let bytes = 0
  let closed: CloseInfo | undefined
  connection.onMessage((message) => {
    bytes += message.byteLength
    try {
      received.push(decodeMessage(message))
    } catch {
      // Not ours to judge here.
    }
  })
  connection.onClose((info) => (closed = info))
  return {
    received,
    receivedBytes: () => bytes,
    closed: () => closed,
    send: (message) => connection.send(encodeMessage(message)),
  }
}

/** Joins `server` as device `id` with `key`. */
export function rawLink(server: ServerPeer, id: string, key: string): RawLink {
  const [mine, theirs] = memoryPair(id, 'server')
  server.accept(theirs, `/roster?device=${id}&key=${key}`)
  return { connection: mine, serverEnd: theirs, ...rawEnd(mine) }
}
