/**
 * LAN sync over real libp2p on 127.0.0.1 (mDNS off: devices dial each other
 * by address): devices sync directly, keep syncing while the server is down,
 * and the server adopts what they exchanged when it returns; a peer without
 * the site key cannot connect; the server's part is relayed only as the
 * server wrote it.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { checkUpdate, serverClientsOf } from '../core/authorize.js'
import { multiaddr } from '@multiformats/multiaddr'
import * as encoding from 'lib0/encoding'
import { netLimits } from '../core/limits.js'
import { decodeMessage, encodeMessage, type Message } from '../core/protocol.js'
import type { CloseInfo, Connection } from '../core/transport.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { createLanNode, LAN_PROTOCOL, lanPsk, wrapStream } from '../transports/libp2p-transport.js'
import { FrameReader, frame } from '../transports/length-prefixed.js'
import { runTransportContract } from './contracts/transport.contract.js'
import { eventually } from './helpers/eventually.js'
import { ManualClock } from './helpers/manual-clock.js'

const SITE_KEY = 'test-site-key'
const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'rostersync-lan-'))
  closers.push(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/**
 * A device's random source for these tests: distinct small draws (its key
 * seed and clientID nonces stay its own), so that each delay drawn from
 * it, the reconnection spread after a server restart among them, is near
 * its shortest; a test that restarts the server then waits for no spread.
 */
let nextDraw = 1
function smallDraws(): () => number {
  let draw = (nextDraw += 1_000)
  return () => draw++
}

async function startDevice(
  id: string,
  options: {
    server?: string
    peers?: readonly DevicePeer[]
    siteKey?: string
    periodic?: boolean
    store?: ReturnType<typeof memoryStore>
  } = {},
): Promise<DevicePeer> {
  const device = await createDevice({
    id,
    store: options.store ?? memoryStore(),
    siteKey: options.siteKey ?? SITE_KEY,
    randomUint32: smallDraws(),
    ...(options.server === undefined ? {} : { server: options.server }),
    ...(options.periodic === true ? { mode: 'periodic', deltaIntervalMs: 3_600_000 } : {}),
    // mDNS multicasts on the machine's network: tests dial by address only.
    lan: {
      enabled: true,
      mdns: false,
      peers: (options.peers ?? []).flatMap((p) => p.lanAddresses),
    },
  })
  closers.push(() => device.close())
  return device
}

