/**
 * The LAN door under floods (issue 11, item 5 on the LAN side): a peer that
 * holds the site key but has not shown a certificate yet is bounded like any
 * untrusted link — in number (`netLimits.lanHandshakesInFlightMax`), in time
 * (`handshakeTimeoutMs`, for its libp2p connection too), in message size
 * (`lanHandshakeMessageBytesMax`) and in messages per second (the link's
 * buckets, counted from its first message) — and an admitted peer's link
 * holds back at most `limits.heldBackUpdatesPerLinkMax` updates. All over
 * real libp2p on 127.0.0.1, against a device that pinned its server's key;
 * the device's clock is a manual one (no timer fires unless the test says).
 */
import { multiaddr } from '@multiformats/multiaddr'
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { limits, netLimits } from '../core/limits.js'
import { decodeMessage, encodeMessage, type Message } from '../core/protocol.js'
import {
  decodeCertificate,
  deriveClientId,
  encodeEnvelope,
  keyPairFromSeed,
  sealEnvelope,
  signLanProof,
  type Certificate,
  type KeyPair,
} from '../core/signing.js'
import type { Transport } from '../core/transport.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { encodeLanAuth } from '../peers/lan-auth.js'
import { doorEvictee, hostOf } from '../peers/lan-door.js'
import { LogLimiter } from '../peers/log-limiter.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { DeviceRates, LinkRates } from '../peers/sync-session/inbound.js'
import { memoryStore } from '../storage/level-store.js'
import { createLanNode } from '../transports/libp2p-transport.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'
import { joinTarget } from './helpers/join-url.js'
import { varUint } from './helpers/hostile-frames.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { rawLanLink, type RawLanLink } from './helpers/raw-links.js'
import { withLimits } from './helpers/limits.js'

const SITE_KEY = 'lan-door-site'
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

interface Site {
  readonly clock: ManualClock
  readonly server: ServerPeer
  /** The target: pinned (it admits LAN peers by certificate), LAN on 127.0.0.1. */
  readonly d2: DevicePeer
  /** D2's libp2p peer id (the verifier's end of a LAN proof). */
  readonly d2End: string
}

async function site(): Promise<Site> {
  const clock = new ManualClock()
  const server = await createServer({
    store: memoryStore(),
    clock,
    listen: false,
    siteKey: SITE_KEY,
  })
  closers.push(() => server.close())
  await server.users.put({ id: 'u1', name: 'Ann' })
  const transport: Transport = {
    connect: async (url) => {
      const [mine, theirs] = memoryPair('device', 'server')
      server.accept(theirs, url)
      return mine
    },
    close: async () => undefined,
  }
  const d2 = await createDevice({
    id: 'D2',
    store: memoryStore(),
    clock,
    server: 'ws://sim-server',
    serverTransport: transport,
    siteKey: SITE_KEY,
    lan: { enabled: true, mdns: false, peers: [] },
  })
  closers.push(() => d2.close())
  await d2.sync.full()
  const d2End = (d2.lanAddresses[0] ?? '').split('/p2p/')[1] ?? ''
  expect(d2End).not.toBe('')
  return { clock, server, d2, d2End }
}

type LanNode = Awaited<ReturnType<typeof createLanNode>>

/** A hostile (or member) libp2p node holding the site key. */
async function node(): Promise<LanNode> {
  const n = await createLanNode({ siteKey: SITE_KEY })
  closers.push(async () => {
    await n.stop()
  })
  return n
}

/** Joins the server as `deviceId` with `key` (in memory); resolves with its certificate. */
async function certify(s: Site, deviceId: string, key: KeyPair): Promise<Certificate> {
  const [mine, theirs] = memoryPair(deviceId, 'server')
  const received: Message[] = []
  mine.onMessage((bytes) => received.push(decodeMessage(bytes)))
  s.server.accept(theirs, joinTarget(deviceId, key, SITE_KEY, s.clock.now()))
  await eventually(() => expect(received[0]?.type).toBe('hello'))
  const hello = received[0]
  if (hello?.type !== 'hello') throw new Error('no hello')
  mine.close(1000, 'done')
  return decodeCertificate(hello.certificate)
}

