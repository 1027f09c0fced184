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
import { deviceGeneration } from '../peers/device-sync/generation-move.js'
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

/** A connection whose close is recorded, and how many sync messages it received. */
function watched(connection: Connection): {
  link: Connection
  closed: () => CloseInfo | undefined
  synced: () => number
} {
  let info: CloseInfo | undefined
  let synced = 0
  const link: Connection = {
    id: connection.id,
    remote: connection.remote,
    send: (message) => connection.send(message),
    onMessage: (handler) =>
      connection.onMessage((message) => {
        // The peer's `lan-auth` frame is type 110; the rest it sends once it admitted us.
        if (message[0] !== 110) synced++
        handler(message)
      }),
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
  return { link, closed: () => info, synced: () => synced }
}

/**
 * Links `a` and `b` over the LAN (in memory); returns how A's end saw it
 * close, and whether both sides admitted each other (each sent a sync message).
 */
function lanLink(
  a: DevicePeer,
  b: DevicePeer,
): { a: () => CloseInfo | undefined; admitted: () => boolean } {
  const [toB, toA] = memoryPair(a.id, b.id)
  const end = watched(toB)
  const other = watched(toA)
  a.attachLan(end.link, b.id)
  b.attachLan(other.link, a.id)
  return { a: end.closed, admitted: () => end.synced() > 0 && other.synced() > 0 }
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

  it('a moving device carries the writes it got over the LAN that the server never received, as its own', async () => {
    const server = await createServer({ dataDir: join(dir, 'server-relayed'), siteKey: SITE_KEY })
    let a: DevicePeer | undefined
    let b: DevicePeer | undefined
    try {
      await server.users.put({ id: 'U', name: 'Una' })
      a = await openDevice(server, 'RA', true)
      b = await openDevice(server, 'RB', true)
      await a.sync.whenReady()
      await b.sync.whenReady()
      // Reaches the server before the switch: the new generation holds it.
      await b.users.patch('U', { email: 'u@b.example' })
      await b.sync.whenIdle()
      expect(server.users.get('U')?.email).toBe('u@b.example')
      // Both cut off from the server, linked over the LAN: B's writes reach A only.
      await a.close()
      await b.close()
      a = await openDevice(server, 'RA', false)
      b = await openDevice(server, 'RB', false)
      lanLink(a, b)
      await b.users.put({ id: 'B-lan', name: 'Made on B, cut off' })
      await b.users.patch('U', { phone: '+1 555 0100' })
      await eventually(() => expect(a?.users.get('B-lan')?.name).toBe('Made on B, cut off'))
      await eventually(() => expect(a?.users.get('U')?.phone).toBe('+1 555 0100'))
      // B is gone for good (its hardware died); the server switches.
      await b.close()
      b = undefined
      await server.compactHistory()
      // A reaches the server and moves: B's writes are not lost with the old generation.
      await a.close()
      a = await openDevice(server, 'RA', true)
      await a.sync.delta()
      await a.sync.whenIdle()
      await eventually(() => expect(server.users.get('B-lan')?.name).toBe('Made on B, cut off'))
      expect(server.users.get('U')).toMatchObject({ email: 'u@b.example', phone: '+1 555 0100' })
      expect(a.users.get('B-lan')?.name).toBe('Made on B, cut off')
      expect(a.users.get('U')?.phone).toBe('+1 555 0100')
      // Said in its log: two users had writes the server never received (U's email it had).
      const moved = a.events.query({ type: 'generation-moved' })
      expect(moved).toHaveLength(1)
      expect(moved[0]?.message).toMatch(/does not hold for 2 user\(s\)/)
    } finally {
      await a?.close()
      await b?.close()
      await server.close()
    }
  })

  it.each([
    ['revoked', 'revoke'],
    // The key reset (a stolen terminal): its old key's writes were carried
    // and adopted, and a user it planted stood on the server (hostile probe).
    ['whose key was reset', 'resetKey'],
  ] as const)(
    "carries nothing of a device %s meanwhile: not laundered as the carrier's own",
    async (_what, action) => {
      const server = await createServer({
        dataDir: join(dir, `server-${action}`),
        siteKey: SITE_KEY,
      })
      // Data directories of their own (the cases share the suite's folder).
      const [va, ve] = action === 'revoke' ? ['VA', 'VE'] : ['KA', 'KE']
      let a: DevicePeer | undefined
      let e: DevicePeer | undefined
      try {
        await server.users.put({ id: 'X', name: 'Xavier' })
        a = await openDevice(server, va, true)
        e = await openDevice(server, ve, true)
        await a.sync.whenReady()
        await e.sync.whenReady()
        await a.close()
        await e.close()
        a = await openDevice(server, va, false)
        e = await openDevice(server, ve, false)
        lanLink(a, e)
        // The administrator revokes E (a compromised terminal) and compacts;
        // A, cut off, has not heard and takes E's writes over the LAN.
        await server.devices[action](ve)
        await server.compactHistory()
        await e.users.patch('X', { email: 'attacker@evil.example' })
        await e.users.put({ id: 'EVIL', name: 'Planted' })
        await eventually(() => expect(a?.users.get('X')?.email).toBe('attacker@evil.example'))
        await eventually(() => expect(a?.users.get('EVIL')).toBeDefined())
        await e.close()
        e = undefined
        await a.close()
        a = await openDevice(server, va, true)
        await a.sync.delta()
        await a.sync.whenIdle()
        expect(a.events.query({ type: 'generation-moved' })).toHaveLength(1)
        expect(a.events.query({ type: 'generation-moved' })[0]?.message).not.toMatch(
          /does not hold/,
        )
        expect(server.users.get('X')?.email).toBeUndefined()
        expect(server.users.get('EVIL')).toBeUndefined()
        expect(a.users.get('X')?.email).toBeUndefined()
      } finally {
        await a?.close()
        await e?.close()
        await server.close()
      }
    },
  )

  it('a device that holds nothing and notes a new generation closes its LAN links of the old one', async () => {
    // Nothing is replaced on that path (it has nothing to carry): before
    // the fix no reset fired, and the link stayed open across generations.
    const server = await createServer({ dataDir: join(dir, 'server-empty'), siteKey: SITE_KEY })
    let a: DevicePeer | undefined
    let b: DevicePeer | undefined
    try {
      a = await openDevice(server, 'EA', true)
      b = await openDevice(server, 'EB', true)
      await a.sync.whenReady()
      await b.sync.whenReady()
      await b.close()
      b = await openDevice(server, 'EB', false)
      const link = lanLink(a, b)
      await eventually(() => expect(link.admitted()).toBe(true))
      expect(a.replica.doc.store.clients.size).toBe(0)

      await server.compactHistory()
      await eventually(() => expect(a?.sync.status().link).not.toBe('connected'))
      await a.sync.delta()
      // A noted the new generation without a move (it held nothing)...
      expect(deviceGeneration(a.replica).n).toBe(1)
      expect(a.events.query({ type: 'generation-moved' })).toHaveLength(0)
      // ...and its link to B, on the old one, closed.
      await eventually(() => expect(link.a()?.code).toBe(CloseCode.generationChanged))
      expect(link.a()?.reason).toMatch(/^GENERATION_CHANGED/)
      await b.users.put({ id: 'B-old', name: 'Written on the old generation' })
      await new Promise((resolve) => setTimeout(resolve, 100))
      expect(a.users.get('B-old')).toBeUndefined()
    } finally {
      await a?.close()
      await b?.close()
      await server.close()
    }
  })

  it('a link admitted on a generation this device left by any other path closes at its next message', async () => {
    // Whatever changed the generation record without telling (here: set
    // directly), the next message in or out of the link checks it.
    const server = await createServer({ dataDir: join(dir, 'server-any'), siteKey: SITE_KEY })
    let a: DevicePeer | undefined
    let b: DevicePeer | undefined
    try {
      a = await openDevice(server, 'FA', true)
      b = await openDevice(server, 'FB', true)
      await a.sync.whenReady()
      await b.sync.whenReady()
      await a.close()
      await b.close()
      a = await openDevice(server, 'FA', false)
      b = await openDevice(server, 'FB', false)
      const link = lanLink(a, b)
      await eventually(() => expect(link.admitted()).toBe(true))
      await a.replica.setRecord('sync', 'generation', { n: 7, id: 'elsewhere' })
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect(link.a()).toBeUndefined()
      await b.users.put({ id: 'B-old', name: 'Written on the old generation' })
      await eventually(() => expect(link.a()?.code).toBe(CloseCode.generationChanged))
      await new Promise((resolve) => setTimeout(resolve, 100))
      expect(a.users.get('B-old')).toBeUndefined()
    } finally {
      await a?.close()
      await b?.close()
      await server.close()
    }
  })
})