describe('LAN sync over libp2p', () => {
  it('two devices without a server exchange users directly, and the rules hold', async () => {
    const d1 = await startDevice('D1')
    expect(d1.lanAddresses.length).toBeGreaterThan(0)
    expect(d1.lanAddresses.every((a) => /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\w+$/.test(a))).toBe(
      true,
    )
    const d2 = await startDevice('D2', { peers: [d1] })
    await d1.users.put({ id: 'u1', name: 'Ann', cards: [{ type: 'csn', value: 'c-1' }] })
    await eventually(() =>
      expect(d2.users.get('u1')).toEqual({
        id: 'u1',
        name: 'Ann',
        cards: [{ type: 'csn', value: 'c-1' }],
      }),
    )
    // A later device write fills the same field on both (latest write wins).
    await d2.users.patch('u1', { name: 'Bea', email: 'bea@example.com' })
    await eventually(() => expect(d1.users.get('u1')?.name).toBe('Bea'))
    expect(d1.users.get('u1')?.email).toBe('bea@example.com')
    // A device delete stays on that device.
    await d2.users.delete('u1')
    expect(d2.users.get('u1')).toBeUndefined()
    await d1.users.put({ id: 'u2', name: 'Cy' })
    await eventually(() => expect(d2.users.get('u2')?.name).toBe('Cy'))
    expect(d1.users.get('u1')?.name).toBe('Bea')
    expect(d2.users.get('u1')).toBeUndefined()
  })

  it('keeps its LAN peer id across restarts, so the /p2p/ address others dial stays good', async () => {
    const dataDir = tempDir()
    // A fixed port, as a terminal's configuration has it: its address is then the same too.
    const port = await new Promise<number>((resolve) => {
      const probe = createNetServer().listen(0, '127.0.0.1', () => {
        const { port: free } = probe.address() as AddressInfo
        probe.close(() => resolve(free))
      })
    })
    const open = () =>
      createDevice({
        id: 'R1',
        dataDir,
        siteKey: SITE_KEY,
        lan: { enabled: true, mdns: false, port },
      })
    const peerId = (d: DevicePeer): string[] => d.lanAddresses.map((a) => a.split('/p2p/')[1] ?? '')
    const first = await open()
    const id = peerId(first)
    await first.close()
    const again = await open()
    closers.push(() => again.close())
    expect(id[0]).toMatch(/^12D3/)
    expect(peerId(again)).toEqual(id)
    // Another device's is another id.
    const other = await startDevice('R2')
    expect(peerId(other)[0]).not.toBe(id[0])
    // Dialled by the address it had before the restart: linked, and users flow.
    const caller = await startDevice('R3', { peers: [first] })
    await again.users.put({ id: 'u1', name: 'Ann' })
    await eventually(() => expect(caller.users.get('u1')?.name).toBe('Ann'))
  })

  it("a periodic device relays a LAN neighbour's change to the server at its delta, not at once", async () => {
    const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    closers.push(() => server.close())
    await server.users.put({ id: 'u1', name: 'Ann' })
    const a = await startDevice('PA', { server: server.url, periodic: true })
    const b = await startDevice('PB', { server: server.url, periodic: true, peers: [a] })
    for (const d of [a, b]) await d.sync.whenReady()
    await a.users.patch('u1', { email: 'ann@example.com' })
    await eventually(() => expect(b.users.get('u1')?.email).toBe('ann@example.com'))
    // B heard it over the LAN; it went to the server at once (found by a probe).
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    expect(server.users.get('u1')?.email).toBeUndefined()
    await b.sync.delta()
    await eventually(() => expect(server.users.get('u1')?.email).toBe('ann@example.com'))
  })

  it('devices keep syncing while the server is down, and the server adopts their fill when it returns', async () => {
    const dataDir = tempDir()
    let server: ServerPeer = await createServer({ dataDir, siteKey: SITE_KEY })
    const port = Number(new URL(server.url).port)
    let serverOpen = true
    closers.push(async () => {
      if (serverOpen) await server.close()
    })
    await server.users.put({ id: 'u1', name: 'Ann' })
    await server.users.patch('u1', { title: 'Engineer' })
    const d1 = await startDevice('D1', { server: server.url })
    const d2 = await startDevice('D2', { server: server.url, peers: [d1] })
    // D3 links to D2 only: D1's changes reach it through D2's relay.
    const d3 = await startDevice('D3', { server: server.url, peers: [d2] })
    await eventually(() => {
      for (const d of [d1, d2, d3]) expect(d.users.get('u1')?.title).toBe('Engineer')
    })
    await server.close()
    serverOpen = false
    await eventually(() => expect(d1.serverLink?.state).not.toBe('connected'))

    // Server down: D1's fill of the vacant email and a new user reach D3 over the LAN.
    await d1.users.patch('u1', { email: 'ann@example.com', name: 'Anna' })
    await d1.users.put({ id: 'u2', name: 'Bob' })
    await eventually(() => {
      expect(d3.users.get('u1')).toEqual({
        id: 'u1',
        name: 'Ann',
        title: 'Engineer',
        email: 'ann@example.com',
      })
      expect(d3.users.get('u2')?.name).toBe('Bob')
    })
    expect(d2.users.get('u2')?.name).toBe('Bob')

    server = await createServer({ dataDir, siteKey: SITE_KEY, port })
    serverOpen = true
    await eventually(() => {
      expect(server.users.get('u1')?.email).toBe('ann@example.com')
      expect(server.users.get('u2')?.name).toBe('Bob')
    }, 50_000)
    expect(server.users.get('u1')?.name).toBe('Ann')
    expect(
      server.events.query({ type: 'user-update-succeeded', userId: 'u1' }).map((e) => e.origin),
    ).toContain('device')
    expect(server.events.query({ type: 'write-refused' })).toEqual([])
    // The server now owns the email: a later device edit of it is overridden everywhere.
    await server.users.patch('u1', { email: 'ann@corp.example' })
    await eventually(() => {
      for (const d of [d1, d2, d3]) expect(d.users.get('u1')?.email).toBe('ann@corp.example')
    })
  })

  it('a revoked device no longer reads the roster over the LAN, though it holds the site key', async () => {
    const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    let serverOpen = true
    closers.push(async () => {
      if (serverOpen) await server.close()
    })
    await server.users.put({ id: 'u1', name: 'Ann' })
    const d1 = await startDevice('D1', { server: server.url })
    await eventually(() => expect(d1.users.get('u1')?.name).toBe('Ann'))
    const d2 = await startDevice('D2', { server: server.url, peers: [d1] })
    const d3 = await startDevice('D3', { server: server.url, peers: [d1] })
    await eventually(() => {
      for (const d of [d2, d3]) expect(d.users.get('u1')?.name).toBe('Ann')
    })
    // Its status shows its LAN links (a probe: nothing said they were there or refused).
    await eventually(() => expect(d1.sync.status().lan).toEqual({ peers: 2 }))
    expect(await server.devices.revoke('D2')).toBe(true)
    await eventually(() => expect(d1.replica.isRevoked('D2')).toBe(true))
    // The server goes away: the LAN is the only way left.
    await server.close()
    serverOpen = false
    await d1.users.put({ id: 'u2', name: 'Bob' })
    // D3 gets it over the LAN; D2, revoked, is refused at D1's door.
    await eventually(() => expect(d3.users.get('u2')?.name).toBe('Bob'), 20_000)
    await new Promise((resolve) => setTimeout(resolve, 1_500))
    expect(d2.users.get('u2')).toBeUndefined()
    // D2 is told why its LAN link was refused, and logs it once (not once per redial).
    expect(d2.sync.status().lan?.lastError).toMatchObject({ code: 'PEER_REVOKED' })
    const logged = d2.events.query({ type: 'lan-link-refused' })
    expect(logged.map((e) => e.code)).toEqual(['PEER_REVOKED'])
    // D1's refusal, in D1's words: D2's log says D1 closed the link.
    expect(logged[0]?.message).toMatch(/^LAN peer .* closed the link: PEER_REVOKED/)
    for (const e of d1.events.query({ type: 'lan-link-refused' }))
      expect(e.message).not.toMatch(/closed the link/)
    expect(d1.sync.status().lan?.peers).toBe(1)
  }, 40_000)

  it('a peer with a wrong site key cannot connect, and nothing is exchanged', async () => {
    const d1 = await startDevice('D1')
    await d1.users.put({ id: 'u1', name: 'Ann' })
    const intruder = await startDevice('X1', { siteKey: 'another-site', peers: [d1] })
    await intruder.users.put({ id: 'u9', name: 'Mallory' })
    // A member dialled after the intruder syncs, which shows the intruder had its chance.
    const d2 = await startDevice('D2', { peers: [d1] })
    await eventually(() => expect(d2.users.get('u1')?.name).toBe('Ann'))
    expect(intruder.users.get('u1')).toBeUndefined()
    expect(d1.users.get('u9')).toBeUndefined()
    expect(d2.users.get('u9')).toBeUndefined()
  })
})

