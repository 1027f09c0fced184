/**
 * What an update may say (issue 11), one regression per finding: stamps
 * within `stampSkewMsMax` of the receiver's clock (a stamp of 2^53 pinned
 * the server's HLC), device epochs no greater than the server's (1e9 or
 * Infinity made a user undeletable), no keys beside an entry's own (extra
 * keys grew the server's data from 0.1 to 7.1 MB), one writer per Yjs client
 * (items and GC ranges under another peer's clientID hid its later writes),
 * no GC ranges the receiver does not hold (50,000 unknown clientIDs made
 * every step 1 300 KB), and refusals that quote only a clipped excerpt of the
 * input (one echoed 2 MB into the event log). Legitimate histories
 * (replaced and deleted entries, a writer's new clientID replacing its old
 * one's entry, skips over held ids) still pass.
 */
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { checkUpdate, serverClientsOf, type CheckOptions } from '../core/authorize.js'
import { clip, RostersyncError } from '../core/errors.js'
import { limits } from '../core/limits.js'
import { decodeMessage, encodeMessage, type Message } from '../core/protocol.js'
import { RecordSchema } from '../core/schema.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { encodeForged } from './helpers/forged-updates.js'
import { ManualClock } from './helpers/manual-clock.js'

const NOW = 1_800_000_000_000
const schema = new RecordSchema()
/** What the server checks of a device's update. */
const atServer: CheckOptions = { mayWrite: (owner) => owner !== 'server', schema, now: NOW }

const entry = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
  e: 0,
  f: { name: 'Ann' },
  s: { name: NOW * 1000 },
  ...overrides,
})

/** An update of a fresh client (id `client`) setting `u:<writer>`[key] = value. */
function setUpdate(writer: string, key: string, value: unknown, client = 4242): Uint8Array {
  return encodeForged([
    {
      kind: 'item',
      client,
      clock: 0,
      parent: { root: `u:${writer}` },
      key,
      content: { any: [value] },
    },
  ])
}

/** The error `fn` throws, or a test failure. */
function refusal(fn: () => unknown): RostersyncError {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(RostersyncError)
    return error as RostersyncError
  }
  return expect.fail('expected a refusal')
}

/** A server-like document holding u1 at epoch `epoch`. */
function serverDoc(epoch = 0): Y.Doc {
  const doc = new Y.Doc()
  doc.getMap('u:server').set('u1', { e: epoch, t: NOW * 1000, f: { name: 'Ann' } })
  return doc
}

describe('stamps', () => {
  it.each([
    ['2^53', 2 ** 53],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['NaN', Number.NaN],
    ['-1', -1],
    ['a fraction', 1.5],
    ['just past the skew bound', (NOW + limits.stampSkewMsMax + 1) * 1000],
  ])('a device stamp of %s is refused INVALID_RECORD', (_why, stamp) => {
    const error = refusal(() =>
      checkUpdate(serverDoc(), setUpdate('D1', 'u1', entry({ s: { name: stamp } })), atServer),
    )
    expect(error.code).toBe('INVALID_RECORD')
  })

  it('a stamp up to the skew bound ahead of the receiver, or any time before, passes', () => {
    for (const stamp of [0, NOW * 1000, (NOW + limits.stampSkewMsMax) * 1000 + 999]) {
      checkUpdate(serverDoc(), setUpdate('D1', 'u1', entry({ s: { name: stamp } })), atServer)
    }
  })

  it('server and policy stamps relayed over the LAN are bounded too', () => {
    const device = serverDoc()
    const lan: CheckOptions = {
      mayWrite: () => true,
      schema,
      now: NOW,
      serverClients: serverClientsOf(device),
    }
    const serverClient = device.clientID
    const late = (NOW + 2 * limits.stampSkewMsMax) * 1000
    for (const [root, key, value] of [
      ['u:server', 'u2', { e: 0, t: late }],
      ['m:server', 'name', { p: 'shared', t: late }],
    ] as const) {
      const update = encodeForged([
        {
          kind: 'item',
          client: serverClient,
          clock: Y.getState(device.store, serverClient),
          parent: { root },
          key,
          content: { any: [value] },
        },
      ])
      expect(refusal(() => checkUpdate(device, update, lan)).code).toBe('INVALID_RECORD')
    }
  })

  it('stamps a device sends never move where the server judges stamps from (no ratchet)', async () => {
    // The server believes stamps up to stampSkewMsMax past its clock, or
    // past the latest time it stamped at itself (its clock set back): a
    // device's stamps, taken into the server's HLC, must not push that bound.
    const clock = new ManualClock(NOW)
    const server = await createServer({ store: memoryStore(), listen: false, open: true, clock })
    try {
      const near = (NOW + limits.stampSkewMsMax - 60_000) * 1000
      expect(
        await sendToServer(server, 'D1', setUpdate('D1', 'u1', entry({ s: { name: near } }), 1)),
      ).toBe('accepted')
      // The server writes after it (its HLC past the device's stamp).
      await server.users.put({ id: 'u2', name: 'Bob' })
      expect(server.replica.hlcPeek()).toBeGreaterThan(near)
      const further = (NOW + 2 * limits.stampSkewMsMax - 120_000) * 1000
      expect(
        await sendToServer(server, 'D2', setUpdate('D2', 'u1', entry({ s: { name: further } }), 2)),
      ).toBe('INVALID_RECORD')
    } finally {
      await server.close()
    }
  })

  it('a stamp of 2^53 sent to the server leaves its clock where it was', async () => {
    const server = await createServer({ store: memoryStore(), listen: false, open: true })
    try {
      const outcome = await sendToServer(
        server,
        'D1',
        setUpdate('D1', 'u1', entry({ s: { name: 2 ** 53 }, e: 0 })),
      )
      expect(outcome).toBe('INVALID_RECORD')
      expect(server.replica.hlcPeek()).toBeLessThan(2 ** 52)
      await server.users.put({ id: 'u2', name: 'Bob' })
      expect(server.replica.hlcPeek()).toBeLessThan((Date.now() + 60_000) * 1000)
    } finally {
      await server.close()
    }
  })
})

