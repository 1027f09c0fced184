/**
 * The server's front door over real sockets on 127.0.0.1 (issue 11): no
 * request target, however broken, takes the server down or gets past
 * admission untyped, and a connection that never finishes its handshake
 * cannot hold the port. Upgrades are written by hand on a raw TCP socket
 * so that targets no WebSocket client would send (`//`, `http://[`,
 * `/%C0%AF`) reach the server as they are.
 */
import { connect, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { WebSocket } from 'ws'
import { netLimits } from '../core/limits.js'
import { CloseCode } from '../core/protocol.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import {
  startSyncServer,
  type SyncEndpoint,
  type SyncServerOptions,
} from '../server-peer/sync-server.js'
import { memoryStore } from '../storage/level-store.js'
import { addressKey } from '../server-peer/front-door.js'
import { withLimits } from './helpers/limits.js'

const SITE_KEY = 'front-door-site-key'
let server: ServerPeer | undefined
const sockets: Socket[] = []
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy()
  await server?.close()
  server = undefined
})

function portOf(peer: ServerPeer): number {
  return Number(new URL(peer.http).port)
}

/** What a hand-written upgrade got back: the status line, and the close frame if any. */
interface UpgradeOutcome {
  readonly status: string
  readonly closeCode?: number
  readonly reason?: string
}

/**
 * Writes a WebSocket upgrade for `target` by hand and reads until the
 * server closes the socket (or sends a close frame).
 */
function rawUpgrade(port: number, target: string): Promise<UpgradeOutcome> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    sockets.push(socket)
    let data = Buffer.alloc(0)
    const outcome = (): UpgradeOutcome | undefined => {
      const end = data.indexOf('\r\n\r\n')
      if (end < 0) return undefined
      const status = data.subarray(0, data.indexOf('\r\n')).toString('latin1')
      const frame = data.subarray(end + 4)
      // An unmasked close frame from the server: 0x88, length, code, reason.
      if (frame.length >= 4 && frame[0] === 0x88) {
        const length = frame[1] ?? 0
        if (frame.length < 2 + length) return undefined
        return {
          status,
          closeCode: frame.readUInt16BE(2),
          reason: frame.subarray(4, 2 + length).toString('utf8'),
        }
      }
      return undefined
    }
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk])
      const done = outcome()
      if (done !== undefined) {
        socket.destroy()
        resolve(done)
      }
    })
    socket.on('error', reject)
    socket.on('close', () => {
      const end = data.indexOf('\r\n')
      resolve(outcome() ?? { status: end < 0 ? '' : data.subarray(0, end).toString('latin1') })
    })
    socket.write(
      `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    )
  })
}

/** A legitimate client joins and gets the server's answer to its step 1. */
async function legitimateJoin(
  peer: ServerPeer,
  id = 'legit-1',
  localAddress?: string,
): Promise<void> {
  const ws = new WebSocket(`${peer.url}/roster?device=${id}&key=${SITE_KEY}`, {
    ...(localAddress === undefined ? {} : { localAddress }),
  })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => {
      // sync step 1 with the empty state vector: [0, 0, 1, 0]
      ws.send(new Uint8Array([0, 0, 1, 0]))
    })
    ws.once('message', () => resolve())
    ws.once('close', (code, reason) => reject(new Error(`closed ${code} ${reason.toString()}`)))
    ws.once('error', reject)
  })
  ws.close()
}

describe('front door: no request kills the server', () => {
  it('refuses malformed join targets with a typed close, and still serves a legitimate client', async () => {
    server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    const port = portOf(server)
    for (const target of ['/%', '/roster%', '/%FF', '/%C0%AF', '//', '//roster?device=a']) {
      const outcome = await rawUpgrade(port, `${target}`)
      expect(outcome.closeCode, target).toBe(CloseCode.malformedRequest)
      expect(outcome.reason, target).toMatch(/^MALFORMED_REQUEST: /)
    }
    // The refusal quotes the target's path, never its query: the site key
    // (or a part of it) does not travel back in a close reason, which
    // proxies and client logs keep.
    for (const target of ['/%', '//', '/roster%']) {
      const outcome = await rawUpgrade(port, `${target}?device=a&key=${SITE_KEY}`)
      expect(outcome.closeCode, target).toBe(CloseCode.malformedRequest)
      expect(outcome.reason, target).not.toContain('key=')
      expect(outcome.reason, target).not.toContain(SITE_KEY.slice(0, 6))
    }
    // Node's HTTP parser may refuse `http://[` itself (400); either way the
    // server answers and stays up.
    const bracket = await rawUpgrade(port, 'http://[')
    expect(
      bracket.closeCode === CloseCode.malformedRequest || bracket.status.includes(' 400 '),
    ).toBe(true)
    await legitimateJoin(server)
  })

  it('bounds the close reason, however long the input it is about', async () => {
    server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    const outcome = await rawUpgrade(portOf(server), `/roster?device=${'x'.repeat(3_000)}`)
    expect(outcome.closeCode).toBe(CloseCode.authFailed)
    expect(Buffer.byteLength(outcome.reason ?? '')).toBeLessThanOrEqual(
      netLimits.closeReasonBytesMax,
    )
    await legitimateJoin(server)
  })

  it('never lets accept throw: a URL that is not a string is closed as INTERNAL', async () => {
    server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    const closed: Array<{ code: number; reason: string }> = []
    const connection = {
      id: 'bogus',
      remote: 'test',
      open: true,
      send: () => undefined,
      onMessage: () => undefined,
      onClose: () => undefined,
      close: (code = 1000, reason = '') => void closed.push({ code, reason }),
    }
    expect(() => server?.accept(connection, undefined as unknown as string)).not.toThrow()
    expect(closed[0]?.code).toBe(CloseCode.internal)
  })
})

