/**
 * A link the server closed reads nothing more (issue 11, floods): a flood
 * refused with 1008 has thousands more frames on their way, and reading
 * them only to drop them cost a connected device's round trip (the flood
 * bench's 100k-update phase). Over a real WebSocket on 127.0.0.1: the
 * server's side closes after the first message, while the peer has 64 MB
 * more in flight; the server reads a small part of it, delivers none of it,
 * reports the close at once with its own code, and the peer still gets the
 * close frame (code and reason).
 */
import type { IncomingMessage } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { netLimits } from '../core/limits.js'
import type { CloseInfo } from '../core/transport.js'
import { wrapWebSocket } from '../transports/ws-transport.js'

const closers: Array<() => void> = []
afterEach(() => {
  for (const close of closers.splice(0)) close()
})

const FRAME_BYTES = 16 * 1024
const FRAMES = 4_096

describe('a link the server closes', () => {
  it('reads nothing more of it: the frames in flight are neither read nor delivered', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    closers.push(() => wss.close())
    await new Promise<void>((resolve) => wss.once('listening', () => resolve()))
    let afterClose = 0
    let serverClose: CloseInfo | undefined
    const serverSocket = new Promise<Socket>((resolve) => {
      wss.once('connection', (ws: WebSocket, req: IncomingMessage) => {
        const tcp = req.socket
        const connection = wrapWebSocket(ws, 'peer', { tcp })
        let first = true
        connection.onMessage(() => {
          if (!first) {
            if (!connection.open) afterClose++
            return
          }
          first = false
          connection.close(1008, 'RATE_LIMITED: test')
        })
        connection.onClose((info) => (serverClose ??= info))
        resolve(tcp)
      })
    })
    const port = (wss.address() as AddressInfo).port
    const client = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false })
    client.on('error', () => undefined)
    await new Promise<void>((resolve) => client.once('open', () => resolve()))
    const clientClosed = new Promise<{ code: number; reason: string }>((resolve) =>
      client.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    )
    const frame = new Uint8Array(FRAME_BYTES)
    for (let i = 0; i < FRAMES; i++) client.send(frame)
    const tcp = await serverSocket
    // The peer gets the close frame and the end, with the server's code.
    const closed = await clientClosed
    expect(closed).toEqual({ code: 1008, reason: 'RATE_LIMITED: test' })
    // The server's side knew at once, with its own code.
    expect(serverClose).toEqual({ code: 1008, reason: 'RATE_LIMITED: test' })
    const sent = FRAME_BYTES * FRAMES
    // What was read before the pause took effect is a few socket reads,
    // not the 64 MB in flight; none of it reached the session.
    expect(tcp.bytesRead).toBeLessThan(sent / 4)
    expect(afterClose).toBe(0)
    // And the socket is let go within the linger bound.
    if (!tcp.destroyed) await new Promise((resolve) => tcp.once('close', resolve))
    expect(netLimits.closedLinkLingerMs).toBeGreaterThan(0)
  })
})