/** A link from `from` to D2, still at D2's door (nothing shown). */
function link(s: Site, from: Awaited<ReturnType<typeof node>>): Promise<RawLanLink> {
  const raw = rawLanLink(from, s.d2.lanAddresses)
  return raw.then((r) => {
    closers.push(async () => r.close())
    return r
  })
}

describe('links at the LAN door', () => {
  it(`past ${netLimits.lanHandshakesInFlightMax} at once, the oldest waiting is closed 1013 TOO_MANY_HANDSHAKES and the newcomer waits; a member still gets in (LAN audit)`, async () => {
    const s = await site()
    // Two sync streams per libp2p connection: half as many nodes.
    const nodes = await Promise.all(
      Array.from({ length: netLimits.lanHandshakesInFlightMax / 2 + 1 }, () => node()),
    )
    const waiting: RawLanLink[] = []
    for (const n of nodes.slice(0, -1)) waiting.push(await link(s, n), await link(s, n))
    await settle(20)
    for (const w of waiting) expect(w.closed()).toBeUndefined()
    const extra = nodes.at(-1) as Awaited<ReturnType<typeof node>>
    const newcomer = await link(s, extra)
    const close = await (waiting[0] as RawLanLink).whenClosed(5_000)
    expect(close?.code).toBe(1013)
    expect(close?.reason).toMatch(/^TOO_MANY_HANDSHAKES: /)
    await settle(20)
    expect(newcomer.closed()).toBeUndefined()
    for (const w of waiting.slice(1)) expect(w.closed()).toBeUndefined()
    // A door kept full by links that show nothing: a member arriving is
    // admitted all the same (its link takes the oldest place).
    const key = keyPairFromSeed(new Uint8Array(32).fill(9))
    const cert = await certify(s, 'D9', key)
    const member = await node()
    const admitted = await link(s, member)
    await admitted.send(
      encodeLanAuth(cert, signLanProof(key, cert.site, member.peerId.toString(), s.d2End)),
    )
    await eventually(() =>
      expect(admitted.received.some((m) => m.type === 'sync-step1')).toBe(true),
    )
    // The handshake's time passes: every waiting link is closed typed.
    await s.clock.advance(netLimits.handshakeTimeoutMs)
    for (const w of [...waiting.slice(2), newcomer]) {
      const info = await w.whenClosed(5_000)
      expect(info?.code === 4401 || info?.code === 1006).toBe(true)
    }
    expect(admitted.closed()).toBeUndefined()
  })

  it('a libp2p connection with no admitted link is closed after the handshake time; an admitted one stays', async () => {
    const s = await site()
    const idle = await node()
    await idle.dial(s.d2.lanAddresses.map((a) => multiaddr(a)))
    const member = await node()
    const d9 = keyPairFromSeed(new Uint8Array(32).fill(9))
    const cert = await certify(s, 'D9', d9)
    const admitted = await link(s, member)
    await admitted.send(
      encodeLanAuth(cert, signLanProof(d9, cert.site, member.peerId.toString(), s.d2End)),
    )
    // Admitted: D2's session starts with its step 1.
    await eventually(() =>
      expect(admitted.received.some((m) => m.type === 'sync-step1')).toBe(true),
    )
    expect(idle.getConnections()).toHaveLength(1)
    await s.clock.advance(netLimits.handshakeTimeoutMs)
    await eventually(() => expect(idle.getConnections()).toHaveLength(0))
    await settle(20)
    expect(member.getConnections()).toHaveLength(1)
    expect(admitted.closed()).toBeUndefined()
  })

  it('a connection whose admitted links all closed is closed after the handshake time (a link closed 4403 on revocation too)', async () => {
    const s = await site()
    const { raw, member } = await admittedLink(s)
    await eventually(() => expect(raw.received.some((m) => m.type === 'sync-step1')).toBe(true))
    // The peer closes its link and keeps the libp2p connection, as a device
    // refused or revoked can.
    raw.close()
    await settle(20)
    expect(member.getConnections()).toHaveLength(1)
    await s.clock.advance(netLimits.handshakeTimeoutMs - 1)
    await settle(20)
    expect(member.getConnections()).toHaveLength(1)
    await s.clock.advance(1)
    await eventually(() => expect(member.getConnections()).toHaveLength(0))
  })

  it(`at ${netLimits.lanPeersMax} connections a newcomer takes the place of one that carries no admitted link, never of a member's`, async () => {
    withLimits(netLimits, { lanPeersMax: 4 })
    const s = await site()
    const { raw: admitted } = await admittedLink(s)
    await eventually(() =>
      expect(admitted.received.some((m) => m.type === 'sync-step1')).toBe(true),
    )
    // Three key holders that show nothing fill the other places, oldest first.
    const squatters: LanNode[] = []
    for (let i = 0; i < 3; i++) {
      const n = await node()
      await n.dial(s.d2.lanAddresses.map((a) => multiaddr(a)))
      squatters.push(n)
      await settle(10)
    }
    await settle(20)
    for (const n of squatters) expect(n.getConnections()).toHaveLength(1)
    // A newcomer: the oldest squatter makes room (one host: the oldest of all).
    const newcomer = await node()
    await newcomer.dial(s.d2.lanAddresses.map((a) => multiaddr(a)))
    await eventually(() => expect(squatters[0]?.getConnections()).toHaveLength(0))
    await settle(20)
    expect(newcomer.getConnections()).toHaveLength(1)
    for (const n of squatters.slice(1)) expect(n.getConnections()).toHaveLength(1)
    expect(admitted.closed()).toBeUndefined()
  })

  it(`reads at most ${netLimits.lanHandshakeMessageBytesMax} bytes a message before admission: 1009 MESSAGE_TOO_LARGE from the length prefix alone`, async () => {
    const s = await site()
    const raw = await link(s, await node())
    // A frame that says 1 MiB follows, and nothing of it does.
    await raw.sendRaw(varUint(1024 * 1024))
    const close = await raw.whenClosed(5_000)
    expect(close?.code).toBe(1009)
    expect(close?.reason).toMatch(/^MESSAGE_TOO_LARGE: /)
  })

  it('counts messages per second from the first one at the door: past the burst, 1008 RATE_LIMITED', async () => {
    const s = await site()
    const raw = await link(s, await node())
    // Dropped unread before admission, but counted (the clock stands still).
    const step1 = encodeMessage({ type: 'sync-step1', stateVector: Uint8Array.of(0) })
    for (let i = 0; i < netLimits.linkMessagesBurstMax + 10 && raw.closed() === undefined; i++)
      await raw.send(step1)
    const close = await raw.whenClosed(5_000)
    expect(close?.code).toBe(1008)
    expect(close?.reason).toMatch(/^RATE_LIMITED: /)
  })
})