describe('LAN links: admission and bad input', () => {
  /** A member node without a replica, to speak raw messages to a device. */
  async function rawLink(device: DevicePeer, siteKey = SITE_KEY) {
    const node = await createLanNode({ siteKey })
    closers.push(() => node.stop())
    const link = await node.dial(device.lanAddresses.map((a) => multiaddr(a)))
    const stream = await link.newStream(LAN_PROTOCOL)
    const connection = wrapStream(stream, 'raw')
    const received: Message[] = []
    connection.onMessage((bytes) => received.push(decodeMessage(bytes)))
    let closed: CloseInfo | undefined
    connection.onClose((info) => (closed = info))
    return { stream, connection, received, closed: () => closed }
  }

  it('a node with another site key cannot even open a connection', async () => {
    const d1 = await startDevice('D1')
    await expect(rawLink(d1, 'another-site')).rejects.toThrow()
  })

  it("a member's forged write into the server's part is refused, answered and logged", async () => {
    const d1 = await startDevice('D1')
    await d1.users.put({ id: 'u1', name: 'Ann' })
    const raw = await rawLink(d1)
    await eventually(() => expect(raw.received.map((m) => m.type)).toContain('sync-step1'))
    const forger = new Y.Doc()
    forger.getMap('u:server').set('u1', { e: 0, t: 1, f: { name: 'Mallory', status: 'active' } })
    raw.connection.send(
      encodeMessage({ type: 'sync-update', update: Y.encodeStateAsUpdate(forger) }),
    )
    await eventually(() =>
      expect(raw.received).toContainEqual(
        expect.objectContaining({ type: 'error', code: 'FORBIDDEN_WRITE' }),
      ),
    )
    expect(d1.users.get('u1')).toEqual({ id: 'u1', name: 'Ann' })
    expect(d1.events.query({ type: 'write-refused' })[0]?.code).toBe('FORBIDDEN_WRITE')
    // A refusal is never silent: the link is closed with the error's code
    // (issue 11), and a new link takes well-formed traffic.
    await eventually(() => expect(raw.closed()?.code).toBe(1008))
    expect(raw.closed()?.reason).toMatch(/^FORBIDDEN_WRITE/)
    const again = await rawLink(d1)
    const device = new Y.Doc()
    device.getMap('u:D7').set('u7', { e: 0, f: { name: 'Seven' }, s: { name: 1 } })
    again.connection.send(
      encodeMessage({ type: 'sync-update', update: Y.encodeStateAsUpdate(device) }),
    )
    await eventually(() => expect(d1.users.get('u7')?.name).toBe('Seven'))
  })

  it('a peer that drops every link at once is redialled with a growing backoff, not at the shortest delay', async () => {
    // A member node that takes each sync stream and closes it at once.
    const node = await createLanNode({ siteKey: SITE_KEY })
    closers.push(() => node.stop())
    let streams = 0
    await node.handle(LAN_PROTOCOL, (stream) => {
      streams++
      wrapStream(stream, 'dropper').close(1000, 'go away')
    })
    const clock = new ManualClock()
    const device = await createDevice({
      id: 'D1',
      store: memoryStore(),
      siteKey: SITE_KEY,
      clock,
      lan: {
        enabled: true,
        mdns: false,
        peers: node.getMultiaddrs().map((a) => a.toString()),
      },
    })
    closers.push(() => device.close())
    await eventually(() => expect(streams).toBe(1))
    // Two minutes of the device's time, in half-second steps, each given
    // real time for the dial it may start.
    for (let t = 0; t < 120_000; t += 500) {
      await clock.advance(500)
      await new Promise((resolve) => setTimeout(resolve, 15))
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
    // Growing from retryDelayMsMin (500 ms: the first after 250-500 ms),
    // doubling to the cap: about 9 dials in two minutes. Reset after every
    // link, it redialled every 250-500 ms: over 200.
    expect(streams).toBeGreaterThan(3)
    expect(streams).toBeLessThan(20)
  }, 60_000)

  it('a frame declaring more than messageBytesMax closes the link with 1009', async () => {
    const d1 = await startDevice('D1')
    const raw = await rawLink(d1)
    // A length prefix of messageBytesMax + 2 and nothing after it.
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, netLimits.messageBytesMax + 2)
    raw.stream.send(encoding.toUint8Array(e))
    await eventually(() => expect(raw.closed()?.code).toBe(1009))
    expect(raw.closed()?.reason).toMatch(/^MESSAGE_TOO_LARGE/)
  })
})

