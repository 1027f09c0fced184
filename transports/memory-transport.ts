/**
 * An in-memory transport: connection pairs inside one process, delivering
 * each message whole, in order, on a later microtask (never synchronously,
 * like a real network). For tests and single-process tools.
 */
import type { CloseInfo, Connection, Transport } from '../core/transport.js'
import { PeerUnknownError } from '../core/errors.js'

let nextId = 1

class MemoryConnection implements Connection {
  readonly id = `mem-${nextId++}`
  peer: MemoryConnection | undefined
  private messageHandler: ((m: Uint8Array) => void) | undefined
  private closeHandler: ((info: CloseInfo) => void) | undefined
  private closed = false
  private readonly early: Uint8Array[] = []
  /** Messages handed to `send` and not yet delivered. */
  inFlight = 0

  constructor(readonly remote: string) {}

  get open(): boolean {
    return !this.closed
  }

  send(message: Uint8Array): void {
    const peer = this.peer
    if (this.closed || peer === undefined) return
    const copy = message.slice()
    this.inFlight++
    queueMicrotask(() => {
      this.inFlight--
      if (!peer.closed) peer.deliver(copy)
    })
  }

  /** Hands a message to the handler, or keeps it until one is set. */
  deliver(message: Uint8Array): void {
    if (this.messageHandler === undefined) this.early.push(message)
    else this.messageHandler(message)
  }

  onMessage(handler: (m: Uint8Array) => void): void {
    this.messageHandler = handler
    for (const message of this.early.splice(0)) handler(message)
  }

  onClose(handler: (info: CloseInfo) => void): void {
    this.closeHandler = handler
  }

  close(code = 1000, reason = '', byPeer = false): void {
    if (this.closed) return
    this.closed = true
    queueMicrotask(() => this.closeHandler?.({ code, reason, ...(byPeer && { byPeer }) }))
    const peer = this.peer
    if (peer !== undefined && !peer.closed) {
      // The other side hears of the close after the messages already sent.
      queueMicrotask(() => peer.close(code, reason, true))
    }
  }
}

/** Two connected ends. */
export function memoryPair(aName = 'a', bName = 'b'): [Connection, Connection] {
  const a = new MemoryConnection(bName)
  const b = new MemoryConnection(aName)
  a.peer = b
  b.peer = a
  return [a, b]
}

/** True while either end of a pair still has messages on the way. */
export function pairBusy(a: Connection, b: Connection): boolean {
  return (a as MemoryConnection).inFlight + (b as MemoryConnection).inFlight > 0
}

/** A named in-memory network: `listen(address, accept)` then `connect(address)`. */
export class MemoryNetwork {
  private readonly listeners = new Map<string, (conn: Connection) => void>()

  /** Accepts connections to `address` until the returned function is called. */
  listen(address: string, accept: (conn: Connection) => void): () => void {
    this.listeners.set(address, accept)
    return () => this.listeners.delete(address)
  }

  /** A transport whose connections appear to come from `from`. */
  transport(from: string): Transport {
    const opened = new Set<Connection>()
    return {
      connect: async (address) => {
        const accept = this.listeners.get(address)
        if (accept === undefined) throw new PeerUnknownError(address)
        const [mine, theirs] = memoryPair(from, address)
        opened.add(mine)
        accept(theirs)
        return mine
      },
      close: async () => {
        for (const conn of opened) conn.close(1001, 'transport closing')
      },
    }
  }
}
