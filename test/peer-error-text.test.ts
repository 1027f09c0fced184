/**
 * A peer's error message (protocol message type 100) as the receiving peer
 * keeps it: a code rostersync knows (an unknown one is said in the text
 * and reported as SYNC_FAILED), no terminal escapes or control characters,
 * at most `limits.peerErrorCharsMax` characters. A probe: a LAN peer sent
 * megabyte messages full of ANSI escapes under a fresh code each time, and
 * every one was logged whole on its victim (30 MB of events in 3 s).
 */
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { limits } from '../core/limits.js'
import { encodeMessage } from '../core/protocol.js'
import { cleanText } from '../core/ids.js'
import { createDevice } from '../peers/create-device.js'
import { startSession } from '../peers/sync-session.js'
import { memoryStore } from '../storage/level-store.js'
import { wsConnect } from '../transports/ws-transport.js'
import { eventually } from './helpers/eventually.js'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

describe("a peer's error message", () => {
  it('reaches the session owner with a known code, without escapes, bounded', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    closers.push(() => new Promise<void>((resolve) => wss.close(() => resolve())))
    await new Promise((resolve) => wss.once('listening', resolve))
    const port = (wss.address() as { port: number }).port
    const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve))
    const device = await createDevice({ id: 'D1', store: memoryStore() })
    closers.push(() => device.close())
    const conn = await wsConnect(`ws://127.0.0.1:${port}`)
    closers.push(() => conn.close())
    const peer = await accepted
    const told: Array<[string, string]> = []
    const session = startSession({
      replica: device.replica,
      connection: conn,
      sendStep1OnStart: false,
      onRemoteError: (code, message) => told.push([code, message]),
    })
    closers.push(() => session.stop())

    const ansi = '\u001b[2J\u001b]0;pwned\u0007'
    peer.send(
      encodeMessage({ type: 'error', code: 'AUTH_FAILED', message: `bad\nkey${ansi}\u0000!` }),
    )
    peer.send(
      encodeMessage({ type: 'error', code: `NEW_${ansi}CODE`, message: 'x'.repeat(1 << 20) }),
    )
    peer.send(
      encodeMessage({ type: 'error', code: 'PEER_REVOKED', message: `${ansi}y`.repeat(50_000) }),
    )
    await eventually(() => expect(told.length).toBe(3))

    expect(told[0]).toEqual(['AUTH_FAILED', 'badkey!'])
    const [code, text] = told[1] ?? []
    expect(code).toBe('SYNC_FAILED')
    expect(text?.startsWith('NEW_CODE: xxx')).toBe(true)
    expect(told[2]?.[0]).toBe('PEER_REVOKED')
    for (const [, message] of told) {
      expect(message.length).toBeLessThanOrEqual(limits.peerErrorCharsMax + 10)
      // eslint-disable-next-line no-control-regex
      expect(message).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/)
    }
    expect(told[1]?.[1]).toMatch(/… \(cut\)$/)
    expect(told[2]?.[1]).toMatch(/^y{100,}… \(cut\)$/)
  })

  it('cleanText keeps short clean text as it is and says where it cut', () => {
    expect(cleanText('Ann Lee', 10)).toBe('Ann Lee')
    expect(cleanText('a'.repeat(11), 10)).toBe(`${'a'.repeat(10)}… (cut)`)
    expect(cleanText(`${'\u0007'.repeat(100)}ok`, 10)).toBe('ok')
  })
})
