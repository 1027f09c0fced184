/**
 * LAN admission and certificate lifetimes (issue 11; PROTOCOL.md, "LAN
 * admission"): a device that pinned its server's key answers a LAN peer
 * only after the peer showed a certificate of that server and proved its
 * key on that link; certificates expire (`limits.certificateTtlMs`) and are
 * renewed by the server on an open link; a key reset or a revocation makes
 * the devices refuse the old certificate at the door, close the links it
 * opened, and refuse envelopes that carry it.
 */
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { limits, netLimits } from '../core/limits.js'
import { decodeMessage, encodeMessage, type Message } from '../core/protocol.js'
import {
  decodeCertificate,
  deriveClientId,
  encodeEnvelope,
  issueCertificate,
  keyPairFromSeed,
  keyRevocationId,
  sealEnvelope,
  signLanProof,
  type Certificate,
  type KeyPair,
} from '../core/signing.js'
import type { CloseInfo, Connection, Transport } from '../core/transport.js'
import { asWriterId } from '../core/ids.js'
import { RecordSchema } from '../core/schema.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { encodeLanAuth, LAN_AUTH_MESSAGE } from '../peers/lan-auth.js'
import { Replica } from '../peers/replica.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { DeviceKeys } from '../server-peer/device-keys.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'
import { joinTarget } from './helpers/join-url.js'
import { ManualClock, settle } from './helpers/manual-clock.js'

const SITE_KEY = 'lan-certs-site'
const DAY = 24 * 60 * 60_000
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

const seedOf = (n: number): Uint8Array => new Uint8Array(32).fill(n)

interface Raw {
  readonly received: Message[]
  /** The `lan-auth` frames received (a device's certificate and proof). */
  readonly auths: Uint8Array[]
  closed(): CloseInfo | undefined
  send(message: Message): void
  readonly connection: Connection
}

function rawOf(connection: Connection): Raw {
  const received: Message[] = []
  const auths: Uint8Array[] = []
  let closed: CloseInfo | undefined
  connection.onMessage((bytes) => {
    if (bytes[0] === LAN_AUTH_MESSAGE) auths.push(bytes)
    else received.push(decodeMessage(bytes))
  })
  connection.onClose((info) => (closed = info))
  return {
    received,
    auths,
    closed: () => closed,
    send: (message) => connection.send(encodeMessage(message)),
    connection,
  }
}

interface Site {
  readonly clock: ManualClock
  readonly server: ServerPeer
  readonly d2: DevicePeer
  /** The server's ends of D2's connections, oldest first. */
  readonly d2Links: Connection[]
  /** D2's certificate, as its store keeps it (peers/identity.ts). */
  ownCert(): Promise<Certificate | undefined>
}

/** A server and device D2 on a manual clock, D2 connected (in memory) and pinned. */
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
  const d2Links: Connection[] = []
  const transport: Transport = {
    connect: async (url) => {
      const [mine, theirs] = memoryPair('device', 'server')
      d2Links.push(theirs)
      server.accept(theirs, url)
      return mine
    },
    close: async () => undefined,
  }
  const store = memoryStore()
  const d2 = await createDevice({
    id: 'D2',
    store,
    clock,
    server: 'ws://sim-server',
    serverTransport: transport,
    siteKey: SITE_KEY,
  })
  closers.push(() => d2.close())
  await d2.sync.full()
  const ownCert = async (): Promise<Certificate | undefined> => {
    const bytes = await store.get('i/cert')
    return bytes === undefined ? undefined : decodeCertificate(bytes)
  }
  // The hello (and its certificate) precede the full sync's answer.
  expect(await ownCert()).toBeDefined()
  return { clock, server, d2, d2Links, ownCert }
}

/** Joins the server as `deviceId` with `key`; resolves with the link and its certificate. */
async function join(
  s: Site,
  deviceId: string,
  key: KeyPair,
  at = s.clock.now(),
): Promise<{ link: Raw; cert: Certificate }> {
  const [mine, theirs] = memoryPair(deviceId, 'server')
  const link = rawOf(mine)
  s.server.accept(theirs, joinTarget(deviceId, key, SITE_KEY, at))
  await eventually(() => expect(link.received[0]?.type).toBe('hello'))
  return { link, cert: certOf(link.received[0]) }
}