describe("relaying the server's part", () => {
  /** A server-like doc that writes u:server, and a device doc that received it. */
  function serverAndDevice(): { server: Y.Doc; device: Y.Doc } {
    const server = new Y.Doc()
    server.getMap('u:server').set('u1', { e: 0, t: 1, f: { name: 'Ann' } })
    const device = new Y.Doc()
    Y.applyUpdate(device, Y.encodeStateAsUpdate(server))
    return { server, device }
  }

  it("accepts the server's own later writes, relayed", () => {
    const { server, device } = serverAndDevice()
    const before = Y.encodeStateVector(server)
    server.getMap('u:server').set('u1', { e: 0, t: 2, f: { name: 'Anne' } })
    const relayed = Y.encodeStateAsUpdate(server, before)
    const summary = checkUpdate(device, relayed, {
      mayWrite: () => true,
      serverClients: serverClientsOf(device),
      now: Date.now(),
    })
    expect(summary.deletes).toBe(1)
  })

  it("refuses a forged write into the server's part from another Yjs client", () => {
    const { device } = serverAndDevice()
    const forger = new Y.Doc()
    Y.applyUpdate(forger, Y.encodeStateAsUpdate(device))
    const before = Y.encodeStateVector(forger)
    forger.getMap('u:server').set('u1', { e: 0, t: 9, f: { name: 'Mallory' } })
    expect(() =>
      checkUpdate(device, Y.encodeStateAsUpdate(forger, before), {
        mayWrite: () => true,
        serverClients: serverClientsOf(device),
        now: Date.now(),
      }),
    ).toThrow(expect.objectContaining({ code: 'FORBIDDEN_WRITE' }) as Error)
  })

  it('refuses a bare delete of a server entry', () => {
    const { server, device } = serverAndDevice()
    const forger = new Y.Doc()
    Y.applyUpdate(forger, Y.encodeStateAsUpdate(server))
    const deletes: Uint8Array[] = []
    forger.on('update', (u: Uint8Array) => deletes.push(u))
    forger.getMap('u:server').delete('u1')
    expect(deletes).toHaveLength(1)
    expect(() =>
      checkUpdate(device, deletes[0] as Uint8Array, {
        mayWrite: () => true,
        serverClients: serverClientsOf(device),
        now: Date.now(),
      }),
    ).toThrow(expect.objectContaining({ code: 'FORBIDDEN_WRITE' }) as Error)
  })

  it('does not judge what the document already holds (a state exchange carries the whole delete set)', () => {
    const { server } = serverAndDevice()
    server.getMap('u:server').set('u1', { e: 0, t: 2, f: { name: 'Anne' } })
    const device = new Y.Doc()
    Y.applyUpdate(device, Y.encodeStateAsUpdate(server))
    device.getMap('u:D1').set('u1', { e: 0, f: { email: 'a@example.com' }, s: { email: 1 } })
    // The server side: a device may not write the server's part, yet its
    // step 2 names the server's own (already applied) deletes.
    const step2 = Y.encodeStateAsUpdate(device, Y.encodeStateVector(server))
    expect(Y.decodeUpdate(step2).ds.clients.size).toBe(1)
    const summary = checkUpdate(server, step2, {
      mayWrite: (owner) => owner !== 'server',
      now: Date.now(),
    })
    expect(summary.deletes).toBe(0)
    expect([...summary.roots]).toEqual(['u:D1'])
  })
})

