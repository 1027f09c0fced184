/**
 * Signed writes (PROTOCOL.md, "Signed writes"): a device may relay another
 * writer's envelope but author nothing for it — not into its part, not
 * under its clientIDs, not as the server — on the server link and on the
 * LAN; a device's id is bound to its key; a device pins the server's key.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join as joinPath } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { limits, netLimits } from '../core/limits.js'
import * as Y from 'yjs'
import { writeVarUint, createEncoder, toUint8Array } from 'lib0/encoding'
import { asUserId } from '../core/ids.js'
import { decodeMessage, encodeMessage, type Message } from '../core/protocol.js'
import {
  decodeCertificate,
  decodeEnvelope,
  deriveClientId,
  encodeEnvelope,
  issueCertificate,
  keyFingerprint,
  keyPairFromSeed,
  sealEnvelope,
  signLanProof,
  type Certificate,
  type KeyPair,
} from '../core/signing.js'
import type { CloseInfo, Connection } from '../core/transport.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { Identity, siteOf } from '../peers/identity.js'
import { encodeLanAuth, LAN_AUTH_MESSAGE } from '../peers/lan-auth.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import type { DeviceRecord } from '../server-peer/device-registry.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'
import { joinTarget } from './helpers/join-url.js'
import { withLimits } from './helpers/limits.js'

const SITE_KEY = 'signed-writes-site'
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

const seedOf = (n: number): Uint8Array => new Uint8Array(32).fill(n)

/** A device's draws for createDevice's randomUint32: eight for its key seed, then nonces. */
function drawsFor(n: number): () => number {
  const draws = Array.from({ length: 8 }, () => n * 0x01010101)
  let next = 1_000 * n
  return () => draws.shift() ?? next++
}

interface Raw {
  readonly received: Message[]
  closed(): CloseInfo | undefined
  send(message: Message): void
  readonly connection: Connection
}

/** Joins `server` as `deviceId` with `key` (a join proof signed by `key`, or none). */
function join(server: ServerPeer, deviceId: string, key: KeyPair | undefined): Raw {
  const [mine, theirs] = memoryPair(deviceId, 'server')
  const target =
    key === undefined
      ? `/roster?${new URLSearchParams({ device: deviceId, key: SITE_KEY }).toString()}`
      : joinTarget(deviceId, key, SITE_KEY, Date.now())
  server.accept(theirs, target)
  return rawOf(mine)
}

/** Watches one end of a connection: what it receives, how it closes. */
function rawOf(connection: Connection): Raw {
  const received: Message[] = []
  let closed: CloseInfo | undefined
  connection.onMessage((bytes) => {
    // A LAN peer's certificate (peers/lan-auth.ts) is not a sync message.
    if (bytes[0] !== LAN_AUTH_MESSAGE) received.push(decodeMessage(bytes))
  })
  connection.onClose((info) => (closed = info))
  return {
    received,
    closed: () => closed,
    send: (message) => connection.send(encodeMessage(message)),
    connection,
  }
}

/** An update writing `fields` for `userId` into `root`, under `clientId`. */
/** A number as a lib0 variable-length unsigned integer. */
function encodeVarUint(n: number): number[] {
  const encoder = createEncoder()
  writeVarUint(encoder, n)
  return [...toUint8Array(encoder)]
}

function entryUpdate(clientId: number, root: string, userId: string, name: string): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = clientId
  doc.getMap(root).set(userId, { e: 0, f: { title: name }, s: { title: Date.now() } })
  return Y.encodeStateAsUpdate(doc)
}

function seal(
  key: KeyPair,
  site: string,
  writer: string,
  nonce: number,
  update: Uint8Array,
  cert?: Certificate,
): Uint8Array {
  return encodeEnvelope(
    sealEnvelope(key, site, {
      writer,
      nonces: [nonce],
      update,
      ...(cert === undefined ? {} : { cert }),
    }),
  )
}

/** D9's envelope of `envelopeNoncesMax` fresh nonces from `from` on, one valid entry (`x<n>`) under each. */
function freshClients(d9: KeyPair, siteId: string, from: number): Uint8Array {
  const nonces = Array.from({ length: limits.envelopeNoncesMax }, (_, i) => from + i)
  const updates = nonces.map((n) =>
    entryUpdate(deriveClientId(d9.publicKey, n), 'u:D9', `x${n}`, `X ${n}`),
  )
  return encodeEnvelope(
    sealEnvelope(d9, siteId, { writer: 'D9', nonces, update: Y.mergeUpdates(updates) }),
  )
}

async function site(): Promise<{ server: ServerPeer; d2: DevicePeer }> {
  const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
  closers.push(() => server.close())
  await server.users.put({ id: 'u1', name: 'Ann' })
  const d2 = await createDevice({
    id: 'D2',
    store: memoryStore(),
    server: server.url,
    siteKey: SITE_KEY,
    randomUint32: drawsFor(2),
  })
  closers.push(() => d2.close())
  await eventually(() => expect(d2.sync.status().offlineReady).toBe(true))
  await d2.users.patch('u1', { email: 'ann@d2.example' })
  await d2.sync.whenIdle()
  return { server, d2 }
}

/** Joins as D9 and waits for the server's hello; returns the link and the site. */
/** The certificate in the server's hello, the first message on `raw`. */
function certificateOf(raw: Raw): Certificate {
  return decodeCertificate((raw.received[0] as Extract<Message, { type: 'hello' }>).certificate)
}

/** Joins `server` as `deviceId` with `key`; resolves once its hello came, with its certificate. */
async function joinCertified(
  server: ServerPeer,
  deviceId: string,
  key: KeyPair,
): Promise<{ raw: Raw; cert: Certificate }> {
  const raw = join(server, deviceId, key)
  await eventually(() => expect(raw.received[0]?.type).toBe('hello'))
  return { raw, cert: certificateOf(raw) }
}

async function joinD9(server: ServerPeer, key: KeyPair): Promise<{ raw: Raw; site: string }> {
  const raw = join(server, 'D9', key)
  await eventually(() => expect(raw.received[0]?.type).toBe('hello'))
  const hello = raw.received[0] as Extract<Message, { type: 'hello' }>
  expect(decodeCertificate(hello.certificate).deviceId).toBe('D9')
  return { raw, site: siteOf(hello.serverKey) }
}

/** Sends envelopes as a signed update and waits for the server's verdict: its error code, or undefined. */
async function verdict(raw: Raw, envelopes: Uint8Array[]): Promise<string | undefined> {
  const before = raw.received.length
  raw.send({ type: 'signed-update', envelopes })
  // A step 1 behind it: its answer shows the update was handled.
  raw.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(new Y.Doc()) })
  await eventually(() => {
    const after = raw.received.slice(before)
    expect(after.some((m) => m.type === 'error' || m.type === 'signed-step2')).toBe(true)
  })
  const error = raw.received.slice(before).find((m) => m.type === 'error')
  return error?.type === 'error' ? error.code : undefined
}