describe('front door: handshakes are bounded', () => {
  it('drops connections from one address past handshakesPerAddressMax, then serves again', async () => {
    server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    const port = portOf(server)
    // Connections that send half a request head and then nothing (slowloris).
    const closed: boolean[] = []
    const opened = await Promise.all(
      Array.from({ length: netLimits.handshakesPerAddressMax + 1 }, (_, i) => {
        return new Promise<Socket>((resolve) => {
          const s = connect(port, '127.0.0.1', () => {
            s.write('GET /roster HTTP/1.1\r\nHost: 127.0.0.1\r\n')
            resolve(s)
          })
          closed[i] = false
          s.on('close', () => (closed[i] = true))
          s.on('error', () => undefined)
          sockets.push(s)
        })
      }),
    )
    // The server destroys the one past the limit at once; wait for it.
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (closed.some(Boolean)) resolve()
        else setTimeout(check, 5)
      }
      check()
    })
    expect(closed.filter(Boolean)).toHaveLength(1)
    for (const s of opened) s.destroy()
    await new Promise((resolve) => setTimeout(resolve, 20))
    await legitimateJoin(server)
  })
})

describe('front door: a few addresses cannot take every handshake slot', () => {
  /** A connection from `from` that sends half a request head and then nothing. */
  const idle = (port: number, from: string): Promise<{ socket: Socket; closed: () => boolean }> =>
    new Promise((resolve) => {
      let closed = false
      const s = connect({ port, host: '127.0.0.1', localAddress: from }, () => {
        s.write('GET /roster HTTP/1.1\r\nHost: 127.0.0.1\r\n')
        resolve({ socket: s, closed: () => closed })
      })
      s.on('close', () => (closed = true))
      s.on('error', () => undefined)
      sockets.push(s)
    })

  it('lets a newcomer from another address take the oldest slot of the address holding the most', async () => {
    withLimits(netLimits, { handshakesInFlightMax: 4, handshakesPerAddressMax: 3 })
    server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    const port = portOf(server)
    const hoarder = []
    for (let i = 0; i < 3; i++) hoarder.push(await idle(port, '127.0.0.1'))
    const other = await idle(port, '127.0.0.2')
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect([...hoarder, other].map((c) => c.closed())).toEqual([false, false, false, false])
    // Every slot is taken: a device joining from 127.0.0.3 still gets in,
    // in place of the hoarder's oldest connection.
    await legitimateJoin(server, 'legit-newcomer', '127.0.0.3')
    expect(hoarder.map((c) => c.closed())).toEqual([true, false, false])
    expect(other.closed()).toBe(false)
    // The hoarder itself, at its share, takes no slot from anyone.
    const again = await idle(port, '127.0.0.2')
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(again.closed()).toBe(false)
    const hoarderAgain = await idle(port, '127.0.0.1')
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(hoarderAgain.closed()).toBe(true)
    expect(hoarder.map((c) => c.closed())).toEqual([true, false, false])
  })

  it('counts an IPv4 address as itself, and an IPv6 address by its /64', () => {
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7')
    expect(addressKey('192.0.2.7')).toBe('192.0.2.7')
    expect(addressKey('2001:db8:0:1::1')).toBe('2001:db8:0:1::/64')
    expect(addressKey('2001:0DB8:0000:0001:ffff:1:2:3')).toBe('2001:db8:0:1::/64')
    expect(addressKey('2001:db8::')).toBe('2001:db8:0:0::/64')
    expect(addressKey('::1')).toBe('0:0:0:0::/64')
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64')
  })
})