/** A join under `deviceId` with `key` that the server holds for approval (its key bound). */
async function pendingJoin(s: Site, deviceId: string, key: KeyPair, at: number): Promise<void> {
  const [mine, theirs] = memoryPair(deviceId, 'server')
  const waiting = rawOf(mine)
  s.server.accept(theirs, joinTarget(deviceId, key, SITE_KEY, at))
  await eventually(() => expect(waiting.closed()?.reason).toMatch(/^PEER_PENDING/))
}

/** A join under `deviceId` with `key` that the server refuses as revoked. */
async function refusedJoin(s: Site, deviceId: string, key: KeyPair, at: number): Promise<void> {
  const [mine, theirs] = memoryPair(deviceId, 'server')
  const refused = rawOf(mine)
  s.server.accept(theirs, joinTarget(deviceId, key, SITE_KEY, at))
  await eventually(() => expect(refused.closed()?.reason).toMatch(/^PEER_REVOKED/))
}

function certOf(message: Message | undefined): Certificate {
  if (message?.type !== 'hello') throw new Error('not a hello')
  return decodeCertificate(message.certificate)
}

/** A LAN link to D2 from `as`, which shows `auth` first (when given). */
function lanLink(
  d2: DevicePeer,
  as: string,
  auth?: { key: KeyPair; cert: Certificate; prover?: string },
): Raw {
  const [mine, theirs] = memoryPair(as, d2.id)
  d2.attachLan(theirs, as)
  const raw = rawOf(mine)
  if (auth !== undefined)
    mine.send(
      encodeLanAuth(auth.cert, signLanProof(auth.key, auth.cert.site, auth.prover ?? as, d2.id)),
    )
  return raw
}

/** Asks D2 for everything; true when it answered (its signed step 2). */
async function answered(raw: Raw): Promise<boolean> {
  raw.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(new Y.Doc()) })
  await settle(20)
  return raw.received.some((m) => m.type === 'signed-step2')
}

/** An envelope of `writer` filling u1's title, signed by `key`, carrying `cert`. */
function envelopeOf(
  key: KeyPair,
  cert: Certificate,
  nonce: number,
  title: string,
  now = Date.UTC(2026, 0, 5, 9),
): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = deriveClientId(key.publicKey, nonce)
  doc.getMap(`u:${cert.deviceId}`).set('u1', { e: 0, f: { title }, s: { title: now } })
  return encodeEnvelope(
    sealEnvelope(key, cert.site, {
      writer: cert.deviceId,
      nonces: [nonce],
      update: Y.encodeStateAsUpdate(doc),
      cert,
    }),
  )
}

