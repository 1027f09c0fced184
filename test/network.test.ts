/**
 * Sync over real WebSockets on 127.0.0.1: devices and an unmodified
 * y-websocket client against the server peer; admission, revocation and the
 * refusal of bad input, with the roster unchanged and the server still serving.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { Socket } from 'node:net'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { deriveClientId, keyPairFromSeed } from '../core/signing.js'
import * as encoding from 'lib0/encoding'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { encodeMessage } from '../core/protocol.js'
import { netLimits } from '../core/limits.js'
import { eventually } from './helpers/eventually.js'
import { withLimits } from './helpers/limits.js'

const SITE_KEY = 'test-site-key'
const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

async function startServer(): Promise<ServerPeer> {
  const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
  closers.push(() => server.close())
  return server
}

async function startDevice(
  server: ServerPeer,
  id: string,
  siteKey = SITE_KEY,
): Promise<DevicePeer> {
  const device = await createDevice({ id, store: memoryStore(), server: server.url, siteKey })
  closers.push(() => device.close())
  return device
}

/** Opens a raw socket as device `id` and resolves once it is open. */
async function rawSocket(
  server: ServerPeer,
  id: string,
): Promise<{ ws: WebSocket; messages: Uint8Array[] }> {
  const ws = new WebSocket(`${server.url}/roster?device=${id}&key=${SITE_KEY}`)
  closers.push(() => ws.terminate())
  const messages: Uint8Array[] = []
  ws.on('message', (data: Buffer) => messages.push(new Uint8Array(data)))
  await new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', reject)
  })
  return { ws, messages }
}

describe('sync over WebSocket', () => {
  it('listens on loopback and syncs the rules between server and devices', async () => {
    const server = await startServer()
    expect(server.url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/)
    expect(server.http).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
    await server.users.put({ id: 'u1', name: 'Ann' })
    const d1 = await startDevice(server, 'D1')
    const d2 = await startDevice(server, 'D2')
    await eventually(() => expect(d1.users.get('u1')?.name).toBe('Ann'))
    await d1.users.patch('u1', { name: 'Bob', email: 'ann@example.com' })
    await eventually(() =>
      expect(server.users.get('u1')).toEqual({ id: 'u1', name: 'Ann', email: 'ann@example.com' }),
    )
    await eventually(() =>
      expect(d2.users.get('u1')).toEqual({ id: 'u1', name: 'Ann', email: 'ann@example.com' }),
    )
    expect(d1.users.get('u1')?.name).toBe('Ann')
    expect(server.events.query({ type: 'user-update-succeeded', deviceId: 'D1' })).toHaveLength(1)
    expect(server.devices.list().map((d) => d.id)).toEqual(['D1', 'D2'])
  })

  it('an unmodified y-websocket client syncs, and its forged write into the server part is refused', async () => {
    const server = await startServer()
    await server.users.put({ id: 'u1', name: 'Ann' })
    const doc = new Y.Doc()
    const provider = new WebsocketProvider(server.url, 'roster', doc, {
      WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
      params: { device: 'Y1', key: SITE_KEY },
    })
    closers.push(() => provider.destroy())
    await eventually(() => expect(provider.synced).toBe(true))
    const entry = doc.getMap('u:server').get('u1') as { f: { name: string } }
    expect(entry.f.name).toBe('Ann')
    doc.getMap('u:server').set('u1', { e: 0, t: 1, f: { name: 'Mallory' } })
    await eventually(() =>
      expect(server.events.query({ type: 'write-refused', deviceId: 'Y1' }).length).toBeGreaterThan(
        0,
      ),
    )
    expect(server.events.query({ type: 'write-refused' })[0]?.code).toBe('FORBIDDEN_WRITE')
    expect(server.users.get('u1')?.name).toBe('Ann')
  })

  it('refuses a wrong site key and a revoked device, and the device stops retrying', async () => {
    const server = await startServer()
    const bad = await startDevice(server, 'D9', 'wrong-key')
    await eventually(() => expect(bad.serverLink?.state).toBe('refused'))
    const d1 = await startDevice(server, 'D1')
    await eventually(() => expect(d1.serverLink?.state).toBe('connected'))
    expect(await server.devices.revoke('D1')).toBe(true)
    await eventually(() => expect(d1.serverLink?.state).toBe('refused'))
    expect(server.devices.list()[0]?.revoked).toBe(true)
    expect(server.events.query({ type: 'device-revoked' })).toHaveLength(1)
  })
})