describe('signed writes at the server', () => {
  it("a device cannot author another device's writes, nor write under its clientIDs; it can relay them", async () => {
    const { server, d2 } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const d2Key = keyPairFromSeed(seedOf(2))
    const own = deriveClientId(d9.publicKey, 1)
    const views = (): unknown => server.users.list()
    const vector = (): Uint8Array => Y.encodeStateVector(server.replica.doc)

    // [case, forge, code, closes]: a refused envelope of the link's own
    // device closes its link; one it only relays (another writer's) is
    // refused by name and the link goes on.
    const forgeries: Array<[string, (site: string) => Uint8Array[], string, boolean]> = [
      [
        'signed by D9, claiming to be D2',
        (s) => [seal(d9, s, 'D2', 1, entryUpdate(own, 'u:D2', 'u1', 'Forged'))],
        'SIGNATURE_INVALID',
        false,
      ],
      [
        "D9's own envelope writing into D2's part",
        (s) => [seal(d9, s, 'D9', 1, entryUpdate(own, 'u:D2', 'u1', 'Forged'))],
        'FORBIDDEN_WRITE',
        true,
      ],
      [
        "D9's own envelope writing into the server's part",
        (s) => [seal(d9, s, 'D9', 1, entryUpdate(own, 'u:server', 'u1', 'Forged'))],
        'FORBIDDEN_WRITE',
        true,
      ],
      [
        "D9's own part, under D2's clientID (clock squatting)",
        (s) => [seal(d9, s, 'D9', 1, entryUpdate(d2.replica.clientId, 'u:D9', 'u7', 'Squat'))],
        'FORBIDDEN_WRITE',
        true,
      ],
      [
        'signed as the server by D9',
        (s) => [seal(d9, s, 'server', 1, entryUpdate(own, 'u:server', 'u1', 'Forged'))],
        'SIGNATURE_INVALID',
        false,
      ],
      [
        'an altered genuine envelope of D2',
        (s) => {
          const genuine = seal(
            d2Key,
            s,
            'D2',
            77,
            entryUpdate(deriveClientId(d2Key.publicKey, 77), 'u:D2', 'u3', 'Genuine'),
          )
          genuine[genuine.length - 70] = (genuine[genuine.length - 70] as number) ^ 1
          return [genuine]
        },
        'SIGNATURE_INVALID',
        false,
      ],
    ]
    for (const [name, forge, code, closes] of forgeries) {
      const before = { views: views(), vector: vector() }
      const { raw, site: s } = await joinD9(server, d9)
      expect(await verdict(raw, forge(s)), name).toBe(code)
      if (closes) {
        // The refusal closes the link with the code.
        await eventually(() => expect(raw.closed()?.reason.startsWith(code), name).toBe(true))
      } else {
        // Relayed: refused by name, and the link takes what comes next.
        expect(raw.closed(), name).toBeUndefined()
        raw.connection.close(1000, 'next case')
      }
      // Nothing changed.
      expect(views(), name).toEqual(before.views)
      expect(vector(), name).toEqual(before.vector)
    }
    // A plain update on a signed link is refused as well.
    {
      const { raw } = await joinD9(server, d9)
      raw.send({ type: 'sync-update', update: entryUpdate(own, 'u:D9', 'u1', 'Plain') })
      await eventually(() =>
        expect(raw.closed()?.reason).toMatch(/^FORBIDDEN_WRITE: SIGNATURE_REQUIRED/),
      )
    }
    // A genuine envelope of D2, relayed by D9, is D2's write: applied and adopted.
    const { raw, site: s } = await joinD9(server, d9)
    const relayed = seal(
      d2Key,
      s,
      'D2',
      77,
      entryUpdate(deriveClientId(d2Key.publicKey, 77), 'u:D2', 'u1', 'Relayed title'),
    )
    expect(await verdict(raw, [relayed])).toBeUndefined()
    await eventually(() => expect(server.users.get('u1')?.title).toBe('Relayed title'))
  }, 30_000)

  it(`a device writes under at most writerClientIdsMax clientIDs, signed or plain (issue 11: 32,002 clientIDs from one device)`, async () => {
    const { server } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw, site: siteId } = await joinD9(server, d9)
    const clientsBefore = server.replica.doc.store.clients.size
    const batch = (from: number): Uint8Array => freshClients(d9, siteId, from)
    const fits = limits.writerClientIdsMax / limits.envelopeNoncesMax
    for (let i = 0; i < fits; i++)
      expect(await verdict(raw, [batch(1_000 + i * limits.envelopeNoncesMax)])).toBeUndefined()
    expect(server.replica.doc.store.clients.size).toBe(clientsBefore + limits.writerClientIdsMax)
    expect(await verdict(raw, [batch(900_000)])).toBe('FORBIDDEN_WRITE')
    await eventually(() => expect(raw.closed()).toBeDefined())
    expect(raw.closed()?.reason).toMatch(/^FORBIDDEN_WRITE: .*the limit is 512/)
    expect(server.replica.doc.store.clients.size).toBe(clientsBefore + limits.writerClientIdsMax)
    expect(server.users.get('x900000')).toBeUndefined()
  })

  it('new clientIDs wait for the next generation once the document names documentClientIdsMax', async () => {
    const { server } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw, site: siteId } = await joinD9(server, d9)
    withLimits(limits, { documentClientIdsMax: server.replica.doc.store.clients.size + 20 })
    const batch = (from: number): Uint8Array => freshClients(d9, siteId, from)
    expect(await verdict(raw, [batch(100)])).toBeUndefined()
    const before = server.replica.doc.store.clients.size
    expect(await verdict(raw, [batch(200)])).toBe('FORBIDDEN_WRITE')
    await eventually(() =>
      expect(raw.closed()?.reason).toMatch(/new ones wait for the next generation/),
    )
    expect(server.replica.doc.store.clients.size).toBe(before)
  })

  it('ids made up to fill documentClientIdsMax do not lock honest devices out: a device holding few takes a fresh clientID from the reserve', async () => {
    // A probe: 16 made-up ids of 500 clientIDs each, with only the site
    // key, filled the document; D2's full sync (a fresh clientID) and a
    // new terminal were then refused until the next generation.
    const { server, d2 } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw, site: siteId } = await joinD9(server, d9)
    withLimits(limits, {
      documentClientIdsMax: server.replica.doc.store.clients.size + limits.envelopeNoncesMax,
      documentClientIdsReserve: 100,
    })
    const batch = (from: number): Uint8Array => freshClients(d9, siteId, from)
    // D9 fills the document to its limit, and gets no more: it holds more
    // than writerClientIdsReserved, though the reserve has room.
    expect(await verdict(raw, [batch(100)])).toBeUndefined()
    const full = server.replica.doc.store.clients.size
    expect(full).toBe(limits.documentClientIdsMax)
    expect(await verdict(raw, [batch(200)])).toBe('FORBIDDEN_WRITE')
    await eventually(() =>
      expect(raw.closed()?.reason).toMatch(/^FORBIDDEN_WRITE: the document would name/),
    )
    expect(server.replica.doc.store.clients.size).toBe(full)
    // D2 (one clientID) takes a fresh one and writes through.
    await d2.sync.full()
    await d2.users.patch('u1', { title: 'After the squat' })
    await d2.sync.whenIdle()
    await eventually(() => expect(server.users.get('u1')?.title).toBe('After the squat'))
    expect(server.replica.doc.store.clients.size).toBe(full + 1)
    expect(d2.sync.status().deviceToServer.state).toBe('success')
    // The reserve is bounded too: with room for 2, one more fresh clientID
    // fills it and the next waits (D2 then holds 4, within its share).
    withLimits(limits, { documentClientIdsReserve: 2 })
    await d2.sync.full()
    await d2.users.patch('u1', { phone: '+1 555 0100' })
    await d2.sync.whenIdle()
    await eventually(() => expect(server.users.get('u1')?.phone).toBe('+1 555 0100'))
    expect(server.replica.doc.store.clients.size).toBe(full + 2)
    await d2.sync.full()
    await d2.users.patch('u1', { department: 'Past the reserve' })
    await expect(d2.sync.whenIdle()).rejects.toThrow(/FORBIDDEN_WRITE/)
    expect(d2.sync.status().deviceToServer).toMatchObject({ state: 'failed' })
    expect(server.users.get('u1')?.department).toBeUndefined()
    expect(server.replica.doc.store.clients.size).toBe(full + 2)
  }, 30_000)

  it('an envelope that brings nothing is neither verified nor applied; one that brings anything is verified', async () => {
    // A probe: valid envelopes of empty updates, 100,000 a message and
    // pre-signed once, each cost the server a signature check.
    const { server } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw, site: siteId } = await joinD9(server, d9)
    const forged = (envelope: Uint8Array): Uint8Array => {
      const opened = decodeEnvelope(envelope)
      return encodeEnvelope({ ...opened, signature: new Uint8Array(64).fill(1) })
    }
    const own = deriveClientId(d9.publicKey, 5)
    const write = entryUpdate(own, 'u:D9', 'u1', 'Nine')
    // Applied once, genuinely signed.
    expect(await verdict(raw, [seal(d9, siteId, 'D9', 5, write)])).toBeUndefined()
    const before = Y.encodeStateVector(server.replica.doc)
    // Brings nothing (empty, or held already): a bad signature goes unread.
    const empty = Y.encodeStateAsUpdate(new Y.Doc())
    expect(await verdict(raw, [forged(seal(d9, siteId, 'D9', 6, empty))])).toBeUndefined()
    expect(await verdict(raw, [forged(seal(d9, siteId, 'D9', 5, write))])).toBeUndefined()
    expect(Y.encodeStateVector(server.replica.doc)).toEqual(before)
    // Its writer and clientIDs are still checked: the server's whole
    // document (held, so nothing new) under D9's name is refused.
    const everything = Y.encodeStateAsUpdate(server.replica.doc)
    expect(await verdict(raw, [seal(d9, siteId, 'D9', 5, everything)])).toBe('FORBIDDEN_WRITE')
    // Brings something (a struct, a delete of an item not held yet): verified.
    const { raw: again } = await joinD9(server, d9)
    const later = Y.encodeStateAsUpdate(
      (() => {
        const doc = new Y.Doc()
        doc.clientID = own
        Y.applyUpdate(doc, write)
        doc.getMap('u:D9').set('u2', { e: 0, f: { title: 'Later' }, s: { title: Date.now() } })
        return doc
      })(),
      Y.encodeStateVector(server.replica.doc),
    )
    expect(await verdict(again, [forged(seal(d9, siteId, 'D9', 5, later))])).toBe(
      'SIGNATURE_INVALID',
    )
    const { raw: third } = await joinD9(server, d9)
    const futureDelete = new Uint8Array([0, 1, ...encodeVarUint(own), 1, 40, 1])
    expect(await verdict(third, [forged(seal(d9, siteId, 'D9', 5, futureDelete))])).toBe(
      'SIGNATURE_INVALID',
    )
    expect(Y.encodeStateVector(server.replica.doc)).toEqual(before)
  }, 30_000)

  it("an envelope of zero-length structs under another device's clientIDs is refused, and counts nothing against it", async () => {
    // A review: a GC struct of length 0 names a clientID while bringing
    // nothing, so the envelope skipped its signature check, and its
    // clientIDs (derived from D2's public key and made-up nonces) were
    // counted as D2's: 511 of them, and D2's next fresh clientID was refused.
    const { server, d2 } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw, site: siteId } = await joinD9(server, d9)
    const d2Public = keyPairFromSeed(seedOf(2)).publicKey
    const nonces = Array.from({ length: limits.envelopeNoncesMax }, (_, i) => 50_000 + i)
    const zeroLength = (clients: number[]): Uint8Array =>
      new Uint8Array([
        ...encodeVarUint(clients.length),
        ...clients.flatMap((client) => [1, ...encodeVarUint(client), 0, 0, 0]),
        0,
      ])
    const update = zeroLength(nonces.map((n) => deriveClientId(d2Public, n)))
    const envelope = encodeEnvelope({
      ...decodeEnvelope(seal(d9, siteId, 'D9', 1, update)),
      writer: 'D2',
      nonces,
    })
    const before = Y.encodeStateVector(server.replica.doc)
    expect(await verdict(raw, [envelope])).toBe('MALFORMED_MESSAGE')
    expect(Y.encodeStateVector(server.replica.doc)).toEqual(before)
    // D2 still takes fresh clientIDs and writes.
    await d2.sync.full()
    await d2.users.patch('u1', { phone: '+1 555 0101' })
    await d2.sync.whenIdle()
    await eventually(() => expect(server.users.get('u1')?.phone).toBe('+1 555 0101'))
  }, 30_000)

  it("a plain (keyless) client cannot take a signing writer's clientID", async () => {
    const { server, d2 } = await site()
    const before = Y.encodeStateVector(server.replica.doc)
    // D2's next clocks, under its own (derived) clientID, in the plain
    // client's own part: accepted, they would make D2's later signed
    // writes no-ops on the server, and the server would sign them to all.
    const squat = new Y.Doc()
    squat.clientID = d2.replica.clientId
    squat.getMap('u:K1').set('u5', { e: 0, f: { title: 'Squat' }, s: { title: Date.now() } })
    const kiosk = join(server, 'K1', undefined)
    kiosk.send({ type: 'sync-update', update: Y.encodeStateAsUpdate(squat) })
    await eventually(() =>
      expect(kiosk.closed()?.reason).toMatch(/^FORBIDDEN_WRITE: a plain update/),
    )
    expect(Y.encodeStateVector(server.replica.doc)).toEqual(before)
    // D2 still gets its writes through.
    await d2.users.patch('u1', { title: 'After the squat' })
    await d2.sync.whenIdle()
    await eventually(() => expect(server.users.get('u1')?.title).toBe('After the squat'))
  }, 30_000)

  it('approval mode approves the device that asked: its key is bound while it waits', async () => {
    const server = await createServer({
      store: memoryStore(),
      siteKey: SITE_KEY,
      approveDevices: true,
    })
    closers.push(() => server.close())
    const real = keyPairFromSeed(seedOf(51))
    const first = join(server, 'T51', real)
    await eventually(() => expect(first.closed()?.reason).toMatch(/^PEER_PENDING/))
    expect(await server.devices.approve('T51')).toBe(true)
    // Someone else with the site key, racing the real device after the approval.
    const intruder = join(server, 'T51', keyPairFromSeed(seedOf(52)))
    await eventually(() => expect(intruder.closed()?.reason).toMatch(/^AUTH_FAILED: .*another key/))
    const again = join(server, 'T51', real)
    await eventually(() => expect(again.received[0]?.type).toBe('hello'))
  }, 30_000)

  it("the administrator resets a replaced terminal's key: the new key waits for approval, shown by fingerprint", async () => {
    const { server, d2 } = await site()
    const record = (): DeviceRecord | undefined =>
      server.devices.list().find((device) => device.id === 'D2')
    // The registry shows the fingerprint of the key the device shows.
    expect(record()?.keyFingerprint).toBe(d2.keyFingerprint)
    expect(d2.keyFingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/)
    expect(await server.devices.resetKey('D2')).toBe(true)
    expect(record()?.state).toBe('pending')
    expect(record()?.keyFingerprint).toBeUndefined()
    // The replacement joins under the id with its own key: bound while it waits.
    const replacement = keyPairFromSeed(seedOf(77))
    const first = join(server, 'D2', replacement)
    await eventually(() => expect(first.closed()?.reason).toMatch(/^PEER_PENDING/))
    expect(record()?.keyFingerprint).toBe(keyFingerprint(replacement.publicKey))
    expect(record()?.keyFingerprint).not.toBe(d2.keyFingerprint)
    expect(await server.devices.approve('D2')).toBe(true)
    const admitted = join(server, 'D2', replacement)
    await eventually(() => expect(admitted.received[0]?.type).toBe('hello'))
    // The old terminal's key no longer speaks for the id.
    const old = join(server, 'D2', keyPairFromSeed(seedOf(2)))
    await eventually(() => expect(old.closed()?.reason).toMatch(/^AUTH_FAILED: .*another key/))
    // Unknown and revoked ids.
    expect(await server.devices.resetKey('nobody')).toBe(false)
    expect(await server.devices.revoke('D2')).toBe(true)
    await expect(server.devices.resetKey('D2')).rejects.toMatchObject({ code: 'PEER_REVOKED' })
  }, 30_000)

  /** T31's join URL with a proof made at `at`. */
  function joinUrlAt(key: KeyPair, at: number): string {
    return joinTarget('T31', key, SITE_KEY, at)
  }

  /** Joins with a raw URL: the first message (a hello when admitted), or the close. */
  async function joinWith(server: ServerPeer, url: string): Promise<Message | CloseInfo> {
    const [mine, theirs] = memoryPair('T31', 'server')
    let first: Message | CloseInfo | undefined
    mine.onMessage((bytes) => (first ??= decodeMessage(bytes)))
    mine.onClose((info) => (first ??= info))
    server.accept(theirs, url)
    await eventually(() => expect(first).toBeDefined())
    return first as Message | CloseInfo
  }

  it('a join proof is good once: a captured join URL replayed is refused', async () => {
    const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    closers.push(() => server.close())
    const url = joinUrlAt(keyPairFromSeed(seedOf(31)), Date.now())
    expect(await joinWith(server, url)).toMatchObject({ type: 'hello' })
    expect(await joinWith(server, url)).toEqual({
      code: 1008,
      reason: expect.stringMatching(/^AUTH_FAILED: join proof replayed/) as unknown,
      byPeer: true,
    })
  }, 30_000)

  it('a join proof stays good once across a restart, and past the proofs kept in full (hostile probe)', async () => {
    // The server kept its accepted proofs in memory only: after a restart a
    // join URL captured within the hour was good again, and its replay
    // replaced the real device's link (4410, which a device does not retry).
    const dir = await mkdtemp(joinPath(tmpdir(), 'rostersync-join-'))
    closers.push(() => rm(dir, { recursive: true, force: true }))
    const open = async (): Promise<ServerPeer> => {
      const server = await createServer({ dataDir: dir, siteKey: SITE_KEY, listen: false })
      closers.push(() => server.close())
      return server
    }
    const key = keyPairFromSeed(seedOf(31))
    const at = Date.now()
    const captured = joinUrlAt(key, at)
    let server = await open()
    expect(await joinWith(server, captured)).toMatchObject({ type: 'hello' })
    await server.close()
    server = await open()
    expect(await joinWith(server, captured)).toMatchObject({
      reason: expect.stringMatching(/^AUTH_FAILED: join proof replayed/) as unknown,
    })
    // More joins than the server keeps proofs of: the first ones let go
    // are still refused.
    for (let i = 1; i <= netLimits.joinProofsKeptPerDeviceMax + 1; i++)
      expect(await joinWith(server, joinUrlAt(key, at + i))).toMatchObject({ type: 'hello' })
    for (const old of [at, at + 1])
      expect(await joinWith(server, joinUrlAt(key, old))).toMatchObject({
        reason: expect.stringMatching(/^AUTH_FAILED: join proof replayed/) as unknown,
      })
    // A later one is good.
    const later = at + netLimits.joinProofsKeptPerDeviceMax + 2
    expect(await joinWith(server, joinUrlAt(key, later))).toMatchObject({ type: 'hello' })
    // Forgotten by the administrator, the device's captured URLs stay spent (review).
    await server.devices.forget('T31')
    expect(await joinWith(server, joinUrlAt(key, later))).toMatchObject({
      reason: expect.stringMatching(/^AUTH_FAILED: join proof replayed/) as unknown,
    })
  }, 30_000)

  it('a device id is bound to the key it first joined with; the site key alone does not speak for it', async () => {
    const { server } = await site()
    const other = keyPairFromSeed(seedOf(42))
    const withOtherKey = join(server, 'D2', other)
    await eventually(() => expect(withOtherKey.closed()?.code).toBe(4401))
    expect(withOtherKey.closed()?.reason).toMatch(/^AUTH_FAILED: .*another key/)
    const withoutKey = join(server, 'D2', undefined)
    await eventually(() => expect(withoutKey.closed()?.code).toBe(4401))
    expect(withoutKey.closed()?.reason).toMatch(/^AUTH_FAILED: this device signs/)
    // A stale proof (two days old) is refused, even for an id with no key yet.
    const [mine, theirs] = memoryPair('D5', 'server')
    let closed: CloseInfo | undefined
    mine.onClose((info) => (closed = info))
    const key = keyPairFromSeed(seedOf(2))
    server.accept(theirs, joinTarget('D5', key, SITE_KEY, Date.now() - 2 * 86_400_000))
    // Refused (not for good: the device learns the server's time, and its
    // next proof, made in that time, is judged again).
    await eventually(() =>
      expect(closed?.reason).toMatch(/^CLOCK_SKEW: proof -2880 min off; server time \d+$/),
    )
    expect(closed?.code).toBe(1008)
    expect(server.devices.list().map((d) => d.id)).not.toContain('D5')
  }, 30_000)
})