describe('LAN admission', () => {
  it('answers a LAN peer only once it shows a valid certificate and proves its key on the link', async () => {
    const s = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { cert } = await join(s, 'D9', d9)
    const fake = keyPairFromSeed(seedOf(66))
    const forged = issueCertificate(fake, {
      site: cert.site,
      deviceId: 'D9',
      publicKey: d9.publicKey,
      issuedAt: s.clock.now(),
      expiresAt: s.clock.now() + DAY,
    })
    const cases: Array<[string, Raw, RegExp]> = [
      [
        'a certificate another key signed',
        lanLink(s.d2, 'D9', { key: d9, cert: forged }),
        /^SIGNATURE_INVALID/,
      ],
      [
        "D9's certificate, proved by another key",
        lanLink(s.d2, 'D9', { key: fake, cert }),
        /^SIGNATURE_INVALID/,
      ],
      [
        "D9's proof for another link (relayed by a peer without the key)",
        lanLink(s.d2, 'D7', { key: d9, cert, prover: 'D9' }),
        /^SIGNATURE_INVALID/,
      ],
    ]
    const garbled = lanLink(s.d2, 'D9')
    garbled.connection.send(Uint8Array.of(110, 0xff, 0xff))
    await eventually(() => expect(garbled.closed()?.reason).toMatch(/^MALFORMED_MESSAGE/))
    expect(garbled.closed()?.code).toBe(1007)
    expect(garbled.received).toEqual([])
    for (const [name, raw, reason] of cases) {
      await eventually(() => expect(raw.closed()?.reason, name).toMatch(reason))
      expect(raw.closed()?.code, name).toBe(4401)
      expect(raw.received, name).toEqual([])
    }
    // No certificate at all: nothing is answered, and the link closes
    // after the handshake's time.
    const silent = lanLink(s.d2, 'D9')
    expect(await answered(silent)).toBe(false)
    silent.send({
      type: 'signed-update',
      envelopes: [envelopeOf(d9, cert, 5, 'Unshown')],
    })
    await settle(20)
    expect(s.d2.users.get('u1')?.title).toBeUndefined()
    await s.clock.advance(netLimits.handshakeTimeoutMs)
    await eventually(() => expect(silent.closed()?.reason).toMatch(/^AUTH_FAILED/))
    expect(silent.received).toEqual([])
    // D2 shows its own certificate first.
    expect(silent.auths).toHaveLength(1)
    // The real thing: answered, and D9's write goes through.
    const member = lanLink(s.d2, 'D9', { key: d9, cert })
    expect(await answered(member)).toBe(true)
    member.send({ type: 'signed-update', envelopes: [envelopeOf(d9, cert, 5, 'From D9')] })
    await eventually(() => expect(s.d2.users.get('u1')?.title).toBe('From D9'))
    expect(member.closed()).toBeUndefined()
  })

  it('certificates expire: refused at the door and on envelopes, an open link closes, unless renewed', async () => {
    const s = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const d8 = keyPairFromSeed(seedOf(8))
    const { link: serverLink, cert } = await join(s, 'D9', d9)
    expect(cert.expiresAt - cert.issuedAt).toBe(limits.certificateTtlMs)
    const firstOwn = await s.ownCert()
    const open = lanLink(s.d2, 'D9', { key: d9, cert })
    expect(await answered(open)).toBe(true)
    // Half way: the server renews every open link's certificate (D2's own too).
    await s.clock.advance(limits.certificateTtlMs / 2 + 1)
    await eventually(() =>
      expect(serverLink.received.filter((m) => m.type === 'hello')).toHaveLength(2),
    )
    const renewed = certOf(serverLink.received.filter((m) => m.type === 'hello')[1])
    expect(renewed.expiresAt).toBeGreaterThan(cert.expiresAt)
    expect((await s.ownCert())?.expiresAt).toBeGreaterThan(firstOwn?.expiresAt ?? Infinity)
    // D2 sent its renewed certificate on the open LAN link.
    await eventually(() => expect(open.auths).toHaveLength(2))
    // A second link shows the renewed certificate in passing.
    const renewing = lanLink(s.d2, 'D9', { key: d9, cert })
    expect(await answered(renewing)).toBe(true)
    renewing.connection.send(encodeLanAuth(renewed, signLanProof(d9, renewed.site, 'D9', s.d2.id)))
    // Past the first certificate's expiry (and the skew allowed).
    const { cert: cert8 } = await join(s, 'D8', d8)
    await s.clock.advance(limits.certificateTtlMs / 2 + limits.certificateSkewMsMax + 1)
    await eventually(() => expect(open.closed()?.reason).toMatch(/^CERTIFICATE_EXPIRED/))
    expect(renewing.closed()).toBeUndefined()
    // The expired certificate is refused at the door, sent nothing.
    const late = lanLink(s.d2, 'D9', { key: d9, cert })
    await eventually(() => expect(late.closed()?.reason).toMatch(/^CERTIFICATE_EXPIRED/))
    expect(late.received).toEqual([])
    // An envelope carrying it, relayed by a member, is refused by name
    // (the link goes on) and changes nothing.
    const relay = lanLink(s.d2, 'D8', { key: d8, cert: cert8 })
    const vector = Y.encodeStateVector(s.d2.replica.doc)
    relay.send({ type: 'signed-update', envelopes: [envelopeOf(d9, cert, 6, 'Stale')] })
    await eventually(() =>
      expect(
        relay.received.some((m) => m.type === 'error' && m.code === 'CERTIFICATE_EXPIRED'),
      ).toBe(true),
    )
    expect(relay.closed()).toBeUndefined()
    expect(Y.encodeStateVector(s.d2.replica.doc)).toEqual(vector)
    // The renewed one goes through.
    const fresh = lanLink(s.d2, 'D9', { key: d9, cert: renewed })
    expect(await answered(fresh)).toBe(true)
  })

  it('a device that reconnects within limits.certificateReuseMsMax gets the same certificate; later, or with a new key, a new one', async () => {
    const s = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const first = (await join(s, 'D9', d9)).cert
    await s.clock.advance(60_000)
    const again = (await join(s, 'D9', d9)).cert
    // The same certificate: the same bytes, so the device checks it from
    // its signature memo and stores nothing.
    expect(again).toEqual(first)
    await s.clock.advance(limits.certificateReuseMsMax)
    const later = (await join(s, 'D9', d9)).cert
    expect(later.issuedAt).toBe(s.clock.now())
    expect(later.expiresAt - later.issuedAt).toBe(limits.certificateTtlMs)
    // A key reset: the next join binds a new key, and its certificate names it.
    expect(await s.server.devices.resetKey('D9')).toBe(true)
    expect(s.server.events.query({ type: 'device-key-reset', deviceId: 'D9' })).toHaveLength(1)
    // Approved once the terminal joined again (its new key bound, waiting).
    const d9b = keyPairFromSeed(seedOf(19))
    await pendingJoin(s, 'D9', d9b, s.clock.now() + 1)
    await s.server.devices.approve('D9')
    const rebound = (await join(s, 'D9', d9b, s.clock.now() + 2)).cert
    expect(Buffer.from(rebound.publicKey).equals(Buffer.from(d9b.publicKey))).toBe(true)
  })

  it('a reset key joins again under its own id only, and its approval takes its revocation back', async () => {
    const s = await site()
    const k = keyPairFromSeed(seedOf(21))
    const k7 = keyPairFromSeed(seedOf(27))
    await join(s, 'D9', k)
    await join(s, 'D7', k7)
    const revoked = (): boolean => s.server.replica.isRevoked(keyRevocationId(k.publicKey))
    expect(await s.server.devices.resetKey('D9')).toBe(true)
    expect(await s.server.devices.resetKey('D7')).toBe(true)
    expect(revoked()).toBe(true)
    // D9's key shown under D7 is refused: a key D9's reset revoked joins
    // under no other id (it was taken as D7's, and approving it there would
    // have left D9's old certificates good on the LAN).
    await refusedJoin(s, 'D7', k, s.clock.now() + 1)
    await expect(s.server.devices.approve('D7')).rejects.toMatchObject({ code: 'PEER_PENDING' })
    expect(revoked()).toBe(true)
    // D9 back with its own key, approved: its revocation goes.
    await s.server.devices.forget('D7')
    await pendingJoin(s, 'D9', k, s.clock.now() + 2)
    expect(await s.server.devices.approve('D9')).toBe(true)
    expect(revoked()).toBe(false)
  })

  it("a revoked device's key joins under no other id, at the server or on the LAN", async () => {
    const s = await site()
    const k = keyPairFromSeed(seedOf(31))
    const { cert } = await join(s, 'T', k)
    // The same key joined as a second id too, still connected at the revoke.
    const { link: second } = await join(s, 'T3', k, s.clock.now() + 1)
    expect(await s.server.devices.revoke('T')).toBe(true)
    await eventually(() => expect(second.closed()?.reason).toMatch(/^PEER_REVOKED/))
    // The key itself is revoked in the document (devices learn it).
    expect(s.server.replica.isRevoked(keyRevocationId(k.publicKey))).toBe(true)
    // Under a new id, with the same key: refused (it was admitted, and
    // given a certificate, with the site key alone).
    await refusedJoin(s, 'T2', k, s.clock.now() + 2)
    await refusedJoin(s, 'T3', k, s.clock.now() + 3)
    // Registered neither (a revoked key makes no new id: front-identity.test.ts).
    expect(s.server.devices.list().some((device) => device.id === 'T2')).toBe(false)
    // A LAN peer that learned the revocation refuses the key's certificate.
    await s.d2.sync.delta()
    const open = lanLink(s.d2, 'T', { key: k, cert })
    await eventually(() => expect(open.closed()?.reason).toMatch(/REVOKED/))
  })

  it('a key a reset of one id revoked, then revoked with another id of it, stays revoked under every id (hostile probe)', async () => {
    // The reset exempted its own id: the key rejoined as it, its approval
    // took the revocation back, and the revoked terminal joined as any id.
    const s = await site()
    const k = keyPairFromSeed(seedOf(33))
    await join(s, 'A', k)
    await join(s, 'C', k, s.clock.now() + 1)
    expect(await s.server.devices.resetKey('C')).toBe(true)
    expect(await s.server.devices.revoke('A')).toBe(true)
    await refusedJoin(s, 'C', k, s.clock.now() + 2)
    await expect(s.server.devices.approve('C')).rejects.toMatchObject({ code: 'PEER_PENDING' })
    expect(s.server.replica.isRevoked(keyRevocationId(k.publicKey))).toBe(true)
    await refusedJoin(s, 'B', k, s.clock.now() + 3)
  })

  it('DeviceKeys.certificate: a clock stepped back issues anew rather than send a certificate from its future', async () => {
    const replica = await Replica.open({
      writerId: asWriterId('server'),
      store: memoryStore(),
      clock: new ManualClock(),
      schema: new RecordSchema(),
      randomUint32: () => 7,
    })
    closers.push(() => replica.close())
    const keys = new DeviceKeys(replica)
    const server = keyPairFromSeed(seedOf(1))
    const d9 = keyPairFromSeed(seedOf(9))
    const t = Date.UTC(2026, 0, 5, 9)
    const first = keys.certificate(server, 'site', 'D9', d9.publicKey, t)
    expect(keys.certificate(server, 'site', 'D9', d9.publicKey, t + 1_000)).toBe(first)
    expect(keys.certificate(server, 'site', 'D9', d9.publicKey, t - 1).issuedAt).toBe(t - 1)
    // Another key or site for the id: a new certificate too.
    const d9b = keyPairFromSeed(seedOf(19))
    expect(keys.certificate(server, 'site', 'D9', d9b.publicKey, t).publicKey).toEqual(
      d9b.publicKey,
    )
    expect(keys.certificate(server, 'other', 'D9', d9b.publicKey, t).site).toBe('other')
  })

  it('a device that gets back the certificate it holds stores nothing and tells its LAN links nothing', async () => {
    const s = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { cert } = await join(s, 'D9', d9)
    const open = lanLink(s.d2, 'D9', { key: d9, cert })
    expect(await answered(open)).toBe(true)
    await eventually(() => expect(open.auths).toHaveLength(1))
    const held = await s.ownCert()
    // D2's link drops and comes back: a second hello, with the same certificate.
    const links = s.d2Links.length
    s.d2Links.at(-1)?.close(1006, 'connection lost')
    for (let i = 0; i < 20 && s.d2Links.length === links; i++) await s.clock.advance(5_000)
    expect(s.d2Links.length).toBe(links + 1)
    await settle(20)
    expect(await s.ownCert()).toEqual(held)
    expect(open.auths).toHaveLength(1)
    // A day on, the next connection brings a new certificate: stored and told.
    await s.clock.advance(limits.certificateReuseMsMax + 1)
    s.d2Links.at(-1)?.close(1006, 'connection lost')
    for (let i = 0; i < 20 && s.d2Links.length === links + 1; i++) await s.clock.advance(5_000)
    await eventually(() => expect(open.auths).toHaveLength(2))
    expect((await s.ownCert())?.issuedAt).toBeGreaterThan(held?.issuedAt ?? Infinity)
  })

  it('an open link still closes on a revocation after a full sync replaced the document', async () => {
    const s = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { cert } = await join(s, 'D9', d9)
    const open = lanLink(s.d2, 'D9', { key: d9, cert })
    expect(await answered(open)).toBe(true)
    // The full sync swaps the device's document for a fresh one.
    await s.d2.sync.full()
    expect(open.closed()).toBeUndefined()
    await s.server.devices.revoke('D9')
    await eventually(() => expect(open.closed()?.reason).toMatch(/^(PEER|CERTIFICATE)_REVOKED/))
  })

  it("a key reset revokes the old key's certificate on the LAN, before it expires", async () => {
    const s = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const d8 = keyPairFromSeed(seedOf(8))
    const { cert } = await join(s, 'D9', d9)
    const { cert: cert8 } = await join(s, 'D8', d8)
    const open = lanLink(s.d2, 'D9', { key: d9, cert })
    expect(await answered(open)).toBe(true)
    // The terminal is replaced: its old key (maybe stolen with it) is reset.
    expect(await s.server.devices.resetKey('D9')).toBe(true)
    await eventually(() => expect(open.closed()?.reason).toMatch(/^CERTIFICATE_REVOKED/))
    const again = lanLink(s.d2, 'D9', { key: d9, cert })
    await eventually(() => expect(again.closed()?.reason).toMatch(/^CERTIFICATE_REVOKED/))
    expect(again.received).toEqual([])
    const relay = lanLink(s.d2, 'D8', { key: d8, cert: cert8 })
    relay.send({ type: 'signed-update', envelopes: [envelopeOf(d9, cert, 5, 'Old key')] })
    await eventually(() =>
      expect(
        relay.received.some((m) => m.type === 'error' && m.code === 'CERTIFICATE_REVOKED'),
      ).toBe(true),
    )
    expect(s.d2.users.get('u1')?.title).toBeUndefined()
    // The replacement's new key, once approved, is admitted.
    const d9b = keyPairFromSeed(seedOf(19))
    await pendingJoin(s, 'D9', d9b, s.clock.now() + 1)
    expect(await s.server.devices.approve('D9')).toBe(true)
    await s.clock.advance(1_000)
    const { cert: newCert } = await join(s, 'D9', d9b)
    const replaced = lanLink(s.d2, 'D9', { key: d9b, cert: newCert })
    expect(await answered(replaced)).toBe(true)
    expect(s.server.replica.isRevoked('D9')).toBe(false)
  })
})