describe('epochs', () => {
  it.each([
    ['one past the server', 3],
    ['1e9', 1e9],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['-1', -1],
    ['a fraction', 0.5],
  ])('a device epoch of %s is refused FORBIDDEN_WRITE', (_why, e) => {
    const error = refusal(() =>
      checkUpdate(serverDoc(2), setUpdate('D1', 'u1', entry({ e })), atServer),
    )
    expect(error.code).toBe('FORBIDDEN_WRITE')
  })

  it("an epoch up to the server's passes, and a user the server never had is at epoch 0", () => {
    for (const e of [0, 1, 2])
      checkUpdate(serverDoc(2), setUpdate('D1', 'u1', entry({ e })), atServer)
    checkUpdate(serverDoc(2), setUpdate('D1', 'u9', entry()), atServer)
    expect(() =>
      checkUpdate(serverDoc(2), setUpdate('D1', 'u9', entry({ e: 1 })), atServer),
    ).toThrow()
  })

  it("a relayed update that brings the server's newer epoch may carry a device entry of it", () => {
    const server = serverDoc(0)
    const device = new Y.Doc()
    Y.applyUpdate(device, Y.encodeStateAsUpdate(server))
    const relay = new Y.Doc()
    Y.applyUpdate(relay, Y.encodeStateAsUpdate(server))
    const before = Y.encodeStateVector(relay)
    // The server deletes u1 (epoch 1); the relaying device then enrols it again.
    server.getMap('u:server').set('u1', { e: 1, t: NOW * 1000 + 1, d: 1 })
    Y.applyUpdate(relay, Y.encodeStateAsUpdate(server, before))
    relay.getMap('u:D2').set('u1', entry({ e: 1 }))
    const step2 = Y.encodeStateAsUpdate(relay, Y.encodeStateVector(device))
    checkUpdate(device, step2, {
      mayWrite: () => true,
      schema,
      now: NOW,
      serverClients: serverClientsOf(device),
    })
  })
})

/** `value` with an own key `__proto__` holding `hidden` (as JSON.parse makes it). */
function withProto(value: object, hidden: object): object {
  return Object.defineProperty({ ...value }, '__proto__', {
    value: hidden,
    enumerable: true,
    configurable: true,
    writable: true,
  })
}