describe("a device's writes relayed to the server after its certificate expired", () => {
  it('reach the server through the relaying device, however long their writer stays away', async () => {
    // A probe: D1 wrote with the server down, D2 heard it over the LAN, D1
    // stayed off for 8 days (past its certificate's 7). D2 offered only
    // envelopes whose certificates were valid, so the server never got
    // D1's writes, while D2 showed them for good. The server checks a
    // writer's key in its registry, not the certificate's time.
    let ahead = 0
    const clock = {
      now: () => Date.now() + ahead,
      setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
      clearTimeout: (handle: unknown) => clearTimeout(handle as NodeJS.Timeout),
    }
    const dir = tempDir()
    let server = await createServer({
      dataDir: join(dir, 'server'),
      port: 0,
      siteKey: SITE_KEY,
      clock,
    })
    closers.push(() => server.close())
    const port = Number(new URL(server.url).port)
    await server.users.put({ id: 'u1', name: 'Ann' })
    const open = (id: string, peers: string[]): Promise<DevicePeer> =>
      createDevice({
        id,
        store: memoryStore(),
        server: server.url,
        siteKey: SITE_KEY,
        clock,
        randomUint32: smallDraws(),
        lan: { enabled: true, mdns: false, peers },
      })
    const d1 = await open('D1', [])
    closers.push(() => d1.close())
    await d1.sync.whenReady()
    const d2 = await open('D2', d1.lanAddresses)
    closers.push(() => d2.close())
    await d2.sync.whenReady()
    await eventually(() => expect(d2.sync.status().lan?.peers).toBe(1))
    await server.close()
    await d1.users.patch('u1', { email: 'ann@d1.example' })
    await d1.users.put({ id: 'u9', name: 'Nine' })
    await eventually(() => expect(d2.users.get('u9')?.name).toBe('Nine'))
    expect(d2.users.get('u1')?.email).toBe('ann@d1.example')
    await d1.close()
    ahead = 8 * 24 * 60 * 60_000 // past the certificate's life
    server = await createServer({ dataDir: join(dir, 'server'), port, siteKey: SITE_KEY, clock })
    closers.push(() => server.close())
    await d2.sync.delta()
    await d2.sync.whenIdle()
    expect(server.users.get('u9')?.name).toBe('Nine')
    expect(server.users.get('u1')?.email).toBe('ann@d1.example')
  }, 60_000)
})