describe('signed writes on the LAN', () => {
  /**
   * A raw LAN link to `device` over an in-memory pair, as D9: it shows
   * `auth` (a certificate and its key) first, as every LAN peer must.
   */
  function lanLink(
    device: DevicePeer,
    auth?: { key: KeyPair; cert: Certificate; generation?: Uint8Array },
    as = 'D9',
  ): Raw {
    const [mine, theirs] = memoryPair(as, device.id)
    device.attachLan(theirs, as)
    const raw = rawOf(mine)
    if (auth !== undefined)
      mine.send(
        encodeLanAuth(
          auth.cert,
          signLanProof(auth.key, auth.cert.site, as, device.id),
          auth.generation,
        ),
      )
    return raw
  }

  /** The server's envelopes of its whole answer to the empty state vector, as `raw` receives them. */
  async function serverEnvelopes(raw: Raw): Promise<Uint8Array[]> {
    raw.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(new Y.Doc()) })
    await eventually(() => expect(raw.received.some((m) => m.type === 'signed-step2')).toBe(true))
    return raw.received.flatMap((m) =>
      m.type === 'signed-step2' || m.type === 'signed-update' ? m.envelopes : [],
    )
  }

  it("a retired generation's envelopes, sent back after a compaction, are refused by the server and by devices (hostile probe)", async () => {
    // A device kept the server's signed answer of generation 0 and sent it
    // back after the switch: the retired server clientID and its history
    // came back, and where it sorted above the base the old names replaced
    // the server's new ones, durably, fanned out to every device.
    const { server, d2 } = await site()
    await server.users.put({ id: 'u2', name: 'Bo' })
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw: before } = await joinD9(server, d9)
    const retired = await serverEnvelopes(before)
    expect(retired.length).toBeGreaterThan(0)
    // D9's own envelope of generation 0, replayed by itself after the switch.
    const own9 = deriveClientId(d9.publicKey, 5)
    const { site: s } = await joinD9(server, d9)
    const ownRetired = seal(d9, s, 'D9', 5, entryUpdate(own9, 'u:D9', 'u1', 'Old fill'))

    await server.compactHistory()
    await server.users.patch('u1', { name: 'Ann 2' })
    await server.users.patch('u2', { name: 'Bo 2' })
    // Its link closed with 4412; a manual sync brings it to the new generation now.
    await eventually(() => expect(d2.sync.status().link).not.toBe('connected'))
    await d2.sync.delta()
    await eventually(() => expect(d2.users.get('u2')?.name).toBe('Bo 2'))
    const views = (): unknown => [server.users.list(), d2.users.list()]
    const vector = (): number[][] => [
      [...Y.decodeStateVector(Y.encodeStateVector(server.replica.doc))].flat(),
      [...Y.decodeStateVector(Y.encodeStateVector(d2.replica.doc))].flat(),
    ]
    const was = { views: views(), vector: vector() }

    // To the server, relayed by D9: refused by name (signed for another
    // generation), nothing applied.
    await new Promise((r) => setTimeout(r, 5))
    const { raw: after } = await joinD9(server, d9)
    const hello = after.received[0] as Extract<Message, { type: 'hello' }>
    after.send({ type: 'signed-update', envelopes: retired })
    await eventually(() =>
      expect(after.received.filter((m) => m.type === 'error')).toEqual([
        expect.objectContaining({
          code: 'SIGNATURE_INVALID',
          message: expect.stringMatching(/for this site and generation$/) as unknown,
        }),
      ]),
    )
    // Its own write of the retired generation: refused, and the link closes.
    after.send({ type: 'signed-update', envelopes: [ownRetired] })
    await eventually(() => expect(after.closed()?.reason).toMatch(/^SIGNATURE_INVALID/))
    // To a device on the new generation, over the LAN.
    const lan = lanLink(d2, {
      key: d9,
      cert: decodeCertificate(hello.certificate),
      ...(hello.generation === undefined ? {} : { generation: hello.generation }),
    })
    await eventually(() => expect(lan.received.some((m) => m.type === 'sync-step1')).toBe(true))
    lan.send({ type: 'signed-update', envelopes: retired })
    await eventually(() => expect(lan.closed()?.reason).toMatch(/^SIGNATURE_INVALID/))
    // Nothing changed, on either.
    expect(views()).toEqual(was.views)
    expect(vector()).toEqual(was.vector)
    // And the device still syncs with its server.
    await server.users.patch('u1', { title: 'settled' })
    await d2.sync.delta()
    expect(d2.users.get('u1')?.title).toBe('settled')
  }, 30_000)

  it('a user id no HTTP path reaches is refused in a device update too (review)', async () => {
    const { server } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const own = deriveClientId(d9.publicKey, 5)
    for (const id of ['.', '..', 'a/b', 'c\\d']) {
      const { raw, site: s } = await joinD9(server, d9)
      const update = entryUpdate(own, 'u:D9', id, 'X')
      expect(await verdict(raw, [seal(d9, s, 'D9', 5, update)]), id).toBe('INVALID_RECORD')
      raw.connection.close(1000, 'next')
    }
    expect(server.users.list().map((u) => u.id)).toEqual(['u1'])
  }, 30_000)

  it("the server's own envelope that brings the server something is refused: another history's (hostile probe)", async () => {
    const store = memoryStore()
    const server = await createServer({ store, siteKey: SITE_KEY })
    closers.push(() => server.close())
    const serverKey = (await Identity.open(store, () => 0)).key
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw } = await joinD9(server, d9)
    const hello = raw.received[0] as Extract<Message, { type: 'hello' }>
    // Signed by the server's own key (a data directory restored, a key
    // that leaked): still not taken from a device.
    const forged = encodeEnvelope(
      sealEnvelope(serverKey, siteOf(hello.serverKey), {
        writer: 'server',
        nonces: [],
        update: entryUpdate(424242, 'u:server', 'u9', 'From elsewhere'),
      }),
    )
    const vector = Y.encodeStateVector(server.replica.doc)
    raw.send({ type: 'signed-update', envelopes: [forged] })
    await eventually(() =>
      expect(raw.received.filter((m) => m.type === 'error')).toEqual([
        expect.objectContaining({ code: 'FORBIDDEN_WRITE' }),
      ]),
    )
    expect(server.users.get('u9')).toBeUndefined()
    expect(Y.encodeStateVector(server.replica.doc)).toEqual(vector)
  }, 30_000)

  it('a pinned device verifies every envelope a LAN peer sends: it relays, it forges nothing', async () => {
    const { server, d2 } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const fake = keyPairFromSeed(seedOf(66))
    // D9 is a member: the server certified its key.
    const { raw: serverLink, site: s } = await joinD9(server, d9)
    const hello = serverLink.received[0] as Extract<Message, { type: 'hello' }>
    const cert = decodeCertificate(hello.certificate)
    const own = deriveClientId(d9.publicKey, 5)
    const views = (): unknown => d2.users.list()
    const cases: Array<[string, Message, RegExp]> = [
      [
        'the server part, signed as the server by another key',
        {
          type: 'signed-update',
          envelopes: [seal(fake, s, 'server', 1, entryUpdate(own, 'u:server', 'u1', 'Forged'))],
        },
        /^SIGNATURE_INVALID/,
      ],
      [
        "a device envelope without the server's certificate",
        {
          type: 'signed-update',
          envelopes: [seal(d9, s, 'D9', 5, entryUpdate(own, 'u:D9', 'u1', 'No cert'))],
        },
        /^SIGNATURE_INVALID/,
      ],
      [
        "D9's certificate on an envelope another key signed",
        {
          type: 'signed-update',
          envelopes: [seal(fake, s, 'D9', 5, entryUpdate(own, 'u:D9', 'u1', 'Stolen cert'), cert)],
        },
        /^SIGNATURE_INVALID/,
      ],
      [
        'a certificate of D9 on an envelope claiming to be D2',
        {
          type: 'signed-update',
          envelopes: [seal(d9, s, 'D2', 5, entryUpdate(own, 'u:D2', 'u1', 'Forged'), cert)],
        },
        /^SIGNATURE_INVALID/,
      ],
      [
        "D9's envelope writing into D2's part",
        {
          type: 'signed-update',
          envelopes: [seal(d9, s, 'D9', 5, entryUpdate(own, 'u:D2', 'u1', 'Forged'), cert)],
        },
        /^FORBIDDEN_WRITE/,
      ],
      [
        "D9's envelope under D2's clientID",
        {
          type: 'signed-update',
          envelopes: [
            seal(d9, s, 'D9', 5, entryUpdate(d2.replica.clientId, 'u:D9', 'u8', 'Squat'), cert),
          ],
        },
        /^FORBIDDEN_WRITE/,
      ],
      [
        "D9's envelope writing a revocation (the server's part)",
        {
          type: 'signed-update',
          envelopes: [seal(d9, s, 'D9', 5, revocationUpdate(own, 'D2'), cert)],
        },
        /^FORBIDDEN_WRITE/,
      ],
      [
        'a plain update',
        { type: 'sync-update', update: entryUpdate(own, 'u:D9', 'u1', 'Plain') },
        /^FORBIDDEN_WRITE: SIGNATURE_REQUIRED/,
      ],
    ]
    for (const [name, message, reason] of cases) {
      const before = { views: views(), vector: Y.encodeStateVector(d2.replica.doc) }
      const raw = lanLink(d2, { key: d9, cert })
      raw.send(message)
      await eventually(() => expect(raw.closed()?.reason, name).toMatch(reason))
      expect(views(), name).toEqual(before.views)
      expect(Y.encodeStateVector(d2.replica.doc), name).toEqual(before.vector)
    }
    // D9's own write, certified, goes through the LAN to D2 and on to the server.
    const raw = lanLink(d2, { key: d9, cert })
    raw.send({
      type: 'signed-update',
      envelopes: [seal(d9, s, 'D9', 5, entryUpdate(own, 'u:D9', 'u1', 'From D9'), cert)],
    })
    await eventually(() => expect(d2.users.get('u1')?.title).toBe('From D9'))
    await eventually(() => expect(server.users.get('u1')?.title).toBe('From D9'))
    expect(raw.closed()).toBeUndefined()
  }, 30_000)

  it('a made-up certificate is a forgery, not a stale one: the link closes at the first (LAN audit)', async () => {
    // Refused as "stale" (an expired certificate), each of 100,000 made-up
    // envelopes cost a signature check and an error message while the link
    // went on: one message held a device's event loop 15 s.
    const { server, d2 } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw: serverLink, site: s } = await joinD9(server, d9)
    const cert = certificateOf(serverLink)
    const fake = keyPairFromSeed(seedOf(67))
    const forged = issueCertificate(fake, {
      site: s,
      deviceId: 'D7',
      publicKey: fake.publicKey,
      issuedAt: 1_000,
      expiresAt: 2_000,
    })
    const own = deriveClientId(fake.publicKey, 5)
    const envelopes = Array.from({ length: 300 }, (_, i) =>
      seal(fake, s, 'D7', 5, entryUpdate(own, 'u:D7', `f${i}`, 'Forged'), forged),
    )
    const raw = lanLink(d2, { key: d9, cert })
    raw.send({ type: 'signed-update', envelopes })
    await eventually(() => expect(raw.closed()?.reason).toMatch(/^SIGNATURE_INVALID/))
    expect(raw.received.filter((m) => m.type === 'error').length).toBeLessThanOrEqual(1)
    expect(d2.replica.doc.getMap('u:D7').size).toBe(0)
  }, 30_000)

  it("the server's link excuses any number of another writer's refused envelopes (review)", async () => {
    // A device forgotten by the server (no key any more) whose LAN writes
    // another device logged: that device offers them on every exchange,
    // many to a message. The LAN cap must not close its server link.
    const { server } = await site()
    const d8 = keyPairFromSeed(seedOf(8))
    const { raw: link8, cert: cert8 } = await joinCertified(server, 'D8', d8)
    link8.connection.close(1000, 'gone')
    await server.devices.forget('D8')
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw: link9, site: s } = await joinD9(server, d9)
    const own8 = deriveClientId(d8.publicKey, 5)
    // More than the link's message burst: refused by a lookup (no key), they
    // cost it nothing (a review: counted, they cut an honest device off its
    // server on every exchange).
    const envelopes = Array.from({ length: netLimits.linkMessagesBurstMax + 100 }, (_, i) =>
      seal(d8, s, 'D8', 5, entryUpdate(own8, 'u:D8', `r${i}`, 'Relayed'), cert8),
    )
    link9.send({ type: 'signed-update', envelopes })
    // One report for the message, naming how many were refused.
    await eventually(() =>
      expect(link9.received.filter((m) => m.type === 'error')).toEqual([
        expect.objectContaining({
          code: 'SIGNATURE_INVALID',
          message: expect.stringMatching(
            new RegExp(`^${envelopes.length} relayed envelope`),
          ) as unknown,
        }),
      ]),
    )
    expect(link9.closed()).toBeUndefined()
    expect(server.replica.doc.getMap('u:D8').size).toBe(0)
  }, 30_000)

  it("another writer's refused envelopes get one report a message, and those checked cost the link its message rate (hostile probe)", async () => {
    // 100,000 envelopes of a writer the server does not know, in messages
    // the byte rate lets through, were each answered with an error message
    // (61 MB sent back) in one synchronous loop (event loop stalls of 2.4 s).
    const { server } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw: link9, site: s } = await joinD9(server, d9)
    const nobody = keyPairFromSeed(seedOf(77))
    const own = deriveClientId(nobody.publicKey, 5)
    // Past the burst and what the rate refills while they are checked.
    const many = 5 * netLimits.linkMessagesBurstMax
    const unkeyed = seal(nobody, s, 'NOBODY', 5, entryUpdate(own, 'u:NOBODY', 'r', 'x'))
    link9.send({ type: 'signed-update', envelopes: Array.from({ length: many }, () => unkeyed) })
    await eventually(() =>
      expect(link9.received.filter((m) => m.type === 'error')).toEqual([
        expect.objectContaining({
          message: expect.stringMatching(new RegExp(`^${many} relayed envelope`)) as unknown,
        }),
      ]),
    )
    expect(link9.closed()).toBeUndefined()
    // D2's envelopes signed by another key: each costs a signature check.
    const forged = seal(nobody, s, 'D2', 5, entryUpdate(own, 'u:D2', 'r', 'x'))
    link9.send({ type: 'signed-update', envelopes: Array.from({ length: many }, () => forged) })
    await eventually(() => expect(link9.closed()?.reason).toMatch(/^RATE_LIMITED/))
    expect(link9.received.filter((m) => m.type === 'error').length).toBeLessThanOrEqual(2)
    expect(server.replica.doc.share.has('u:NOBODY')).toBe(false)
    expect(server.users.get('r')).toBeUndefined()
  }, 30_000)

  it('renewed certificates on an open LAN link count against its rates (hostile probe)', async () => {
    // Taken in passing, they never reached the session's buckets: 60,000
    // of them (each a signature check) stalled the victim's loop 4.8 s.
    const { server, d2 } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw: serverLink } = await joinD9(server, d9)
    const cert = certificateOf(serverLink)
    const raw = lanLink(d2, { key: d9, cert })
    await eventually(() => expect(raw.received.some((m) => m.type === 'sync-step1')).toBe(true))
    const renewal = encodeLanAuth(cert, signLanProof(d9, cert.site, 'D9', d2.id))
    for (let i = 0; i < netLimits.linkMessagesBurstMax + 100; i++) raw.connection.send(renewal)
    await eventually(() => expect(raw.closed()?.reason).toMatch(/^RATE_LIMITED/))
  }, 30_000)

  it("a message's envelopes are relayed on in one message, not one each (review)", async () => {
    // A LAN step 2 of 2,100 envelopes went to the server as 2,100 messages,
    // past its link's message burst: RATE_LIMITED, and 33 of them arrived.
    // Here the server's message rate is lowered so that 200 are too many.
    withLimits(netLimits, { linkMessagesPerSecondMax: 5, linkMessagesBurstMax: 50 })
    const { server, d2 } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw: serverLink, site: s } = await joinD9(server, d9)
    const cert = certificateOf(serverLink)
    serverLink.connection.close(1000, 'D9 goes on over the LAN only')
    const own = deriveClientId(d9.publicKey, 5)
    const doc = new Y.Doc()
    doc.clientID = own
    const envelopes: Uint8Array[] = []
    doc.on('update', (update: Uint8Array) => envelopes.push(seal(d9, s, 'D9', 5, update, cert)))
    const count = 200
    for (let i = 0; i < count; i++)
      doc.getMap('u:D9').set(`r${i}`, { e: 0, f: { title: `R ${i}` }, s: { title: Date.now() } })
    const raw = lanLink(d2, { key: d9, cert })
    await eventually(() => expect(raw.received.some((m) => m.type === 'sync-step1')).toBe(true))
    raw.send({ type: 'signed-update', envelopes })
    await eventually(() => expect(server.replica.doc.getMap('u:D9').size).toBe(count), 20_000)
    // Never cut off its server on the way.
    expect(server.events.query({ type: 'write-refused', deviceId: 'D2' })).toEqual([])
    expect(d2.sync.status().deviceToServer.error).toBeUndefined()
    expect(d2.events.query({ type: 'sync-failed' })).toEqual([])
    expect(raw.closed()).toBeUndefined()
  }, 30_000)

  it('envelopes held back for a gap their writer left are not relayed to the server: the relaying device keeps its link', async () => {
    // A compromised D9 sent its neighbour 900 envelopes after a gap it
    // never filled on each of two links; relayed, they closed the
    // neighbour's server link TOO_MANY_HELD_BACK at every sync (a probe).
    withLimits(limits, { heldBackUpdatesPerLinkMax: 3 })
    const { server, d2 } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw: serverLink, site: s } = await joinD9(server, d9)
    const cert = certificateOf(serverLink)
    serverLink.connection.close(1000, 'D9 goes on over the LAN only')
    const doc = new Y.Doc()
    doc.clientID = deriveClientId(d9.publicKey, 5)
    const envelopes: Uint8Array[] = []
    doc.on('update', (update: Uint8Array) => envelopes.push(seal(d9, s, 'D9', 5, update, cert)))
    for (let i = 0; i < 7; i++)
      doc.getMap('u:D9').set(`g${i}`, { e: 0, f: { title: `G ${i}` }, s: { title: Date.now() } })
    const links = [lanLink(d2, { key: d9, cert }), lanLink(d2, { key: d9, cert })]
    for (const raw of links)
      await eventually(() => expect(raw.received.some((m) => m.type === 'sync-step1')).toBe(true))
    // The first never comes: three after it on each link, all held back.
    links[0]?.send({ type: 'signed-update', envelopes: envelopes.slice(1, 4) })
    links[1]?.send({ type: 'signed-update', envelopes: envelopes.slice(4, 7) })
    await new Promise((resolve) => setTimeout(resolve, 100))
    await d2.sync.delta()
    await d2.sync.delta()
    expect(d2.events.query({ type: 'sync-failed' })).toEqual([])
    expect(server.replica.doc.getMap('u:D9').size).toBe(0)
    // The gap filled: the server gets every one.
    links[0]?.send({ type: 'signed-update', envelopes: envelopes.slice(0, 1) })
    for (let round = 0; round < 20 && server.replica.doc.getMap('u:D9').size < 7; round++) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      await d2.sync.delta()
    }
    expect(server.replica.doc.getMap('u:D9').size).toBe(7)
    expect(d2.events.query({ type: 'sync-failed' })).toEqual([])
  })

  it('a link goes on past a few stale relayed envelopes, not past staleEnvelopesPerMessageMax', async () => {
    const { server, d2 } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw: serverLink, site: s } = await joinD9(server, d9)
    const cert = certificateOf(serverLink)
    // D8's certificate, genuine; D8 then revoked: its envelopes are stale.
    const d8 = keyPairFromSeed(seedOf(8))
    const { cert: cert8 } = await joinCertified(server, 'D8', d8)
    await server.devices.revoke('D8')
    await d2.sync.full()
    const own8 = deriveClientId(d8.publicKey, 5)
    const stale = (n: number): Uint8Array[] =>
      Array.from({ length: n }, (_, i) =>
        seal(d8, s, 'D8', 5, entryUpdate(own8, 'u:D8', `s${i}`, 'Stale'), cert8),
      )
    const raw = lanLink(d2, { key: d9, cert })
    raw.send({ type: 'signed-update', envelopes: stale(3) })
    await eventually(() =>
      expect(raw.received.filter((m) => m.type === 'error')).toEqual([
        expect.objectContaining({
          code: 'PEER_REVOKED',
          message: expect.stringMatching(/^3 relayed envelope/) as unknown,
        }),
      ]),
    )
    expect(raw.closed()).toBeUndefined()
    raw.send({ type: 'signed-update', envelopes: stale(netLimits.staleEnvelopesPerMessageMax + 1) })
    await eventually(() => expect(raw.closed()?.reason).toMatch(/^PEER_REVOKED/))
    expect(raw.received.filter((m) => m.type === 'error').length).toBeLessThanOrEqual(2)
  }, 30_000)

  it('an envelope held back (a gap before it) is relayed once, however often it comes back', async () => {
    // Swarm seed 2 of bench/sim.ts: each copy of an envelope held back
    // looked new (the state vector does not move), went out on every other
    // link, and LAN neighbours sent it back: copies without end, past 3 GB.
    const { server, d2 } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw: link9, site: s } = await joinD9(server, d9)
    const cert = certificateOf(link9)
    const d8 = keyPairFromSeed(seedOf(8))
    const { cert: cert8 } = await joinCertified(server, 'D8', d8)
    // D9's two writes; D2 hears the second first.
    const doc = new Y.Doc()
    doc.clientID = deriveClientId(d9.publicKey, 5)
    const entry = (name: string): unknown => ({
      e: 0,
      f: { title: name },
      s: { title: Date.now() },
    })
    doc.getMap('u:D9').set('u1', entry('First'))
    const between = Y.encodeStateVector(doc)
    doc.getMap('u:D9').set('u2', entry('Second'))
    const first = seal(d9, s, 'D9', 5, Y.encodeStateAsUpdate(doc, undefined), cert)
    const second = seal(d9, s, 'D9', 5, Y.encodeStateAsUpdate(doc, between), cert)
    const from9 = lanLink(d2, { key: d9, cert })
    const to8 = lanLink(d2, { key: d8, cert: cert8 }, 'D8')
    const relayed = (envelope: Uint8Array): number =>
      to8.received.filter(
        (m) =>
          m.type === 'signed-update' &&
          m.envelopes.some((e) => Buffer.from(e).equals(Buffer.from(envelope))),
      ).length
    for (let i = 0; i < 10; i++) from9.send({ type: 'signed-update', envelopes: [second] })
    // A step 1 behind them: its answer shows all ten were handled.
    from9.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(new Y.Doc()) })
    await eventually(() => expect(from9.received.some((m) => m.type === 'signed-step2')).toBe(true))
    await eventually(() => expect(relayed(second)).toBeGreaterThan(0))
    expect(relayed(second)).toBe(1)
    const part = d2.replica.doc.getMap('u:D9')
    expect([part.has('u1'), part.has('u2')]).toEqual([false, false])
    expect(from9.closed()).toBeUndefined()
    // The envelope log lets it go (a third write, held back too, takes its
    // place under a small cap): heard again, it is logged and relayed again,
    // once, for the LAN peers that ask later (review finding: the memo kept
    // it out of the log for good).
    const afterSecond = Y.encodeStateVector(doc)
    doc.getMap('u:D9').set('u3', entry('Third'))
    const third = seal(d9, s, 'D9', 5, Y.encodeStateAsUpdate(doc, afterSecond), cert)
    const capped = limits as { envelopeLogBytesMax: number }
    const cap = capped.envelopeLogBytesMax
    capped.envelopeLogBytesMax = 1
    try {
      from9.send({ type: 'signed-update', envelopes: [third] })
      await eventually(() => expect(relayed(third)).toBe(1))
      for (let i = 0; i < 3; i++) from9.send({ type: 'signed-update', envelopes: [second] })
      from9.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(new Y.Doc()) })
      await eventually(() =>
        expect(from9.received.filter((m) => m.type === 'signed-step2')).toHaveLength(2),
      )
      await eventually(() => expect(relayed(second)).toBe(2))
    } finally {
      capped.envelopeLogBytesMax = cap
    }
    // The gap fills: all integrate, and the first write is relayed too.
    from9.send({ type: 'signed-update', envelopes: [first] })
    await eventually(() =>
      expect([part.has('u1'), part.has('u2'), part.has('u3')]).toEqual([true, true, true]),
    )
    await eventually(() => expect(relayed(first)).toBe(1))
    expect(relayed(second)).toBe(2)
    expect(relayed(third)).toBe(1)
  }, 30_000)

  it("a revocation reaches devices: the revoked device's certificate no longer speaks for it on the LAN", async () => {
    const { server, d2 } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw: serverLink, site: s } = await joinD9(server, d9)
    const hello = serverLink.received[0] as Extract<Message, { type: 'hello' }>
    const cert = decodeCertificate(hello.certificate)
    const own = deriveClientId(d9.publicKey, 5)
    // Before the revocation, D9's certified fill shows on D2.
    const lan = lanLink(d2, { key: d9, cert })
    lan.send({
      type: 'signed-update',
      envelopes: [seal(d9, s, 'D9', 5, entryUpdate(own, 'u:D9', 'u1', 'From D9'), cert)],
    })
    await eventually(() => expect(d2.users.get('u1')?.title).toBe('From D9'))
    expect(await server.devices.revoke('D9')).toBe(true)
    // D2 hears of it from the server, and leaves D9's part out of its view
    // (the title stays: the server adopted it when it was D9's to fill).
    await eventually(() => expect(d2.replica.isRevoked('D9')).toBe(true))
    const writers = (): string[] =>
      d2.replica.replicaOf(asUserId('u1')).devices.map(([writer]) => writer)
    expect(writers()).toEqual(['D2'])
    expect(d2.replica.doc.getMap('u:D9').has('u1')).toBe(true)
    // D2 closes its link to D9 as soon as it hears: a revoked device no
    // longer reads the roster over the LAN.
    await eventually(() => expect(lan.closed()?.reason).toMatch(/^PEER_REVOKED/))
    expect(lan.closed()?.code).toBe(4403)
    // D9 comes back with the same certificate: refused at the door, sent nothing.
    const back = lanLink(d2, { key: d9, cert })
    await eventually(() => expect(back.closed()?.reason).toMatch(/^PEER_REVOKED/))
    expect(back.received).toEqual([])
    // D9's next write, relayed by another member (D8), with the same
    // certificate, is refused.
    const d8 = keyPairFromSeed(seedOf(8))
    const d8Link = join(server, 'D8', d8)
    await eventually(() => expect(d8Link.received[0]?.type).toBe('hello'))
    const hello8 = d8Link.received[0] as Extract<Message, { type: 'hello' }>
    const cert8 = decodeCertificate(hello8.certificate)
    const before = { views: d2.users.list(), vector: Y.encodeStateVector(d2.replica.doc) }
    const again = lanLink(d2, { key: d8, cert: cert8 }, 'D8')
    again.send({
      type: 'signed-update',
      envelopes: [
        seal(
          d9,
          s,
          'D9',
          5,
          entryUpdate(deriveClientId(d9.publicKey, 6), 'u:D9', 'u2', 'Later'),
          cert,
        ),
      ],
    })
    // Refused by name; the link goes on (a peer that logged the envelope
    // before it heard of the revocation must keep its LAN links).
    await eventually(() =>
      expect(again.received.some((m) => m.type === 'error' && m.code === 'PEER_REVOKED')).toBe(
        true,
      ),
    )
    expect(again.closed()).toBeUndefined()
    // D2 no longer offers the revoked writer's logged envelopes.
    const asker = lanLink(d2, { key: d8, cert: cert8 }, 'D8')
    asker.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(new Y.Doc()) })
    await eventually(() => expect(asker.received.some((m) => m.type === 'signed-step2')).toBe(true))
    const answer = asker.received.find((m) => m.type === 'signed-step2')
    const offered =
      answer?.type === 'signed-step2' ? answer.envelopes.map((e) => decodeEnvelope(e).writer) : []
    expect(offered).not.toContain('D9')
    expect(d2.users.list()).toEqual(before.views)
    expect(Y.encodeStateVector(d2.replica.doc)).toEqual(before.vector)
    // The server still holds the revocation after a restart of the list.
    expect(server.replica.isRevoked('D9')).toBe(true)
  }, 30_000)
})