describe('entry shape', () => {
  it.each([
    ['an extra key', entry({ pad: 'x'.repeat(1000) })],
    ['no stamps', { e: 0, f: { name: 'Ann' } }],
    ['stamps that are not numbers', entry({ s: { name: 'late' } })],
    ['fields that are not an object', entry({ f: ['Ann'] })],
    ['a stamp of a field the site does not have', entry({ s: { name: NOW * 1000, nickname: 1 } })],
    ['a field the site does not have', entry({ f: { nickname: 'A' }, s: {} })],
    ['a value that is not an entry', 'Ann'],
    // Decoded, a `__proto__` key is the object's prototype: a stamp hidden
    // there beat every later fill, and broke the server's entry (a probe).
    ['a stamp under a "__proto__" key', entry({ s: withProto({}, { name: 2 ** 52 }) })],
    ['a field under a "__proto__" key', entry({ f: withProto({}, { name: 'M' }) })],
    [
      'a card with a "__proto__" key',
      entry({
        f: { cards: [withProto({ type: 'csn', value: '04A1' }, { pin: '1234' })] },
        s: { cards: NOW * 1000 },
      }),
    ],
  ])('a device entry with %s is refused INVALID_RECORD', (_why, value) => {
    expect(
      refusal(() => checkUpdate(serverDoc(), setUpdate('D1', 'u1', value), atServer)).code,
    ).toBe('INVALID_RECORD')
  })

  it('ten updates with extra keys store nothing on the server', async () => {
    const server = await createServer({ store: memoryStore(), listen: false, open: true })
    try {
      const before = Y.encodeStateAsUpdate(server.replica.doc).byteLength
      for (let i = 0; i < 10; i++) {
        const update = setUpdate('D1', `u${i}`, entry({ pad: 'x'.repeat(64 * 1024) }), 5000 + i)
        expect(await sendToServer(server, 'D1', update)).toBe('INVALID_RECORD')
      }
      expect(Y.encodeStateAsUpdate(server.replica.doc).byteLength).toBe(before)
    } finally {
      await server.close()
    }
  })

  it.each([
    ['longer than userIdCharsMax', 'u'.repeat(limits.userIdCharsMax + 1)],
    ['empty', ''],
    ['with a control character', 'u\u00001'],
  ])('a user id %s is refused', (_why, key) => {
    expect(() => checkUpdate(serverDoc(), setUpdate('D1', key, entry()), atServer)).toThrow(
      RostersyncError,
    )
  })

  it('a root named after no writer is refused FORBIDDEN_WRITE', () => {
    for (const writer of ['d'.repeat(limits.writerIdCharsMax + 1), 'a b', '-x']) {
      expect(
        refusal(() => checkUpdate(serverDoc(), setUpdate(writer, 'u1', entry()), atServer)).code,
      ).toBe('FORBIDDEN_WRITE')
    }
  })
})

describe('one writer per Yjs client', () => {
  it("an item under the server's clientID, in a device's part, is refused", () => {
    const doc = serverDoc()
    // The forged item sits on the server's next clock.
    const next = encodeForged([
      {
        kind: 'item',
        client: doc.clientID,
        clock: Y.getState(doc.store, doc.clientID),
        parent: { root: 'u:D1' },
        key: 'u1',
        content: { any: [entry()] },
      },
    ])
    expect(refusal(() => checkUpdate(doc, next, atServer)).code).toBe('FORBIDDEN_WRITE')
    // Ids the receiver already holds are a no-op for Yjs, whatever they say.
    checkUpdate(doc, setUpdate('D1', 'u1', entry(), doc.clientID), atServer)
  })

  it("a device's items under another device's clientID are refused, and that device's own later writes still arrive", async () => {
    // Keyless (plain) writers, as unmodified y-websocket clients: signing
    // devices' clientIDs are derived from their keys and cannot be squatted
    // at all (test/signed-writes.test.ts).
    const server = await createServer({
      store: memoryStore(),
      listen: false,
      open: true,
      clock: new ManualClock(NOW),
    })
    try {
      const d1 = new Y.Doc()
      d1.clientID = 424_242
      d1.getMap('u:D1').set('u1', entry())
      expect(await sendToServer(server, 'D1', Y.encodeStateAsUpdate(d1))).toBe('accepted')
      const next = Y.getState(server.replica.doc.store, d1.clientID)
      // D2 claims D1's next clock for an entry of its own.
      const squat = encodeForged([
        {
          kind: 'item',
          client: d1.clientID,
          clock: next,
          parent: { root: 'u:D2' },
          key: 'u7',
          content: { any: [entry()] },
        },
      ])
      expect(await sendToServer(server, 'D2', squat)).toBe('FORBIDDEN_WRITE')
      // D1's write on that clock still reaches the server.
      const before = Y.encodeStateVector(d1)
      d1.getMap('u:D1').set(
        'u1',
        entry({
          f: { name: 'Ann', email: 'ann@example.com' },
          s: { name: NOW * 1000, email: NOW * 1000 },
        }),
      )
      const own = Y.encodeStateAsUpdate(d1, before)
      expect(await sendToServer(server, 'D1', own)).toBe('accepted')
      expect(server.users.get('u1')?.email).toBe('ann@example.com')
    } finally {
      await server.close()
    }
  })

  it("a writer's new clientID replacing its old one's entry passes, whatever order Yjs writes them in", () => {
    for (const [oldClient, newClient] of [
      [1000, 2000],
      [2000, 1000],
    ] as const) {
      const device = new Y.Doc()
      device.clientID = oldClient
      device.getMap('u:D1').set('u1', entry())
      device.clientID = newClient
      device.getMap('u:D1').set('u1', entry({ f: { name: 'Anne' } }))
      const summary = checkUpdate(new Y.Doc(), Y.encodeStateAsUpdate(device), atServer)
      expect(summary.items).toBe(2)
    }
  })
})

