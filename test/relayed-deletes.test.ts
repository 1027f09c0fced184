/**
 * A delete set relayed without what replaces it (peers/envelope-news.ts,
 * `deletesUnreplaced`). A state exchange's answer carries its sender's
 * whole delete set: a device with a valid key asked the server with the
 * server's own state vector, got an envelope of the server's deletes
 * alone, and relayed it over the LAN to a device cut off from the server.
 * There the old entries the server had replaced went without their
 * replacements, and the users vanished on it and on its LAN peers until
 * its next server sync (a hostile probe). Such an envelope is not taken;
 * one that brings the replacements is.
 */
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { decodeCertificate, keyPairFromSeed, signLanProof } from '../core/signing.js'
import type { Connection, Transport } from '../core/transport.js'
import { scanUpdate } from '../core/update-scan.js'
import { encodeLanAuth } from '../peers/lan-auth.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { deletesUnreplaced } from '../peers/envelope-news.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'
import { joinTarget } from './helpers/join-url.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { rawEnd, type RawEnd } from './helpers/raw-link.js'

const SITE_KEY = 'relayed-deletes-site-key'
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

/** A server, and devices D and E that synced with it, then lost it and keep a LAN link. */
async function cutOffSite(): Promise<{
  clock: ManualClock
  server: ServerPeer
  d: DevicePeer
  e: DevicePeer
}> {
  const clock = new ManualClock(Date.UTC(2026, 11, 7, 9))
  const server = await createServer({
    store: memoryStore(),
    clock,
    listen: false,
    siteKey: SITE_KEY,
  })
  closers.push(() => server.close())
  await server.users.put({ id: 'X', name: 'Xavier', email: 'x@server.example' })
  await server.users.put({ id: 'Y', name: 'Yolanda' })
  let down = false
  const links: Connection[] = []
  const transport: Transport = {
    connect: async (url) => {
      if (down) throw new Error('server down')
      const [mine, theirs] = memoryPair('device', 'server')
      links.push(theirs)
      server.accept(theirs, url)
      return mine
    },
    close: async () => undefined,
  }
  const device = async (id: string): Promise<DevicePeer> => {
    const peer = await createDevice({
      id,
      store: memoryStore(),
      clock,
      server: 'ws://sim-server',
      serverTransport: transport,
      siteKey: SITE_KEY,
    })
    closers.push(() => peer.close())
    await peer.sync.full()
    return peer
  }
  const d = await device('D')
  const e = await device('E')
  down = true
  for (const link of links) link.close(1001, 'server down')
  await settle(20)
  const [de, ed] = memoryPair('D', 'E')
  d.attachLan(de, 'E')
  e.attachLan(ed, 'D')
  return { clock, server, d, e }
}

/** H, a device of the site with its own key: its certificate, and the server's answer to `vector`. */
async function askServer(
  server: ServerPeer,
  clock: ManualClock,
  vector: (serverVector: Uint8Array) => Uint8Array,
): Promise<{ cert: ReturnType<typeof decodeCertificate>; envelopes: Uint8Array[] }> {
  const [mine, theirs] = memoryPair('H', 'server')
  const h = rawEnd(mine)
  server.accept(theirs, joinTarget('H', KEY_H, SITE_KEY, clock.now()))
  await eventually(() => expect(h.received[0]?.type).toBe('hello'))
  const hello = h.received[0]
  if (hello?.type !== 'hello') throw new Error('no hello')
  // A first exchange, to learn the server's state vector.
  h.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(new Y.Doc()) })
  await eventually(() => expect(h.received.some((m) => m.type === 'signed-step2')).toBe(true))
  await eventually(() => expect(h.received.some((m) => m.type === 'sync-step1')).toBe(true))
  const step1 = h.received.find((m) => m.type === 'sync-step1')
  if (step1?.type !== 'sync-step1') throw new Error('no step 1')
  h.received.length = 0
  h.send({ type: 'sync-step1', stateVector: vector(step1.stateVector) })
  await eventually(() => expect(h.received.some((m) => m.type === 'signed-step2')).toBe(true))
  const envelopes = h.received.flatMap((m) =>
    m.type === 'signed-step2' || m.type === 'signed-update' ? m.envelopes : [],
  )
  return { cert: decodeCertificate(hello.certificate), envelopes }
}