/** A link from a fresh node to D2, admitted as D9 (a certificate of the server, proven on the link). */
async function admittedLink(
  s: Site,
  before: (raw: RawLanLink) => Promise<void> = async () => undefined,
): Promise<{ raw: RawLanLink; key: KeyPair; cert: Certificate; member: LanNode }> {
  const member = await node()
  const key = keyPairFromSeed(new Uint8Array(32).fill(9))
  const cert = await certify(s, 'D9', key)
  const raw = await link(s, member)
  await before(raw)
  await raw.send(
    encodeLanAuth(cert, signLanProof(key, cert.site, member.peerId.toString(), s.d2End)),
  )
  return { raw, key, cert, member }
}

describe('admitted LAN links per device', () => {
  it(`one certificate from many libp2p identities gets ${netLimits.lanLinksPerDeviceMax} links; the next is closed 1008 TOO_MANY_LINKS`, async () => {
    const s = await site()
    const key = keyPairFromSeed(new Uint8Array(32).fill(9))
    const cert = await certify(s, 'D9', key)
    const links: RawLanLink[] = []
    for (let i = 0; i <= netLimits.lanLinksPerDeviceMax; i++) {
      const member = await node()
      const raw = await link(s, member)
      await raw.send(
        encodeLanAuth(cert, signLanProof(key, cert.site, member.peerId.toString(), s.d2End)),
      )
      links.push(raw)
      if (i < netLimits.lanLinksPerDeviceMax)
        await eventually(() => expect(raw.received.some((m) => m.type === 'sync-step1')).toBe(true))
    }
    const refused = links.at(-1) as RawLanLink
    const close = await refused.whenClosed(5_000)
    expect(close?.code).toBe(1008)
    expect(close?.reason).toMatch(/^TOO_MANY_LINKS: /)
    expect(refused.received.some((m) => m.type === 'sync-step1')).toBe(false)
    for (const open of links.slice(0, -1)) expect(open.closed()).toBeUndefined()
    // One closes: room for the device again.
    links[0]?.close()
    const member = await node()
    const again = await link(s, member)
    await again.send(
      encodeLanAuth(cert, signLanProof(key, cert.site, member.peerId.toString(), s.d2End)),
    )
    await eventually(() => expect(again.received.some((m) => m.type === 'sync-step1')).toBe(true))
  }, 60_000)
})

