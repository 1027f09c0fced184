/**
 * A refusal is never silent (issue 11, item 3): a refused update closes the
 * device's link with its error code; the server's registry says `failed`
 * with the code and keeps saying it while the refused content is missing;
 * `write-refused` is logged once per cause; a rostersync device shows the
 * error in its status and retries with a backoff that grows instead of
 * reconnecting in a loop.
 */
import { asUserId } from '../core/ids.js'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { SyncError } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import type { Transport } from '../core/transport.js'
import { createDevice } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { rawLink } from './helpers/raw-link.js'

const SITE_KEY = 'floods-refusal-key'
const HOUR = 3_600_000
const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

const deviceToServer = (server: ServerPeer, id: string) =>
  server.devices.list().find((d) => d.id === id)?.sync.deviceToServer

/** A server on `clock` that does not listen (raw links only), closed after the test. */
async function offlineServer(clock = new ManualClock()): Promise<ServerPeer> {
  const server = await createServer({
    store: memoryStore(),
    clock,
    listen: false,
    siteKey: SITE_KEY,
  })
  closers.push(() => server.close())
  return server
}

describe('an unmodified y-websocket client whose update is refused', () => {
  it('is closed with the code each time, the registry says failed, the log says it once', async () => {
    const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    closers.push(() => server.close())
    const doc = new Y.Doc()
    const provider = new WebsocketProvider(server.url, 'roster', doc, {
      WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
      params: { device: 'Y1', key: SITE_KEY },
      // Reconnect quickly, so that the test sees several refusals.
      maxBackoffTime: 50,
    })
    closers.push(() => provider.destroy())
    const closes: Array<{ code: number; reason: string }> = []
    provider.on('connection-close', (event: { code: number; reason: string } | null) => {
      if (event !== null) closes.push({ code: event.code, reason: event.reason })
    })
    await eventually(() => expect(provider.synced).toBe(true))
    const part = doc.getMap('u:Y1')
    part.set('u1', { e: 0, f: { name: 'Valid' }, s: { name: 1 } })
    await eventually(() => expect(deviceToServer(server, 'Y1')?.state).toBe('success'))
    // Refused: not a valid record. Then a valid write that depends on it.
    part.set('u2', { e: 0, f: { status: 'exploded' }, s: { status: 1 } })
    part.set('u3', { e: 0, f: { name: 'Later' }, s: { name: 1 } })
    // The client is told (a close with the code), on every reconnect.
    await eventually(() => expect(closes.length).toBeGreaterThanOrEqual(3), 10_000)
    for (const close of closes) {
      expect(close.code).toBe(1008)
      expect(close.reason).toMatch(/^INVALID_RECORD: /)
    }
    // The registry says failed with the code, and no success papers over it.
    expect(deviceToServer(server, 'Y1')).toMatchObject({
      state: 'failed',
      error: 'INVALID_RECORD',
    })
    // Logged once per cause, not once per retry.
    const refused = server.events.query({ type: 'write-refused', deviceId: 'Y1' })
    expect(refused.map((e) => e.code)).toEqual(['INVALID_RECORD'])
    expect(server.replica.doc.getMap('u:Y1').has('u3')).toBe(false)
  })
})

describe('a rostersync device whose change is refused', () => {
  it('shows the error, and retries with a backoff that grows instead of in a loop', async () => {
    const clock = new ManualClock()
    const server = await offlineServer(clock)
    let connects = 0
    const transport: Transport = {
      connect: async (url) => {
        connects++
        const [mine, theirs] = memoryPair('device', 'server')
        server.accept(theirs, url)
        return mine
      },
      close: async () => undefined,
    }
    let n = 0
    const device = await createDevice({
      id: 'D1',
      store: memoryStore(),
      clock,
      server: 'ws://sim-server',
      serverTransport: transport,
      siteKey: SITE_KEY,
      randomUint32: () => 0x80000000 + n++,
    })
    closers.push(() => device.close())
    await device.sync.whenIdle()
    // A record the server refuses in the device's own part, as a buggy
    // firmware could write it past the API (the replica itself checks
    // nothing): every push of this device now has it. (A relayed record
    // would not do: a device relays only what its writer signed.)
    await device.replica.write((ctx) =>
      ctx.setOwnEntry(asUserId('u9'), { e: 0, f: { status: 'exploded' }, s: { status: 1 } }),
    )
    const failure = await device.sync.delta().catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(SyncError)
    expect((failure as SyncError).message).toMatch(/INVALID_RECORD/)
    await eventually(() =>
      expect(device.sync.status().deviceToServer).toMatchObject({
        state: 'failed',
        error: { code: 'INVALID_RECORD' },
      }),
    )
    expect(deviceToServer(server, 'D1')).toMatchObject({ state: 'failed', error: 'INVALID_RECORD' })
    // An hour of virtual time: the link reconnects on a growing backoff.
    const before = connects
    for (let minute = 0; minute < 60; minute++) await clock.advance(HOUR / 60)
    await settle()
    const attempts = connects - before
    // At most one attempt per half of the backoff's bound once it is
    // reached, plus the doubling steps that reach it (and the automatic
    // sync's own retry, which never makes the link try sooner).
    const ramp = Math.ceil(Math.log2(netLimits.retryDelayMsMax / netLimits.retryDelayMsMin)) + 1
    expect(attempts).toBeGreaterThan(0)
    expect(attempts).toBeLessThanOrEqual(ramp + HOUR / (netLimits.retryDelayMsMax / 2))
    expect(device.sync.status().deviceToServer).toMatchObject({
      state: 'failed',
      error: { code: 'INVALID_RECORD' },
    })
    const refused = server.events.query({ type: 'write-refused', deviceId: 'D1' })
    expect(refused.map((e) => e.code)).toEqual(['INVALID_RECORD'])
    // The device logs its outage once too.
    expect(device.events.query({ type: 'sync-failed' })).toHaveLength(1)
  })
})