const KEY_H = keyPairFromSeed(new Uint8Array(32).fill(91))

/** H's LAN link to `d`, its certificate shown. */
function lanFromH(d: DevicePeer, cert: ReturnType<typeof decodeCertificate>): RawEnd {
  const [mine, theirs] = memoryPair('H', d.id)
  d.attachLan(theirs, 'H')
  const raw = rawEnd(mine)
  mine.send(encodeLanAuth(cert, signLanProof(KEY_H, cert.site, 'H', d.id)))
  return raw
}

describe('a delete set relayed without its replacements', () => {
  it("is not taken over the LAN: the server's deletes alone make no user vanish (hostile probe)", async () => {
    const { clock, server, d, e } = await cutOffSite()
    await server.users.patch('X', { title: 'Engineer' }) // X's old entry replaced
    // H asks with everything the server holds: the answer is its delete set alone.
    const { cert, envelopes } = await askServer(server, clock, (theirs) => theirs)
    const h = lanFromH(d, cert)
    await eventually(() => expect(h.received.length).toBeGreaterThan(0))
    h.send({ type: 'signed-update', envelopes })
    await settle(50)
    expect(d.users.get('X')).toEqual({ id: 'X', name: 'Xavier', email: 'x@server.example' })
    expect(e.users.get('X')?.name).toBe('Xavier')
    // Not taken, not refused: a relaying device is not at fault.
    expect(h.closed()).toBeUndefined()
  })

  it('is taken with its replacements: the answer to an empty vector brings the new entry', async () => {
    const { clock, server, d, e } = await cutOffSite()
    await server.users.patch('X', { title: 'Engineer' })
    const { cert, envelopes } = await askServer(server, clock, () =>
      Y.encodeStateVector(new Y.Doc()),
    )
    const h = lanFromH(d, cert)
    await eventually(() => expect(h.received.length).toBeGreaterThan(0))
    h.send({ type: 'signed-update', envelopes })
    await eventually(() => expect(d.users.get('X')?.title).toBe('Engineer'))
    await eventually(() => expect(e.users.get('X')?.title).toBe('Engineer'))
    expect(d.users.list().map((u) => u.id)).toEqual(['X', 'Y'])
  })
})

describe('deletesUnreplaced', () => {
  const FIRST = { e: 0, f: { email: 'a@x' }, s: { email: 1 } }
  /** Writer V's entry for u1 as first set (clientID 7): the same struct in every document. */
  function first(): Y.Doc {
    const doc = new Y.Doc()
    doc.clientID = 7
    doc.getMap('u:V').set('u1', FIRST)
    return doc
  }

  it("holds for any writer's part: a shown value deleted without the item that replaces it", () => {
    const doc = first()
    const before = Y.encodeStateVector(doc)
    doc.getMap('u:V').set('u1', { e: 0, f: { email: 'b@x' }, s: { email: 2 } })
    const behind = first() // holds only the first version, shown
    const deletesOnly = Y.encodeStateAsUpdate(doc, Y.encodeStateVector(doc))
    expect(deletesUnreplaced(behind, scanUpdate(deletesOnly))).toBe(true)
    // With structs (here the replacement): taken, Yjs holds what lacks its origins.
    const withNew = Y.encodeStateAsUpdate(doc, before)
    expect(deletesUnreplaced(behind, scanUpdate(withNew))).toBe(false)
    // A peer that holds the replacement: nothing it shows is deleted.
    expect(deletesUnreplaced(doc, scanUpdate(deletesOnly))).toBe(false)
    // An outright delete of a shown value (only the server's take-back of a revocation does it).
    const outright = first()
    const held = Y.encodeStateVector(outright)
    outright.getMap('u:V').delete('u1')
    const deletion = Y.encodeStateAsUpdate(outright, held)
    expect(deletesUnreplaced(first(), scanUpdate(deletion))).toBe(true)
  })
})