describe('refusals on LAN links in the log', () => {
  it('a write-refused once per code and device, however many links and libp2p identities it uses to be refused again', async () => {
    const s = await site()
    const key = keyPairFromSeed(new Uint8Array(32).fill(9))
    const cert = await certify(s, 'D9', key)
    const doc = new Y.Doc()
    doc.getMap('u:D9').set('u1', { e: 0, f: { name: 'x' }, s: { name: 1 } })
    const unsigned = encodeMessage({ type: 'sync-update', update: Y.encodeStateAsUpdate(doc) })
    const refusals = (): number => s.d2.events.query({ type: 'write-refused' }).length
    const refusedOn = async (member: LanNode, as = { cert, key }): Promise<void> => {
      const raw = await link(s, member)
      await raw.send(
        encodeLanAuth(
          as.cert,
          signLanProof(as.key, as.cert.site, member.peerId.toString(), s.d2End),
        ),
      )
      await eventually(() => expect(raw.received.some((m) => m.type === 'sync-step1')).toBe(true))
      await raw.send(unsigned)
      expect((await raw.whenClosed(5_000))?.reason).toMatch(/^FORBIDDEN_WRITE: /)
    }
    const member = await node()
    for (let i = 0; i < 3; i++) await refusedOn(member)
    await settle(20)
    expect(refusals()).toBe(1)
    // The same device from another libp2p identity: the same cause.
    await refusedOn(await node())
    await settle(20)
    expect(refusals()).toBe(1)
    // Another device: another cause.
    const key8 = keyPairFromSeed(new Uint8Array(32).fill(8))
    await refusedOn(await node(), { cert: await certify(s, 'D8', key8), key: key8 })
    await eventually(() => expect(refusals()).toBe(2))
  })
})