describe('bad input over the wire', () => {
  const badMessages: Array<[string, () => Uint8Array]> = [
    ['random bytes', () => Uint8Array.from({ length: 64 }, (_, i) => (i * 37 + 11) % 256)],
    [
      'a truncated update',
      () => {
        const doc = new Y.Doc()
        doc.getMap('u:D1').set('u2', { e: 0, f: { name: 'Zed' }, s: { name: 1 } })
        const update = Y.encodeStateAsUpdate(doc)
        return encodeMessage({ type: 'sync-update', update: update.slice(0, update.length - 3) })
      },
    ],
    [
      'a varint of 2^32',
      () => {
        const e = encoding.createEncoder()
        encoding.writeVarUint(e, 0)
        encoding.writeVarUint(e, 2)
        encoding.writeVarUint(e, 2 ** 32)
        return encoding.toUint8Array(e)
      },
    ],
    [
      "a write into the server's part",
      () => {
        const doc = new Y.Doc()
        doc.getMap('u:server').set('u2', { e: 0, t: 1, f: { name: 'Forged' } })
        return encodeMessage({ type: 'sync-update', update: Y.encodeStateAsUpdate(doc) })
      },
    ],
    [
      'an invalid record in its own part',
      () => {
        const doc = new Y.Doc()
        doc.getMap('u:D1').set('u2', { e: 0, f: { status: 'exploded' }, s: { status: 1 } })
        return encodeMessage({ type: 'sync-update', update: Y.encodeStateAsUpdate(doc) })
      },
    ],
  ]

  it.each(badMessages)(
    '%s is refused with an error, nothing changes, the server keeps serving',
    async (_name, make) => {
      const server = await startServer()
      await server.users.put({ id: 'u1', name: 'Ann' })
      const before = Y.encodeStateVector(server.replica.doc)
      const { ws, messages } = await rawSocket(server, 'D1')
      ws.send(make())
      await eventually(() =>
        expect(server.events.query({ type: 'write-refused' }).length).toBeGreaterThan(0),
      )
      await eventually(() => expect(messages.some((m) => m[0] === 100)).toBe(true))
      expect(Y.encodeStateVector(server.replica.doc)).toEqual(before)
      expect(server.users.list()).toEqual([{ id: 'u1', name: 'Ann' }])
      const d2 = await startDevice(server, 'D2')
      await eventually(() => expect(d2.users.get('u1')?.name).toBe('Ann'))
    },
  )

  it('an oversize frame closes that connection only', async () => {
    const server = await startServer()
    await server.users.put({ id: 'u1', name: 'Ann' })
    const { ws } = await rawSocket(server, 'D1')
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)))
    // The head of a masked binary frame of 128 MiB + 1 bytes, and a first
    // byte of it. Sending the whole body would hold the client's answer to
    // the server's close behind 128 MiB the server no longer reads, until
    // the server's close timeout (30 s) ends the socket.
    const head = Buffer.alloc(2 + 8 + 4 + 1)
    head[0] = 0x82 // FIN, binary
    head[1] = 0x80 | 127 // masked, 64-bit length follows
    head.writeBigUInt64BE(BigInt(128 * 1024 * 1024 + 1), 2)
    ;(ws as unknown as { _socket: Socket })._socket.write(head)
    expect(await closed).toBe(1009)
    expect(server.users.list()).toEqual([{ id: 'u1', name: 'Ann' }])
    const d2 = await startDevice(server, 'D2')
    await eventually(() => expect(d2.users.get('u1')?.name).toBe('Ann'))
  })
})

describe('a device restored from an old backup', () => {
  it('takes a fresh clientID when the server knows more of its clientID than it has', async () => {
    const server = await startServer()
    // The device's draws: eight for its key seed, then the nonces of its
    // clientIDs (each derived from the key and a nonce).
    const draws = [1, 2, 3, 4, 5, 6, 7, 8, 12345, 777]
    const seed = new Uint8Array(32)
    draws.slice(0, 8).forEach((d, i) => new DataView(seed.buffer).setUint32(i * 4, d))
    const key = keyPairFromSeed(seed).publicKey
    const first = deriveClientId(key, 12345)
    // Operations of the first clientID that the "restored" device does not have.
    const earlier = new Y.Doc()
    earlier.clientID = first
    earlier
      .getMap('u:D1')
      .set('u9', { e: 0, f: { name: 'Written before the restore' }, s: { name: 1 } })
    await server.replica.applyRemote(Y.encodeStateAsUpdate(earlier), 'test')
    const device = await createDevice({
      id: 'D1',
      store: memoryStore(),
      server: server.url,
      siteKey: SITE_KEY,
      randomUint32: () => draws.shift() ?? 999,
    })
    closers.push(() => device.close())
    expect(device.replica.clientId).toBe(first)
    await eventually(() => expect(device.serverLink?.synced).toBe(true))
    expect(device.replica.clientId).toBe(deriveClientId(key, 777))
    await device.users.put({ id: 'u10', name: 'After' })
    await eventually(() => expect(server.users.get('u10')?.name).toBe('After'))
    expect(server.users.get('u9')?.name).toBe('Written before the restore')
  })
})

describe('a server shutting down', () => {
  it('tells its connected peers 1001 and ends their sockets without waiting out the linger', async () => {
    // A closed link waits for its peer's end up to closedLinkLingerMs (and
    // ws for a close answer up to 30 s); here the linger is past this test's
    // 20 s timeout, so a close that waited for either would fail it.
    withLimits(netLimits, { closedLinkLingerMs: 120_000 })
    const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    await server.users.put({ id: 'u1', name: 'Ann' })
    const device = await createDevice({
      id: 'D1',
      store: memoryStore(),
      server: server.url,
      siteKey: SITE_KEY,
    })
    closers.push(() => device.close())
    await eventually(() => expect(device.users.get('u1')?.name).toBe('Ann'))
    const { ws } = await rawSocket(server, 'D2')
    const closed = new Promise<string>((resolve) =>
      ws.once('close', (code, reason) => resolve(`${code} ${reason.toString()}`)),
    )
    await server.close()
    expect(await closed).toBe('1001 server closing')
    // The device kept what it had, and knows the server went.
    expect(device.users.get('u1')?.name).toBe('Ann')
    await eventually(() => expect(device.serverLink?.synced).not.toBe(true))
  }, 20_000)
})