describe("finding an item's place", () => {
  it('follows origins that come later in the update, however long the chain', () => {
    // Each item's origin is the next one's id; only the last names its root.
    const chain = 5_000
    const structs = Array.from({ length: chain }, (_, i) => {
      const client = 100_000 + i
      const last = i === chain - 1
      return {
        kind: 'item' as const,
        client,
        clock: 0,
        ...(last ? { parent: { root: 'u:D1' }, key: 'u1' } : { origin: Y.createID(client + 1, 0) }),
        content: { deleted: 1 },
      }
    })
    expect(checkUpdate(new Y.Doc(), encodeForged(structs), atServer).items).toBe(chain)
  })

  it('refuses items whose origins form a cycle', () => {
    const update = encodeForged([
      { kind: 'item', client: 11, clock: 0, origin: Y.createID(12, 0), content: { deleted: 1 } },
      { kind: 'item', client: 12, clock: 0, origin: Y.createID(11, 0), content: { deleted: 1 } },
    ])
    expect(refusal(() => checkUpdate(new Y.Doc(), update, atServer)).code).toBe('FORBIDDEN_WRITE')
  })
})

describe('GC and skip structs', () => {
  it('one update of GC structs for 50,000 unknown clientIDs is refused, and the state vector stays small', async () => {
    const server = await createServer({ store: memoryStore(), listen: false, open: true })
    try {
      await server.users.put({ id: 'u1', name: 'Ann' })
      const vector = Y.encodeStateVector(server.replica.doc)
      const gc = encodeForged(
        Array.from({ length: 50_000 }, (_, i) => ({
          kind: 'gc' as const,
          client: 10_000 + i,
          clock: 0,
          length: 1,
        })),
      )
      expect(await sendToServer(server, 'D1', gc)).not.toBe('accepted')
      expect(Y.encodeStateVector(server.replica.doc)).toEqual(vector)
    } finally {
      await server.close()
    }
  })

  it('a deleted item 2^40 long in its own part is refused (it counted as history and made a new generation due)', () => {
    const deleted = (length: number): Uint8Array =>
      encodeForged([
        {
          kind: 'item',
          client: 4242,
          clock: 0,
          parent: { root: 'u:D1' },
          key: 'k',
          content: { deleted: length },
        },
      ])
    const mine = atServer
    expect(refusal(() => checkUpdate(new Y.Doc(), deleted(2 ** 40), mine)).code).toBe(
      'MESSAGE_TOO_LARGE',
    )
    expect(() => checkUpdate(new Y.Doc(), deleted(limits.updateStructsMax), mine)).not.toThrow()
  })

  it("a GC range on the server's next clocks, relayed over the LAN, is refused", () => {
    const device = serverDoc()
    const client = device.clientID
    const gc = encodeForged([
      { kind: 'gc', client, clock: Y.getState(device.store, client), length: 3 },
    ])
    const lan: CheckOptions = {
      mayWrite: () => true,
      schema,
      now: NOW,
      serverClients: serverClientsOf(device),
    }
    expect(refusal(() => checkUpdate(device, gc, lan)).code).toBe('FORBIDDEN_WRITE')
  })

  it('replaced and deleted entries travel as items, never GC structs, and a fresh receiver takes them', () => {
    const device = new Y.Doc()
    const part = device.getMap('u:D1')
    for (let i = 0; i < 200; i++) {
      part.set(`u${i % 7}`, entry({ f: { name: `N${i}` } }))
      if (i % 5 === 0) part.delete(`u${i % 7}`)
    }
    const update = Y.encodeStateAsUpdate(device)
    expect(Y.decodeUpdate(update).structs.every((s) => s instanceof Y.Item)).toBe(true)
    const receiver = new Y.Doc()
    checkUpdate(receiver, update, atServer)
    Y.applyUpdate(receiver, update)
    // And again, as a step 2 from a peer that holds more of it.
    part.set('u1', entry({ f: { name: 'Last' } }))
    checkUpdate(receiver, Y.encodeStateAsUpdate(device, Y.encodeStateVector(receiver)), atServer)
  })

  it('a skip over ids the receiver holds passes; past them it is refused', () => {
    const writer = new Y.Doc()
    const updates: Uint8Array[] = []
    writer.on('update', (u: Uint8Array) => updates.push(u))
    for (let i = 0; i < 3; i++) writer.getMap('u:D1').set(`u${i}`, entry())
    const [first, second, third] = updates as [Uint8Array, Uint8Array, Uint8Array]
    const merged = Y.mergeUpdates([first, third])
    expect(Y.decodeUpdate(merged).structs.some((s) => s instanceof Y.Skip)).toBe(true)
    const holdsTwo = new Y.Doc()
    Y.applyUpdate(holdsTwo, first)
    Y.applyUpdate(holdsTwo, second)
    checkUpdate(holdsTwo, merged, atServer)
    const holdsOne = new Y.Doc()
    Y.applyUpdate(holdsOne, first)
    expect(refusal(() => checkUpdate(holdsOne, merged, atServer)).code).toBe('FORBIDDEN_WRITE')
  })
})

