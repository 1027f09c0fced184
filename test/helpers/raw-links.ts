/**
 * Raw links for the adversarial suites: a WebSocket to the server's sync
 * endpoint and a libp2p sync stream to a device's LAN endpoint, each sending
 * bytes exactly as given (no encoding, no checks) and recording what comes
 * back, so that a test can say anything a hostile peer could.
 */
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p, Stream } from '@libp2p/interface'
import WebSocket from 'ws'
import { decodeMessage, type Message } from '../../core/protocol.js'
import type { CloseInfo } from '../../core/transport.js'
import { LAN_PROTOCOL, wrapStream } from '../../transports/libp2p-transport.js'
import { frame } from '../../transports/length-prefixed.js'
import { concat, varUint } from './hostile-frames.js'

/**
 * Sentinel message types: a type no peer knows, unique per use. The peer
 * refuses it (naming the type in its error message and in the reason it
 * closes the link with), which shows that every message sent before it on
 * the link was handled and none of them was refused.
 */
const SENTINEL_BASE = 2 ** 40

/**
 * How long a link waits for the peer to close it after a sentinel. Only a
 * bound: a peer answers within milliseconds, so the suites never spend it
 * unless a peer hangs (which they then report).
 */
const CLOSE_WAIT_MS = 5_000

/**
 * How long a link waits for the close that must follow the peer's error
 * message about the sentinel (a refusal closes the link). Spent only when
 * a peer refuses and keeps the link open, which the suites report.
 */
const CLOSE_AFTER_REFUSAL_MS = 1_000

/**
 * What became of the messages sent on a link before {@link RawLink.settle}:
 * `accepted` (the peer handled them all and refused only the sentinel),
 * `refused` (the peer refused one of them and closed the link: `close` says
 * with what; anything sent after that one was dropped unhandled),
 * `not-closed` (the peer sent its refusal of the sentinel but did not close
 * the link, which a refusal must do), or `unsettled` (neither within the
 * bound).
 */
export type Settled =
  | { readonly outcome: 'accepted'; readonly close: CloseInfo }
  | { readonly outcome: 'refused'; readonly close: CloseInfo }
  | { readonly outcome: 'not-closed' }
  | { readonly outcome: 'unsettled' }

/** A link that sends raw messages. */
export interface RawLink {
  /** Sends one message as is (over libp2p: framed as a message frame). */
  send(bytes: Uint8Array): Promise<void>
  /** Error messages the peer sent back (code and message). */
  readonly errors: Array<{ code: string; message: string }>
  /** How the peer closed the link, once it did. */
  closed(): CloseInfo | undefined
  /** Resolves with how the link closed, or undefined if it is still open after `timeoutMs`. */
  whenClosed(timeoutMs?: number): Promise<CloseInfo | undefined>
  /**
   * Sends a sentinel and waits (bounded) for the peer to close the link:
   * since a peer closes a link on the first message it refuses, the close
   * says whether everything sent so far was accepted or which refusal
   * ended it. The caller still calls close() (the link may be open).
   */
  settle(): Promise<Settled>
  close(): void
}

let nextSentinel = 0

/** Shared part of both links: errors received, the close, and the sentinel wait. */
class Replies {
  readonly errors: Array<{ code: string; message: string }> = []
  /** Every message the peer sent that decodes. */
  readonly received: Message[] = []
  closedWith: CloseInfo | undefined
  /** Woken by every error message and by the close. */
  private readonly watchers = new Set<() => void>()

  take(bytes: Uint8Array): void {
    let message
    try {
      message = decodeMessage(bytes)
    } catch {
      return
    }
    this.received.push(message)
    if (message.type !== 'error') return
    this.errors.push({ code: message.code, message: message.message })
    for (const wake of this.watchers) wake()
  }

  onClose(info: CloseInfo): void {
    if (this.closedWith !== undefined) return
    this.closedWith = info
    for (const wake of this.watchers) wake()
  }

  /** Resolves once `done()` holds (checked now and on every error or close), or false after `timeoutMs`. */
  private async until(done: () => boolean, timeoutMs: number): Promise<boolean> {
    if (done()) return true
    let timer: NodeJS.Timeout | undefined
    let watcher: (() => void) | undefined
    const met = await new Promise<boolean>((resolve) => {
      watcher = () => {
        if (done()) resolve(true)
      }
      this.watchers.add(watcher)
      timer = setTimeout(() => resolve(false), timeoutMs)
    })
    clearTimeout(timer)
    if (watcher !== undefined) this.watchers.delete(watcher)
    return met
  }

  async whenClosed(timeoutMs = CLOSE_WAIT_MS): Promise<CloseInfo | undefined> {
    await this.until(() => this.closedWith !== undefined, timeoutMs)
    return this.closedWith
  }

  async settle(send: (bytes: Uint8Array) => Promise<void>): Promise<Settled> {
    const tag = String(SENTINEL_BASE + nextSentinel++)
    const sentinelRefused = (): boolean => this.errors.some((e) => e.message.includes(tag))
    if (this.closedWith === undefined) await send(varUint(Number(tag)))
    await this.until(() => this.closedWith !== undefined || sentinelRefused(), CLOSE_WAIT_MS)
    // The close follows the error message at once; wait for it, bounded.
    if (this.closedWith === undefined && sentinelRefused())
      await this.until(() => this.closedWith !== undefined, CLOSE_AFTER_REFUSAL_MS)
    const close = this.closedWith
    if (close === undefined) return { outcome: sentinelRefused() ? 'not-closed' : 'unsettled' }
    return close.reason.includes(tag) || sentinelRefused()
      ? { outcome: 'accepted', close }
      : { outcome: 'refused', close }
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
    whenClosed: (timeoutMs) => replies.whenClosed(timeoutMs),
    settle: () => replies.settle(send),
    close: () => socket.close(1000, 'done'),
  }
}

/** A raw libp2p sync stream, with its raw byte writer for framing-level attacks. */
export interface RawLanLink extends RawLink {
  /** Writes bytes to the stream as they are (no frame around them). */
  sendRaw(bytes: Uint8Array): Promise<void>
  readonly stream: Stream
  /** Every message the device sent that decodes (its lan-auth frame is not one). */
  readonly received: Message[]
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
    received: replies.received,
    errors: replies.errors,
    closed: () =>
      replies.closedWith ??
      (open.status === 'open' ? undefined : { code: 1006, reason: 'stream ended' }),
    whenClosed: (timeoutMs) => replies.whenClosed(timeoutMs),
    settle: () => replies.settle(send),
    // A reset, not a close: a stream left inside an unfinished frame would
    // never see our close frame, and would hold one of the device's sync
    // stream slots on this connection.
    close: () => open.abort(new Error('raw link done')),
  }
}
