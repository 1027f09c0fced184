/**
 * A device's server link relays nothing before the server's hello is
 * handled (PROTOCOL.md, "What a device does with another generation"):
 * the hello may name another generation, and a device about to move must
 * not push the old one's writes. Own changes were held back; envelopes
 * relayed from LAN peers went out at once (found by simulator seed 1321:
 * a device on the old generation relayed a LAN peer's old-generation
 * envelope to a server already on the new one, which took it in).
 *
 * Real parts: a real server admits both devices over WebSocket; device A
 * then dials a WebSocket endpoint on 127.0.0.1 that never says hello and
 * records what A sends; A and B are linked over an in-memory LAN link.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocketServer } from 'ws'
import { decodeMessage } from '../core/protocol.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'

const SITE_KEY = 'relay-before-hello-site-key'
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-relay-hello-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe("a device's server link before the server's hello", () => {
  it('relays no LAN peer envelope until the hello is handled', async () => {
    const server = await createServer({ dataDir: join(dir, 'server'), siteKey: SITE_KEY })
    const silent = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    const received: string[] = []
    let dialled = 0
    silent.on('connection', (socket) => {
      dialled++
      socket.on('message', (data: Buffer) => {
        try {
          received.push(decodeMessage(new Uint8Array(data)).type)
        } catch {
          received.push('undecodable')
        }
      })
    })
    await new Promise<void>((resolve) => silent.once('listening', () => resolve()))
    const silentUrl = `ws://127.0.0.1:${(silent.address() as AddressInfo).port}`
    const peers: DevicePeer[] = []
    try {
      // Both devices admitted (the server's key pinned, certificates issued).
      for (const id of ['A', 'B']) {
        const device = await createDevice({
          id,
          dataDir: join(dir, id),
          siteKey: SITE_KEY,
          server: server.url,
        })
        await device.sync.whenReady()
        await device.close()
      }
      // A dials the silent endpoint; B is on the LAN only.
      const a = await createDevice({
        id: 'A',
        dataDir: join(dir, 'A'),
        siteKey: SITE_KEY,
        server: silentUrl,
      })
      peers.push(a)
      const b = await createDevice({ id: 'B', dataDir: join(dir, 'B'), siteKey: SITE_KEY })
      peers.push(b)
      // A's session is up: it sent its step 1 (before any hello, as it does).
      await eventually(() => expect(received).toContain('sync-step1'))
      expect(dialled).toBeGreaterThan(0)
      const [toB, toA] = memoryPair('A', 'B')
      a.attachLan(toB, 'B')
      b.attachLan(toA, 'A')
      await b.users.put({ id: 'from-b', name: 'Written on B' })
      // A applied B's envelope (and would relay it to its other links).
      await eventually(() => expect(a.users.get('from-b')?.name).toBe('Written on B'))
      await new Promise((resolve) => setTimeout(resolve, 300))
      expect(received.filter((type) => type === 'signed-update')).toEqual([])
      expect(received.filter((type) => type === 'sync-update')).toEqual([])
    } finally {
      for (const peer of peers) await peer.close()
      await new Promise<void>((resolve) => silent.close(() => resolve()))
      await server.close()
    }
  })
})