describe('deletes', () => {
  it("a range past the ids the receiver holds is refused: it would delete a writer's next writes", () => {
    const doc = new Y.Doc()
    doc.getMap('u:D1').set('u1', entry())
    const client = doc.clientID
    const state = Y.getState(doc.store, client)
    // Starts on an entry the sender may delete, runs on over ids not sent yet.
    const ahead = encodeForged([], [[client, state - 1, 10]])
    expect(refusal(() => checkUpdate(doc, ahead, atServer)).code).toBe('FORBIDDEN_WRITE')
    checkUpdate(doc, encodeForged([], [[client, state - 1, 1]]), atServer)
  })
})

describe('refusals quote a clipped excerpt of the input', () => {
  it('clip() keeps short text and cuts long text, never inside a surrogate pair', () => {
    expect(clip('short')).toBe('short')
    const long = clip('x'.repeat(2_000_000))
    expect(long.length).toBeLessThan(limits.peerInputExcerptCharsMax + 40)
    expect(long).toContain('more characters')
    expect(clip('a😀b', 2)).toBe('a… (3 more characters)')
  })

  it('a 2 MB root name, user id or field is not echoed into the refusal or the event log', async () => {
    const huge = 'x'.repeat(2_000_000)
    const server = await createServer({ store: memoryStore(), listen: false, open: true })
    try {
      for (const update of [
        encodeForged([
          {
            kind: 'item',
            client: 7,
            clock: 0,
            parent: { root: `q:${huge}` },
            key: 'u1',
            content: { any: [entry()] },
          },
        ]),
        setUpdate('D1', huge, entry()),
        setUpdate('D1', 'u1', entry({ f: { [huge]: 1 } })),
        setUpdate('D1', 'u1', entry({ e: huge })),
      ]) {
        const message = await sendToServer(server, 'D1', update, true)
        expect(message.length).toBeLessThan(2_000)
      }
      for (const event of server.events.query({ type: 'write-refused' })) {
        expect(JSON.stringify(event).length).toBeLessThan(2_000)
      }
    } finally {
      await server.close()
    }
  })
})

const closers: Array<() => void> = []
afterEach(() => {
  for (const close of closers.splice(0)) close()
})

/**
 * Sends `update` to the server as device `deviceId` (an in-memory link into
 * its sync endpoint), then a step 1: returns the refusal's code (or its
 * message, with `wantMessage`), or `accepted` once the step 1 is answered.
 */
function sendToServer(
  server: ServerPeer,
  deviceId: string,
  update: Uint8Array,
  wantMessage = false,
): Promise<string> {
  const [mine, theirs] = memoryPair('server', deviceId)
  server.accept(theirs, `/roster?device=${deviceId}`)
  closers.push(() => mine.close())
  const send = (message: Message): void => mine.send(encodeMessage(message))
  return new Promise<string>((resolve) => {
    mine.onMessage((bytes) => {
      const message = decodeMessage(bytes)
      if (message.type === 'error') resolve(wantMessage ? message.message : message.code)
      if (message.type === 'sync-step2') resolve('accepted')
    })
    mine.onClose(({ reason }) => resolve(reason))
    send({ type: 'sync-update', update })
    send({ type: 'sync-step1', stateVector: Y.encodeStateVector(server.replica.doc) })
  })
}
