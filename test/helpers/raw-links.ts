/**
 * Raw links for the adversarial suites: a WebSocket to the server's sync
 * endpoint and a libp2p sync stream to a device's LAN endpoint, each sending
 * bytes exactly as given (no encoding, no checks) and recording what comes
 * back, so that a test can say anything a hostile peer could.
 */
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p, Stream } from '@libp2p/interface'
import WebSocket from 'ws'
import { decodeMessage } from '../../core/protocol.js'
import type { CloseInfo } from '../../core/transport.js'
import { LAN_PROTOCOL, wrapStream } from '../../transports/libp2p-transport.js'
import { frame } from '../../transports/length-prefixed.js'
import { concat, varUint } from './hostile-frames.js'

/**
 * Sentinel message types: a type no peer knows, unique per use, so the
 * peer's refusal of it (which names the type) shows that every message
 * sent before it on the link has been handled.
 */
const SENTINEL_BASE = 2 ** 40

/** How long {@link RawLink.settle} waits for the sentinel's refusal before going on. */
const SETTLE_TIMEOUT_MS = 3_000

/** A link that sends raw messages. */
export interface RawLink {
  /** Sends one message as is (over libp2p: framed as a message frame). */
  send(bytes: Uint8Array): Promise<void>
  /** Error messages the peer sent back (code and message). */
  readonly errors: Array<{ code: string; message: string }>
  /** How the peer closed the link, once it did. */
  closed(): CloseInfo | undefined
  /**
   * Resolves once the peer has handled every message sent so far (its
   * refusal of a sentinel arrived), the link closed, or a timeout passed;
   * says which.
   */
  settle(): Promise<'settled' | 'closed' | 'timeout'>
  close(): void
}

let nextSentinel = 0

/** Shared part of both links: errors received, and the sentinel wait. */
class Replies {
  readonly errors: Array<{ code: string; message: string }> = []
  closedWith: CloseInfo | undefined
  private waiter: { tag: string; resolve: (how: 'settled' | 'closed') => void } | undefined

  take(bytes: Uint8Array): void {
    let message
    try {
      message = decodeMessage(bytes)
    } catch {
      return
    }
    if (message.type !== 'error') return
    this.errors.push({ code: message.code, message: message.message })
    if (this.waiter !== undefined && message.message.includes(this.waiter.tag)) {
      this.waiter.resolve('settled')
      this.waiter = undefined
    }
  }

  onClose(info: CloseInfo): void {
    this.closedWith ??= info
    this.waiter?.resolve('closed')
    this.waiter = undefined
  }

  async settle(
    send: (bytes: Uint8Array) => Promise<void>,
  ): Promise<'settled' | 'closed' | 'timeout'> {
    if (this.closedWith !== undefined) return 'closed'
    const tag = String(SENTINEL_BASE + nextSentinel++)
    let timer: NodeJS.Timeout | undefined
    const result = new Promise<'settled' | 'closed' | 'timeout'>((resolve) => {
      this.waiter = { tag, resolve }
      timer = setTimeout(() => resolve('timeout'), SETTLE_TIMEOUT_MS)
    })
    await send(varUint(Number(tag)))
    const how = await result
    clearTimeout(timer)
    this.waiter = undefined
    return how
  }
}

/** Opens a raw WebSocket to the server's sync endpoint (`url` includes room and query). */
export async function rawWebSocket(url: string): Promise<RawLink> {
  const socket = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 })
  socket.binaryType = 'nodebuffer'
  const replies = new Replies()
  socket.on('message', (data: Buffer) =>
    replies.take(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)),
  )
  socket.on('close', (code, reason) => replies.onClose({ code, reason: reason.toString() }))
  socket.on('error', () => undefined)
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve())
    socket.once('close', (code, reason) =>
      reject(new Error(`refused: ${code} ${reason.toString()}`)),
    )
  })
  const send = async (bytes: Uint8Array): Promise<void> => {
    if (socket.readyState !== WebSocket.OPEN) return
    socket.send(bytes)
    // Let the socket drain now and then, so a batch does not sit in memory.
    if (socket.bufferedAmount > 4 * 1024 * 1024) await new Promise((r) => setTimeout(r, 5))
  }
  return {
    send,
    errors: replies.errors,
    closed: () => replies.closedWith,
    settle: () => replies.settle(send),
    close: () => socket.close(1000, 'done'),
  }
}

/** A raw libp2p sync stream, with its raw byte writer for framing-level attacks. */
export interface RawLanLink extends RawLink {
  /** Writes bytes to the stream as they are (no frame around them). */
  sendRaw(bytes: Uint8Array): Promise<void>
  readonly stream: Stream
}

/** Opens a sync stream from `node` to a device at `addresses`. */
export async function rawLanLink(node: Libp2p, addresses: readonly string[]): Promise<RawLanLink> {
  let stream: Stream | undefined
  for (let attempt = 0; stream === undefined; attempt++) {
    try {
      const connection = await node.dial(addresses.map((a) => multiaddr(a)))
      stream = await connection.newStream(LAN_PROTOCOL)
    } catch (error) {
      // The device allows two sync streams per connection; the one it just
      // closed may not be gone yet.
      if (attempt >= 50) throw error
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  const open = stream
  const replies = new Replies()
  const connection = wrapStream(open, 'device')
  connection.onMessage((bytes) => replies.take(bytes))
  connection.onClose((info) => replies.onClose(info))
  const sendRaw = async (bytes: Uint8Array): Promise<void> => {
    if (open.status !== 'open' || open.writeStatus !== 'writable') return
    try {
      if (!open.send(bytes)) await open.onDrain()
    } catch {
      // The device closed or reset the stream; closed() tells.
    }
  }
  const send = (bytes: Uint8Array): Promise<void> => sendRaw(frame(concat(Uint8Array.of(0), bytes)))
  return {
    send,
    sendRaw,
    stream: open,
    errors: replies.errors,
    closed: () =>
      replies.closedWith ??
      (open.status === 'open' ? undefined : { code: 1006, reason: 'stream ended' }),
    settle: () => replies.settle(send),
    // A reset, not a close: a stream left inside an unfinished frame would
    // never see our close frame, and would hold one of the device's sync
    // stream slots on this connection.
    close: () => open.abort(new Error('raw link done')),
  }
}