describe('a key reset, then the same key approved again', () => {
  it("takes the key's revocation back, so that LAN peers link with the device again", async () => {
    // A probe: the terminal had not lost its key; the administrator reset
    // it, compared the fingerprint the terminal showed on joining again,
    // and approved. The server took the device back, but the reset's
    // revocation of that key stayed in the roster, and every LAN peer
    // refused the device for good (CERTIFICATE_REVOKED).
    const server = await createServer({ store: memoryStore(), port: 0, siteKey: SITE_KEY })
    closers.push(() => server.close())
    // D1's data kept across its restart (its key with it).
    const d1Store = memoryStore()
    d1Store.close = async () => undefined
    const d1 = await startDevice('D1', { server: server.url, store: d1Store })
    await d1.sync.whenReady()
    const d2 = await startDevice('D2', { server: server.url, peers: [d1] })
    await d2.sync.whenReady()
    await eventually(() => expect(d2.sync.status().lan?.peers).toBe(1))
    await d1.close()
    expect(await server.devices.resetKey('D1')).toBe(true)
    // No approval while no key is bound: the first proof that came, any
    // site-key holder's, would take the id (a probe).
    await expect(server.devices.approve('D1')).rejects.toMatchObject({ code: 'PEER_PENDING' })
    const http = await fetch(`${server.http}/api/devices/D1/approve`, {
      method: 'POST',
      headers: { authorization: `Bearer ${server.adminToken}` },
    })
    expect(http.status).toBe(409)
    await eventually(() => expect(d2.replica.hasRevocations()).toBe(true))
    await eventually(() => expect(d2.sync.status().lan?.peers).toBe(0))
    // D1 joins again with its key, and waits; its fingerprint is the one it shows.
    const again = await startDevice('D1', { server: server.url, store: d1Store, peers: [d2] })
    await eventually(() =>
      expect(server.devices.list().find((d) => d.id === 'D1')).toMatchObject({
        keyFingerprint: again.keyFingerprint,
      }),
    )
    expect(again.keyFingerprint).toBe(d1.keyFingerprint)
    expect(await server.devices.approve('D1')).toBe(true)
    await d2.sync.delta()
    expect(d2.replica.hasRevocations()).toBe(false)
    await eventually(() => expect(d2.sync.status().lan?.peers).toBe(1), 30_000)
  }, 60_000)
})

describe('LAN framing and key', () => {
  it('reassembles messages split and joined across chunks', () => {
    const messages = [new Uint8Array(0), Uint8Array.of(1, 2, 3), new Uint8Array(300).fill(7)]
    const stream = Uint8Array.from(messages.flatMap((m) => [...frame(m)]))
    const reader = new FrameReader(1_000)
    const out: Uint8Array[] = []
    for (let i = 0; i < stream.length; i += 5) out.push(...reader.push(stream.subarray(i, i + 5)))
    expect(out).toEqual(messages)
  })

  it('refuses a declared length over the limit before buffering it', () => {
    const reader = new FrameReader(100)
    expect(() => reader.push(frame(new Uint8Array(101)).subarray(0, 2))).toThrow(
      expect.objectContaining({ code: 'MESSAGE_TOO_LARGE' }) as Error,
    )
  })

  it('derives one pnet key per site key', () => {
    const key = new TextDecoder().decode(lanPsk(SITE_KEY))
    expect(key).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/)
    expect(lanPsk(SITE_KEY)).toEqual(lanPsk(SITE_KEY))
    expect(lanPsk('another-site')).not.toEqual(lanPsk(SITE_KEY))
  })
})