describe("what deviceToServer 'success' means at the server", () => {
  it('not while a refused update is missing, nor for an update held back', async () => {
    const server = await offlineServer()
    const refusedWriter = new Y.Doc()
    refusedWriter.clientID = 1001
    refusedWriter.getMap('u:D1').set('u1', { e: 0, f: { status: 'exploded' }, s: { status: 1 } })
    const first = rawLink(server, 'D1', SITE_KEY)
    first.send({ type: 'sync-update', update: Y.encodeStateAsUpdate(refusedWriter) })
    await eventually(() => expect(first.closed()?.code).toBe(1008))
    expect(deviceToServer(server, 'D1')).toMatchObject({ state: 'failed', error: 'INVALID_RECORD' })
    // The same device, another clientID: a valid update applies, but what
    // was refused is still missing (the device still holds it, as far as
    // the server knows): still failed.
    const other = new Y.Doc()
    other.clientID = 1002
    other.getMap('u:D1').set('u2', { e: 0, f: { name: 'Fine' }, s: { name: 1 } })
    const second = rawLink(server, 'D1', SITE_KEY)
    second.send({ type: 'sync-update', update: Y.encodeStateAsUpdate(other) })
    await eventually(() => expect(server.replica.doc.getMap('u:D1').has('u2')).toBe(true))
    await settle()
    expect(deviceToServer(server, 'D1')).toMatchObject({ state: 'failed', error: 'INVALID_RECORD' })
    // An update that cannot be integrated (its clientID's earlier operations
    // never came) is held back: no success either.
    const gap = new Y.Doc()
    gap.clientID = 1003
    gap.getMap('u:D1').set('u3', { e: 0, f: { name: 'A' }, s: { name: 1 } })
    const sv = Y.encodeStateVector(gap)
    gap.getMap('u:D1').set('u4', { e: 0, f: { name: 'B' }, s: { name: 1 } })
    // The device says (step 1) it holds only what the server has: the
    // refused operations are gone from it (it was reset).
    second.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(other) })
    second.send({ type: 'sync-update', update: Y.encodeStateAsUpdate(gap, sv) })
    await settle(20)
    expect(server.replica.doc.getMap('u:D1').has('u4')).toBe(false)
    expect(deviceToServer(server, 'D1')?.state).toBe('failed')
    // Now the missing operations come: success.
    second.send({ type: 'sync-update', update: Y.encodeStateAsUpdate(gap) })
    await eventually(() => expect(deviceToServer(server, 'D1')?.state).toBe('success'))
  })
})

describe('a device forgotten after a refusal', () => {
  it('starts afresh when it comes back: its refusal is logged again (years probe)', async () => {
    // The server kept, per device id, the causes it had logged and the
    // refused operations it waited for, past the id's forgetting: a leak
    // (about 0.5 MB per 1,000 forgotten ids), and the same id registered
    // again had its first refusal go unlogged.
    const server = await offlineServer()
    const refused = (): Uint8Array => {
      const writer = new Y.Doc()
      writer.getMap('u:D1').set('u1', { e: 0, f: { status: 'exploded' }, s: { status: 1 } })
      return Y.encodeStateAsUpdate(writer)
    }
    const refusals = (): number =>
      server.events.query({ type: 'write-refused', deviceId: 'D1' }).length
    const first = rawLink(server, 'D1', SITE_KEY)
    first.send({ type: 'sync-update', update: refused() })
    await eventually(() => expect(first.closed()?.code).toBe(1008))
    await eventually(() => expect(refusals()).toBe(1))
    // Once per cause while it is known.
    const again = rawLink(server, 'D1', SITE_KEY)
    again.send({ type: 'sync-update', update: refused() })
    await eventually(() => expect(again.closed()?.code).toBe(1008))
    await settle()
    expect(refusals()).toBe(1)
    expect(await server.devices.forget('D1')).toBe(true)
    const back = rawLink(server, 'D1', SITE_KEY)
    back.send({ type: 'sync-update', update: refused() })
    await eventually(() => expect(back.closed()?.code).toBe(1008))
    await eventually(() => expect(refusals()).toBe(2))
    expect(deviceToServer(server, 'D1')).toMatchObject({ state: 'failed', error: 'INVALID_RECORD' })
  })
})