describe('which refusals a device logs (LogLimiter)', () => {
  it(`each cause once, at most ${netLimits.lanRefusalsLoggedPerHourMax} causes an hour`, async () => {
    const clock = new ManualClock()
    const log = new LogLimiter(clock)
    expect(log.admit('A')).toBe(true)
    expect(log.admit('A')).toBe(false)
    for (let i = 1; i < netLimits.lanRefusalsLoggedPerHourMax; i++)
      expect(log.admit(`peer-${i}`)).toBe(true)
    expect(log.admit('one too many')).toBe(false)
    expect(log.admit('two too many')).toBe(false)
    await clock.advance(netLimits.lanRefusalsLogWindowMs)
    expect(log.admit('one too many')).toBe(true)
    // The event logged next says what was not.
    expect(log.notLogged()).toMatch(/^ \(2 LAN refusals before this one not logged/)
    expect(log.notLogged()).toBe('')
    expect(log.admit('A')).toBe(false)
  })
})

describe('which waiting link makes room at a full door (doorEvictee)', () => {
  const at = (address: string, n: number) => ({ address, n })

  it("is the oldest of the host holding the most places, the newcomer's host counted", () => {
    // A key holder at .66 fills the door; a member from .7 arrives: one of
    // the key holder's goes, the oldest of them, not the member's earlier link.
    const door = [at('10.0.0.7', 0), ...[1, 2, 3, 4, 5, 6, 7].map((n) => at('10.0.0.66', n))]
    expect(doorEvictee(door, '10.0.0.7')).toEqual(at('10.0.0.66', 1))
    // The key holder's next link evicts its own oldest again.
    expect(doorEvictee(door, '10.0.0.66')).toEqual(at('10.0.0.66', 1))
    // The newcomer's host at the most: its own oldest goes.
    const even = [at('a', 0), at('b', 1), at('b', 2), at('a', 3)]
    expect(doorEvictee(even, 'a')).toEqual(at('a', 0))
    expect(doorEvictee(even, 'b')).toEqual(at('b', 1))
    // Every host even: the oldest of all.
    expect(doorEvictee([at('a', 0), at('b', 1), at('c', 2)], 'd')).toEqual(at('a', 0))
    expect(doorEvictee([at('a', 0), at('b', 1), at('b', 2), at('a', 3)], 'c')).toEqual(at('a', 0))
  })

  it('reads the host off a libp2p address', () => {
    const peerId = '12D3KooWGzJ3ZpVpTh6Rk2fJc2N4AbyL1f3Qh8Wq6nuHxXqMZtBq'
    expect(hostOf(multiaddr(`/ip4/127.0.0.1/tcp/4001/p2p/${peerId}`))).toBe('127.0.0.1')
    expect(hostOf(multiaddr('/ip6/::1/tcp/4001'))).toBe('::1')
    expect(hostOf(multiaddr('/dns4/example.test/tcp/1'))).toBe('/dns4/example.test/tcp/1')
  })
})

describe("a device's shared buckets (DeviceRates)", () => {
  it('outlive its last link until they would have refilled: closing and reopening buys no burst', async () => {
    const clock = new ManualClock()
    const devices = new DeviceRates(clock)
    const first = devices.take('D9')
    expect(devices.take('D9')).toBe(first) // a second link, the same buckets
    devices.release('D9')
    devices.release('D9') // its last link closed
    await clock.advance(LinkRates.refillMs() - 1)
    expect(devices.take('D9')).toBe(first) // reopened within the window: the same, spent buckets
    devices.release('D9')
    await clock.advance(LinkRates.refillMs())
    expect(devices.size).toBe(0) // refilled by now: let go
    expect(devices.take('D9')).not.toBe(first)
    expect(devices.take('D7')).not.toBe(devices.take('D9'))
    devices.close()
    expect(devices.size).toBe(0)
  })
})

describe("one device's admitted LAN links", () => {
  it('share its per-second buckets: two links do not buy it twice the burst', async () => {
    const s = await site()
    const key = keyPairFromSeed(new Uint8Array(32).fill(9))
    const cert = await certify(s, 'D9', key)
    const links: RawLanLink[] = []
    for (let i = 0; i < 2; i++) {
      const member = await node()
      const raw = await link(s, member)
      await raw.send(
        encodeLanAuth(cert, signLanProof(key, cert.site, member.peerId.toString(), s.d2End)),
      )
      await eventually(() => expect(raw.received.some((m) => m.type === 'sync-step1')).toBe(true))
      links.push(raw)
    }
    // Just over half the burst on each (the clock stands still: nothing
    // refills). Each link's own buckets would take it; the device's do not.
    const awareness = encodeMessage({ type: 'query-awareness' })
    const each = netLimits.linkMessagesBurstMax / 2 + 10
    for (const raw of links)
      for (let i = 0; i < each && raw.closed() === undefined; i++) await raw.send(awareness)
    // The two links' messages may arrive interleaved: whichever link sends
    // a message past the device's burst is closed (both, when both still
    // had messages on their way), each for its rate.
    await eventually(
      () => expect(links.some((raw) => raw.closed() !== undefined)).toBe(true),
      30_000,
    )
    for (const raw of links.filter((r) => r.closed() !== undefined)) {
      expect(raw.closed()?.code).toBe(1008)
      expect(raw.closed()?.reason).toMatch(/^RATE_LIMITED: /)
    }
  }, 60_000)
})

describe('an admitted LAN link', () => {
  it('goes on with the buckets it had at the door: admission refills nothing', async () => {
    const s = await site()
    const atDoor = netLimits.linkMessagesBurstMax - 5
    const awareness = encodeMessage({ type: 'query-awareness' })
    const { raw } = await admittedLink(s, async (r) => {
      for (let i = 0; i < atDoor; i++) await r.send(awareness)
    })
    await eventually(() => expect(raw.received.some((m) => m.type === 'sync-step1')).toBe(true))
    expect(raw.closed()).toBeUndefined()
    for (let i = 0; i < 10 && raw.closed() === undefined; i++) await raw.send(awareness)
    const close = await raw.whenClosed(5_000)
    expect(close?.code).toBe(1008)
    expect(close?.reason).toMatch(/^RATE_LIMITED: /)
  })

  it(`reads messages past ${netLimits.lanHandshakeMessageBytesMax} bytes once admitted (a large write arrives)`, async () => {
    const s = await site()
    const { raw, key, cert } = await admittedLink(s)
    await eventually(() => expect(raw.received.some((m) => m.type === 'sync-step1')).toBe(true))
    const doc = new Y.Doc()
    doc.clientID = deriveClientId(key.publicKey, 5)
    for (let i = 0; i < 300; i++)
      doc.getMap('u:D9').set(`big${i}`, {
        e: 0,
        f: { name: `${'N'.repeat(400)}${i}` },
        s: { name: s.clock.now() },
      })
    const update = Y.encodeStateAsUpdate(doc)
    const message = encodeMessage({
      type: 'signed-update',
      envelopes: [
        encodeEnvelope(sealEnvelope(key, cert.site, { writer: 'D9', nonces: [5], update, cert })),
      ],
    })
    expect(message.byteLength).toBeGreaterThan(netLimits.lanHandshakeMessageBytesMax)
    await raw.send(message)
    await eventually(() => expect(s.d2.replica.doc.getMap('u:D9').size).toBe(300))
    expect(raw.closed()).toBeUndefined()
  })

  it('messages in progress on all links hold at most receivingBytesMax: past it the link whose message came the slowest is closed 1008 TOO_MANY_QUEUED_MESSAGES, not the one sending', async () => {
    withLimits(netLimits, { receivingBytesMax: 1024 * 1024 })
    const s = await site()
    const { raw: a, key, cert } = await admittedLink(s)
    const member = await node()
    const b = await link(s, member)
    await b.send(
      encodeLanAuth(cert, signLanProof(key, cert.site, member.peerId.toString(), s.d2End)),
    )
    for (const raw of [a, b])
      await eventually(() => expect(raw.received.some((m) => m.type === 'sync-step1')).toBe(true))
    // Each begins a frame of 900 KiB (kind 0, a message) and sends part of it.
    const begin = (raw: RawLanLink, bytes: number): Promise<void> =>
      raw.sendRaw(new Uint8Array([...varUint(900 * 1024 + 1), 0, ...new Uint8Array(bytes)]))
    await begin(a, 500 * 1024)
    await settle(20)
    expect(a.closed()).toBeUndefined()
    await begin(b, 600 * 1024)
    const close = await a.whenClosed(5_000)
    expect(close?.code).toBe(1008)
    expect(close?.reason).toMatch(/^TOO_MANY_QUEUED_MESSAGES: /)
    await settle(20)
    expect(b.closed()).toBeUndefined()
  })

  it(`holds back at most ${limits.heldBackUpdatesPerLinkMax} updates: past it, 1008 TOO_MANY_HELD_BACK`, async () => {
    const s = await site()
    const { raw, key: d9, cert } = await admittedLink(s)
    // D9's writes under one clientID, each depending on the one before;
    // the first never comes.
    const doc = new Y.Doc()
    doc.clientID = deriveClientId(d9.publicKey, 5)
    const updates: Uint8Array[] = []
    doc.on('update', (update: Uint8Array) => updates.push(update))
    for (let i = 0; i < limits.heldBackUpdatesPerLinkMax + 20; i++)
      doc.getMap('u:D9').set(`u${i}`, { e: 0, f: { name: `N${i}` }, s: { name: s.clock.now() } })
    const before = Y.encodeStateVector(s.d2.replica.doc)
    for (const update of updates.slice(1)) {
      if (raw.closed() !== undefined) break
      const envelope = encodeEnvelope(
        sealEnvelope(d9, cert.site, { writer: 'D9', nonces: [5], update, cert }),
      )
      await raw.send(encodeMessage({ type: 'signed-update', envelopes: [envelope] }))
    }
    const close = await raw.whenClosed(10_000)
    expect(close?.code).toBe(1008)
    expect(close?.reason).toMatch(/^TOO_MANY_HELD_BACK: /)
    expect(s.d2.replica.doc.getMap('u:D9').size).toBe(0)
    expect(Y.encodeStateVector(s.d2.replica.doc)).toEqual(before)
  })
})