runTransportContract('libp2p stream on 127.0.0.1', async () => {
  const [server, client] = await Promise.all([
    createLanNode({ siteKey: SITE_KEY }),
    createLanNode({ siteKey: SITE_KEY }),
  ])
  const accepted = new Promise<Connection>((resolve) => {
    void server.handle(LAN_PROTOCOL, (stream, connection) =>
      resolve(wrapStream(stream, connection.remotePeer.toString())),
    )
  })
  const link = await client.dial(server.getMultiaddrs())
  const a = wrapStream(await link.newStream(LAN_PROTOCOL), link.remotePeer.toString())
  const b = await accepted
  return {
    a,
    b,
    cleanup: async () => {
      await Promise.all([client.stop(), server.stop()])
    },
  }
})

describe('a libp2p link says what it buffers', () => {
  it('hands on nothing read after a close frame, even in the same read', async () => {
    const [listener, dialler] = await Promise.all([
      createLanNode({ siteKey: SITE_KEY }),
      createLanNode({ siteKey: SITE_KEY }),
    ])
    closers.push(() => Promise.all([dialler.stop(), listener.stop()]).then(() => undefined))
    const got: Uint8Array[] = []
    const closed = new Promise<CloseInfo>((resolve) => {
      void listener.handle(LAN_PROTOCOL, (stream, connection) => {
        const link = wrapStream(stream, connection.remotePeer.toString())
        link.onMessage((m) => got.push(m))
        link.onClose(resolve)
      })
    })
    const connection = await dialler.dial(listener.getMultiaddrs())
    const stream = await connection.newStream(LAN_PROTOCOL)
    // One write: a message, the close frame (kind 1, code, reason), a message.
    const frameOf = (kind: number, body: (e: encoding.Encoder) => void): Uint8Array => {
      const e = encoding.createEncoder()
      encoding.writeUint8(e, kind)
      body(e)
      return frame(encoding.toUint8Array(e))
    }
    stream.send(
      Buffer.concat([
        frameOf(0, (e) => encoding.writeUint8Array(e, Uint8Array.of(1))),
        frameOf(1, (e) => {
          encoding.writeVarUint(e, 1000)
          encoding.writeVarString(e, 'bye')
        }),
        frameOf(0, (e) => encoding.writeUint8Array(e, Uint8Array.of(2))),
      ]),
    )
    expect(await closed).toEqual({ code: 1000, reason: 'bye', byPeer: true })
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(got).toEqual([Uint8Array.of(1)])
  })

  it('bufferedBytes grows while the peer has not read, and falls to 0 as it reads', async () => {
    const [server, client] = await Promise.all([
      createLanNode({ siteKey: SITE_KEY }),
      createLanNode({ siteKey: SITE_KEY }),
    ])
    closers.push(() => Promise.all([client.stop(), server.stop()]).then(() => undefined))
    const accepted = new Promise<Connection>((resolve) => {
      void server.handle(LAN_PROTOCOL, (stream, connection) =>
        resolve(wrapStream(stream, connection.remotePeer.toString())),
      )
    })
    const link = await client.dial(server.getMultiaddrs())
    const a = wrapStream(await link.newStream(LAN_PROTOCOL), link.remotePeer.toString())
    const b = await accepted
    let got = 0
    b.onMessage(() => got++)
    const MIB = 1024 * 1024
    // Handed over in one turn: yamux passes on only what the peer's
    // window admits, the rest waits on the stream.
    for (let i = 0; i < 8; i++) a.send(new Uint8Array(MIB).fill(i))
    expect(a.bufferedBytes).toBeGreaterThan(4 * MIB)
    await eventually(() => expect(got).toBe(8), 30_000)
    await eventually(() => expect(a.bufferedBytes).toBe(0))
  }, 60_000)
})

