/**
 * LAN links across generations (issue 13; PROTOCOL.md, "LAN admission"):
 * two devices on different generations of the site's document exchange
 * nothing (the link closes with 4412 `GENERATION_CHANGED` at the door);
 * the older one moves when it reaches its server, and from then on the
 * two link and sync again. Real WebSocket server link, LevelDB, in-memory
 * LAN links (the LAN admission runs on them as on libp2p).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CloseCode } from '../core/protocol.js'
import type { CloseInfo, Connection } from '../core/transport.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'

const SITE_KEY = 'generations-lan-site-key'
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-gen-lan-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

function openDevice(server: ServerPeer, id: string, online: boolean): Promise<DevicePeer> {
  return createDevice({
    id,
    dataDir: join(dir, id),
    siteKey: SITE_KEY,
    ...(online ? { server: server.url } : {}),
  })
}

/** A connection whose close is recorded. */
function watched(connection: Connection): {
  link: Connection
  closed: () => CloseInfo | undefined
} {
  let info: CloseInfo | undefined
  const link: Connection = {
    id: connection.id,
    remote: connection.remote,
    send: (message) => connection.send(message),
    onMessage: (handler) => connection.onMessage(handler),
    onClose: (handler) =>
      connection.onClose((closed) => {
        info = closed
        handler(closed)
      }),
    close: (code, reason) => connection.close(code, reason),
    get open() {
      return connection.open
    },
  }
  return { link, closed: () => info }
}

/** Links `a` and `b` over the LAN (in memory); returns how each end saw it close. */
function lanLink(a: DevicePeer, b: DevicePeer): { a: () => CloseInfo | undefined } {
  const [toB, toA] = memoryPair(a.id, b.id)
  const end = watched(toB)
  a.attachLan(end.link, b.id)
  b.attachLan(toA, a.id)
  return { a: end.closed }
}

describe('LAN links across generations', () => {
  it('exchange nothing; the older device moves at its server, then they link again', async () => {
    const server = await createServer({ dataDir: join(dir, 'server'), siteKey: SITE_KEY })
    let a: DevicePeer | undefined
    let b: DevicePeer | undefined
    try {
      await server.users.put({ id: 'U', name: 'Una' })
      a = await openDevice(server, 'A', true)
      b = await openDevice(server, 'B', true)
      await a.sync.whenReady()
      await b.sync.whenReady()
      await b.close()
      // B is offline (LAN only) from here on, on the old generation.
      b = await openDevice(server, 'B', false)
      // Same generation: the LAN link syncs.
      const first = lanLink(a, b)
      await a.users.put({ id: 'L1', name: 'Over the LAN' })
      await eventually(() => expect(b?.users.get('L1')?.name).toBe('Over the LAN'))

      await server.compactHistory()
      // A's server link and A's move: its LAN link to B (old generation) closes.
      await eventually(() => expect(a?.sync.status().link).not.toBe('connected'))
      await a.sync.delta()
      await eventually(() => expect(first.a()?.code).toBe(CloseCode.generationChanged))

      // A new link between the two generations is refused at the door.
      const across = lanLink(a, b)
      await eventually(() => expect(across.a()?.code).toBe(CloseCode.generationChanged))
      expect(across.a()?.reason).toMatch(/^GENERATION_CHANGED/)
      await b.users.put({ id: 'B-old', name: 'Written on the old generation' })
      await a.users.put({ id: 'A-new', name: 'Written on the new generation' })
      await new Promise((resolve) => setTimeout(resolve, 200))
      expect(a.users.get('B-old')).toBeUndefined()
      expect(b.users.get('A-new')).toBeUndefined()

      // B reaches its server: it moves, and its edit goes with it.
      await b.close()
      b = await openDevice(server, 'B', true)
      await b.sync.delta()
      await b.sync.whenIdle()
      await eventually(() => expect(server.users.get('B-old')?.name).toMatch(/old generation/))
      expect(b.events.query({ type: 'generation-moved' })).toHaveLength(1)
      // Both on the new generation: the LAN link syncs again, B offline
      // (LAN only): A's new entry, and A's edit of an entry the base holds
      // under the server-derived clientID of A's part, both signed by A.
      await b.close()
      b = await openDevice(server, 'B', false)
      const again = lanLink(a, b)
      await a.users.put({ id: 'L2', name: 'Over the LAN again' })
      await a.users.patch('L1', { email: 'l1@a.example' })
      await eventually(() => expect(b?.users.get('L2')?.name).toBe('Over the LAN again'))
      await eventually(() => expect(b?.users.get('L1')?.email).toBe('l1@a.example'))
      expect(b.users.get('L1')?.name).toBe('Over the LAN')
      expect(again.a(), JSON.stringify(again.a())).toBeUndefined()
    } finally {
      await a?.close()
      await b?.close()
      await server.close()
    }
  })
})