describe('relaying over the LAN', () => {
  it("relays a device's delete-only envelope as it relays its writes", async () => {
    const s = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const d8 = keyPairFromSeed(seedOf(8))
    const { cert } = await join(s, 'D9', d9)
    const { cert: cert8 } = await join(s, 'D8', d8)
    const from9 = lanLink(s.d2, 'D9', { key: d9, cert })
    const to8 = lanLink(s.d2, 'D8', { key: d8, cert: cert8 })
    expect(await answered(to8)).toBe(true)
    // D9's writes: a fill, then the removal of its entry (a delete only).
    const doc = new Y.Doc()
    doc.clientID = deriveClientId(d9.publicKey, 5)
    doc.getMap('u:D9').set('u1', { e: 0, f: { title: 'From D9' }, s: { title: s.clock.now() } })
    const written = Y.encodeStateAsUpdate(doc)
    const vector = Y.encodeStateVector(doc)
    doc.getMap('u:D9').delete('u1')
    const deleteOnly = Y.encodeStateAsUpdate(doc, vector)
    const seal = (update: Uint8Array): Uint8Array =>
      encodeEnvelope(sealEnvelope(d9, cert.site, { writer: 'D9', nonces: [5], update, cert }))
    const relayed = (bytes: Uint8Array): boolean =>
      to8.received.some(
        (m) => m.type === 'signed-update' && m.envelopes.some((e) => Buffer.from(e).equals(bytes)),
      )
    const set = seal(written)
    from9.send({ type: 'signed-update', envelopes: [set] })
    await eventually(() => expect(s.d2.users.get('u1')?.title).toBe('From D9'))
    await eventually(() => expect(relayed(set)).toBe(true))
    const removal = seal(deleteOnly)
    from9.send({ type: 'signed-update', envelopes: [removal] })
    // (The title may stay: the server adopts a device's fill of a vacant field.)
    await eventually(() => expect(s.d2.replica.doc.getMap('u:D9').has('u1')).toBe(false))
    await eventually(() => expect(relayed(removal)).toBe(true))
    // Sent again, it brings nothing: not relayed twice.
    const count = (): number =>
      to8.received.filter(
        (m) =>
          m.type === 'signed-update' && m.envelopes.some((e) => Buffer.from(e).equals(removal)),
      ).length
    from9.send({ type: 'signed-update', envelopes: [removal] })
    await settle(20)
    expect(count()).toBe(1)
    expect(from9.closed()).toBeUndefined()
  })
})