/** An update writing a revocation of `deviceId` into the server's revocations, under `clientId`. */
function revocationUpdate(clientId: number, deviceId: string): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = clientId
  doc.getMap('r:server').set(deviceId, { t: Date.now() * 65_536 })
  return Y.encodeStateAsUpdate(doc)
}

describe("a device relaying another writer's envelopes the server does not take", () => {
  it('keeps its link: envelopes past the writer’s clientID budget are refused before their signature, nearly free', async () => {
    // A compromised D9 had an honest neighbour relay 2,500 envelopes under
    // its 513th clientID, each signature checked and charged to the
    // neighbour's link: closed RATE_LIMITED at every sync (a probe).
    withLimits(limits, { writerClientIdsMax: 2 })
    withLimits(netLimits, { linkMessagesBurstMax: 20 })
    const { server } = await site()
    const d9 = keyPairFromSeed(seedOf(9))
    const { raw: own9, site: siteId } = await joinD9(server, d9)
    const clientOf = (nonce: number): number => deriveClientId(d9.publicKey, nonce)
    expect(
      await verdict(own9, [
        seal(d9, siteId, 'D9', 1, entryUpdate(clientOf(1), 'u:D9', 'x1', 'One')),
        seal(d9, siteId, 'D9', 2, entryUpdate(clientOf(2), 'u:D9', 'x2', 'Two')),
      ]),
    ).toBeUndefined()
    const relay = await joinCertified(server, 'R1', keyPairFromSeed(seedOf(41)))
    const overBudget = Array.from({ length: 40 }, (_, i) =>
      seal(d9, siteId, 'D9', 3, entryUpdate(clientOf(3), 'u:D9', `z${i}`, `Z ${i}`)),
    )
    expect(await verdict(relay.raw, overBudget)).toBe('FORBIDDEN_WRITE')
    expect(relay.raw.closed()).toBeUndefined()
    expect(server.users.get('z0')).toBeUndefined()
    // The relaying device's own write still lands on the same link.
    const r1 = keyPairFromSeed(seedOf(41))
    expect(
      await verdict(relay.raw, [
        seal(
          r1,
          siteId,
          'R1',
          1,
          entryUpdate(deriveClientId(r1.publicKey, 1), 'u:R1', 'u1', 'Mine'),
        ),
      ]),
    ).toBeUndefined()
    expect(relay.raw.closed()).toBeUndefined()
  })
})

describe('one key joined as two ids, one of them revoked', () => {
  it("the other id's link is closed, and its envelopes are refused whoever relays them", async () => {
    const { server } = await site()
    const k = keyPairFromSeed(seedOf(77))
    const x = await joinCertified(server, 'X7', k)
    const y = await joinCertified(server, 'Y7', k)
    const siteId = siteOf((x.raw.received[0] as Extract<Message, { type: 'hello' }>).serverKey)
    const relay = await joinCertified(server, 'R7', keyPairFromSeed(seedOf(78)))
    await server.devices.revoke('X7')
    await eventually(() => expect(y.raw.closed()?.reason).toMatch(/^PEER_REVOKED/))
    const written = seal(
      k,
      siteId,
      'Y7',
      1,
      entryUpdate(deriveClientId(k.publicKey, 1), 'u:Y7', 'yy', 'After the revoke'),
    )
    expect(await verdict(relay.raw, [written])).toBe('SIGNATURE_INVALID')
    expect(server.users.get('yy')).toBeUndefined()
    expect(relay.raw.closed()).toBeUndefined()
  })
})