describe('front door: handshake time', () => {
  it('drops a connection that never finishes its request head (slowloris)', async () => {
    const endpoint: SyncEndpoint = {
      accept: (connection) => connection.close(1000, 'test'),
      connectedDevices: () => [],
      disconnect: () => undefined,
      closeAll: () => undefined,
      forget: () => undefined,
    }
    // Only the listening options matter here; the endpoint is a stub.
    const listening = await startSyncServer(
      { host: '127.0.0.1', port: 0, handshakeTimeoutMs: 50 } as unknown as SyncServerOptions,
      endpoint,
    )
    try {
      const port = Number(new URL(listening.http).port)
      const closedByServer = await new Promise<boolean>((resolve) => {
        const s = connect(port, '127.0.0.1', () => s.write('GET /roster HTTP/1.1\r\nHost: x\r\n'))
        sockets.push(s)
        s.on('error', () => undefined)
        s.on('close', () => resolve(true))
      })
      expect(closedByServer).toBe(true)
    } finally {
      await listening.close()
    }
  })
})

describe('front door: requests whose body never comes', () => {
  /** A sign-in from `from` whose 1,000-byte body never comes; what came back, and whether it closed. */
  const bodiless = (
    port: number,
    from: string,
  ): Promise<{ reply: () => string; closed: () => boolean }> =>
    new Promise((resolve) => {
      let reply = ''
      let closed = false
      const s = connect({ port, host: '127.0.0.1', localAddress: from }, () => {
        s.write(
          'POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Rostersync-CSRF: 1\r\n' +
            'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{',
        )
        resolve({ reply: () => reply, closed: () => closed })
      })
      s.on('data', (chunk: Buffer) => (reply += chunk.toString('latin1')))
      s.on('close', () => (closed = true))
      s.on('error', () => undefined)
      sockets.push(s)
    })

  /** GET /api/health from `from`: its status line. */
  const health = (port: number, from: string): Promise<string> =>
    new Promise((resolve) => {
      let reply = ''
      const s = connect({ port, host: '127.0.0.1', localAddress: from }, () =>
        s.write('GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'),
      )
      s.on('data', (chunk: Buffer) => (reply += chunk.toString('latin1')))
      s.on('close', () => resolve(reply.split('\r\n')[0] ?? ''))
      s.on('error', () => resolve(''))
      sockets.push(s)
    })

  it('holds at most httpRequestsPerAddressMax from one address; other addresses are served, and it is once they go', async () => {
    // One address held 1,500 such requests, and 10,500 took every file
    // descriptor the server had (a hostile probe).
    withLimits(netLimits, { httpRequestsPerAddressMax: 5 })
    server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    const port = portOf(server)
    const held = []
    for (let i = 0; i < 5; i++) held.push(await bodiless(port, '127.0.0.1'))
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(held.map((r) => r.closed())).toEqual([false, false, false, false, false])
    // The sixth is answered at once and its connection closed.
    const refused = await bodiless(port, '127.0.0.1')
    await new Promise<void>((resolve) => {
      const check = (): void => (refused.closed() ? resolve() : void setTimeout(check, 5))
      check()
    })
    expect(refused.reply()).toMatch(/^HTTP\/1\.1 429 /)
    expect(refused.reply()).toMatch(/RATE_LIMITED/)
    // Another address is served meanwhile.
    expect(await health(port, '127.0.0.2')).toMatch(/^HTTP\/1\.1 200 /)
    // Once the held requests go, the address is served again.
    for (const s of sockets.splice(0)) s.destroy()
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(await health(port, '127.0.0.1')).toMatch(/^HTTP\/1\.1 200 /)
  })
})