describe('where the LAN node listens', () => {
  it('refuses a host that is not an IP address, and a port in use, with INVALID_OPTIONS', async () => {
    const open = (lan: { host?: string; port?: number }) =>
      createDevice({
        id: 'lan-listen',
        store: memoryStore(),
        siteKey: 'lan-listen-site-key-0123456789',
        lan: { enabled: true, mdns: false, ...lan },
      })
    const named = open({ host: 'localhost' })
    await expect(named).rejects.toMatchObject({ code: 'INVALID_OPTIONS' })
    await expect(named).rejects.toThrow(/lan\.host/)
    const taken = createNetServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    try {
      const { port } = taken.address() as AddressInfo
      const inUse = open({ host: '127.0.0.1', port })
      await expect(inUse).rejects.toMatchObject({ code: 'INVALID_OPTIONS' })
      await expect(inUse).rejects.toThrow(
        new RegExp(`^cannot listen on the LAN at .*${port}: EADDRINUSE`),
      )
    } finally {
      await new Promise((resolve) => taken.close(resolve))
    }
  })

  it('refuses LAN peers no link would ever dial, before anything opens', async () => {
    // A probe: these were taken, and redialled for ever with nothing said.
    const dir = await mkdtemp(join(tmpdir(), 'rostersync-lan-peers-'))
    try {
      for (const [peer, said] of [
        ['', /is not over TCP/],
        ['/ip4/8.8.8.8/tcp/4000', /is not a loopback or private IP address/],
        ['/ip4/127.0.0.1/udp/4000/quic-v1', /is not over TCP/],
        ['/dns4/nowhere.invalid/tcp/4000', /is not over TCP/],
        // The TCP transport dials nothing past the port but a peer id (a review).
        ['/ip4/127.0.0.1/tcp/4000/ws', /is not over TCP/],
        ['/ip4/127.0.0.1/tcp/4000/tls', /is not over TCP/],
      ] as const) {
        const dataDir = join(dir, String(peer.length))
        const opened = createDevice({
          id: 'lan-peers',
          dataDir,
          siteKey: 'lan-peers-site-key-0123456789',
          lan: { enabled: true, mdns: false, peers: [peer] },
        })
        await expect(opened, peer).rejects.toMatchObject({ code: 'INVALID_OPTIONS' })
        await expect(opened, peer).rejects.toThrow(said)
        expect(existsSync(dataDir), peer).toBe(false)
      }
      // Loopback and private addresses, with or without a peer id, are taken.
      const device = await createDevice({
        id: 'lan-peers',
        store: memoryStore(),
        siteKey: 'lan-peers-site-key-0123456789',
        lan: {
          enabled: true,
          mdns: false,
          peers: ['/ip4/127.0.0.1/tcp/1', '/ip4/192.168.1.20/tcp/4000', '/ip6/::1/tcp/1'],
        },
      })
      await device.close()
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('a port in use changes nothing: no data directory written, no server joined', async () => {
    // A probe: the device wrote its directory and joined its server before
    // its LAN failed to listen; the server bound its id to that key, and a
    // retry on a fresh directory was refused AUTH_FAILED.
    const dir = await mkdtemp(join(tmpdir(), 'rostersync-lan-port-'))
    const server = await createServer({
      store: memoryStore(),
      siteKey: 'lan-port-site-key-0123456789',
    })
    const taken = createNetServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    try {
      const { port } = taken.address() as AddressInfo
      const open = (dataDir: string, lanPort: number) =>
        createDevice({
          id: 'lan-port',
          dataDir,
          server: server.url,
          siteKey: 'lan-port-site-key-0123456789',
          lan: { enabled: true, mdns: false, port: lanPort },
        })
      await expect(open(join(dir, 'first'), port)).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
      })
      expect(existsSync(join(dir, 'first'))).toBe(false)
      expect(server.devices.list()).toEqual([])
      // A retry on a fresh directory and a free port joins.
      const device = await open(join(dir, 'second'), 0)
      try {
        await device.sync.whenReady()
      } finally {
        await device.close()
      }
    } finally {
      await new Promise((resolve) => taken.close(resolve))
      await server.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