/**
 * `connection` saying it buffers `level.bytes` (what a socket or a libp2p
 * stream reports while its peer does not read): the memory link itself
 * delivers at once.
 */
function buffering(connection: Connection, level: { bytes: number }): Connection {
  return {
    id: connection.id,
    remote: connection.remote,
    get open() {
      return connection.open
    },
    get bufferedBytes() {
      return level.bytes
    },
    send: (message) => connection.send(message),
    onMessage: (handler) => connection.onMessage(handler),
    onClose: (handler) => connection.onClose(handler),
    close: (code, reason) => connection.close(code, reason),
  }
}

describe('LAN links are paced by what they buffer', () => {
  const FULL = netLimits.sendPauseBufferedBytesMin + 1

  it("an admitted peer's answer waits while its link buffers past the pause bound", async () => {
    const s = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { cert } = await join(s, 'D9', d9)
    const level = { bytes: FULL }
    const [mine, theirs] = memoryPair('D9', s.d2.id)
    s.d2.attachLan(buffering(theirs, level), 'D9')
    const raw = rawOf(mine)
    mine.send(encodeLanAuth(cert, signLanProof(d9, cert.site, 'D9', s.d2.id)))
    expect(await answered(raw)).toBe(false)
    level.bytes = 0
    await s.clock.advance(10)
    await settle(20)
    expect(raw.received.some((m) => m.type === 'signed-step2')).toBe(true)
  })

  it('so is a link of a device that has not pinned its server yet (plain protocol)', async () => {
    const clock = new ManualClock()
    const d1 = await createDevice({ id: 'D1', store: memoryStore(), clock, siteKey: SITE_KEY })
    closers.push(() => d1.close())
    await d1.users.put({ id: 'u1', name: 'Ann' })
    const level = { bytes: FULL }
    const [mine, theirs] = memoryPair('D7', 'D1')
    d1.attachLan(buffering(theirs, level), 'D7')
    const raw = rawOf(mine)
    raw.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(new Y.Doc()) })
    await settle(20)
    expect(raw.received.some((m) => m.type === 'sync-step2')).toBe(false)
    level.bytes = 0
    await clock.advance(10)
    await settle(20)
    expect(raw.received.some((m) => m.type === 'sync-step2')).toBe(true)
  })

  it('a refusal on a paused link still tells the peer its code before the close', async () => {
    const s = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { cert } = await join(s, 'D9', d9)
    const level = { bytes: FULL }
    const [mine, theirs] = memoryPair('D9', s.d2.id)
    s.d2.attachLan(buffering(theirs, level), 'D9')
    const raw = rawOf(mine)
    mine.send(encodeLanAuth(cert, signLanProof(d9, cert.site, 'D9', s.d2.id)))
    expect(await answered(raw)).toBe(false)
    // A message that does not decode: refused, and the link closes.
    mine.send(Uint8Array.of(0xff, 0xff, 0xff))
    await eventually(() => expect(raw.closed()?.reason).toMatch(/^MALFORMED_MESSAGE/))
    expect(raw.received.map((m) => (m.type === 'error' ? m.code : m.type))).toEqual([
      'MALFORMED_MESSAGE',
    ])
  })
})
