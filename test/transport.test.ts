/** Every transport runs the same contract. */
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'
import { describe, expect, it } from 'vitest'
import type { CloseInfo, Connection } from '../core/transport.js'
import { memoryPair } from '../transports/memory-transport.js'
import { wrapWebSocket, wsConnect } from '../transports/ws-transport.js'
import { runTransportContract } from './contracts/transport.contract.js'

runTransportContract('memory', async () => {
  const [a, b] = memoryPair()
  return { a, b, cleanup: async () => undefined }
})

runTransportContract('WebSocket on 127.0.0.1', async () => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await new Promise((resolve) => wss.once('listening', resolve))
  const accepted = new Promise<Connection>((resolve) =>
    wss.once('connection', (ws) => resolve(wrapWebSocket(ws, 'client'))),
  )
  const a = await wsConnect(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`)
  const b = await accepted
  return {
    a,
    b,
    cleanup: async () => {
      a.close()
      b.close()
      await new Promise((resolve) => wss.close(resolve))
    },
  }
})

describe('a WebSocket closed with a reason past the 123 bytes a close frame carries', () => {
  it('is closed with the reason clipped at a whole character, not a throw (a review: the server went down)', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    await new Promise((resolve) => wss.once('listening', resolve))
    const accepted = new Promise<Connection>((resolve) =>
      wss.once('connection', (ws) => resolve(wrapWebSocket(ws, 'client'))),
    )
    const client = await wsConnect(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`)
    const server = await accepted
    const closed = new Promise<CloseInfo>((resolve) => client.onClose(resolve))
    try {
      expect(() => server.close(1008, `TOO_LONG: ${'é'.repeat(100)}`)).not.toThrow()
      const info = await closed
      expect(info.code).toBe(1008)
      expect(Buffer.byteLength(info.reason)).toBeLessThanOrEqual(123)
      expect(info.reason).toMatch(/^TOO_LONG: é+$/)
    } finally {
      client.close()
      await new Promise((resolve) => wss.close(resolve))
    }
  })
})

describe("a WebSocket frame past the receiver's limit", () => {
  it('closes the link with 1009 MESSAGE_TOO_LARGE: the sender is told why, the receiver hears a refused frame', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    await new Promise((resolve) => wss.once('listening', resolve))
    const accepted = new Promise<Connection>((resolve) =>
      wss.once('connection', (ws) => resolve(wrapWebSocket(ws, 'client'))),
    )
    const client = await wsConnect(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`, {
      messageBytesMax: 1000,
    })
    const server = await accepted
    try {
      const heardByClient = new Promise<CloseInfo>((resolve) => client.onClose(resolve))
      const heardByServer = new Promise<CloseInfo>((resolve) => server.onClose(resolve))
      const received: Uint8Array[] = []
      client.onMessage((m) => received.push(m))
      server.send(new Uint8Array(1000))
      server.send(new Uint8Array(1001))
      expect(await heardByClient).toEqual({
        code: 1009,
        reason: "MESSAGE_TOO_LARGE: a message is larger than this link's limit of 1000 bytes",
        refusedFrame: true,
      })
      const atServer = await heardByServer
      expect(atServer.code).toBe(1009)
      expect(atServer.reason).toMatch(/^MESSAGE_TOO_LARGE: /)
      expect(atServer.refusedFrame).toBeUndefined()
      expect(received.map((m) => m.length)).toEqual([1000])
    } finally {
      client.close()
      server.close()
      await new Promise((resolve) => wss.close(resolve))
    }
  })
})
