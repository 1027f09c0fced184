/**
 * Answers in parts over real WebSockets on 127.0.0.1 (PROTOCOL.md,
 * "Answers in chunks"). The server's part size is lowered to 32 KiB and
 * the receivers' message bound to 48 KiB, so that an aged roster of a few
 * hundred KB (overwrites under several clientIDs, deletes) stands in for a
 * million users against the 128 MiB bound: a fresh device and an
 * unmodified y-websocket client get all of it, in parts of at most the
 * bound, with nothing held back; the whole answer as one message would be
 * refused by their sockets (1009) and retried forever. The server encodes
 * the full answer once for every fresh receiver until the roster changes.
 */
import * as encoding from 'lib0/encoding'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { limits } from '../core/limits.js'
import type { Transport } from '../core/transport.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { AnswerCache, type EncodedParts } from '../peers/replica/answer-cache.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { wsConnect } from '../transports/ws-transport.js'
import { eventually } from './helpers/eventually.js'
import { wrapConnection } from './helpers/wrapped-connection.js'

const SITE_KEY = 'chunked-answers-site-key'
const CHUNK_BYTES_MAX = 32 * 1024
/** The receivers' message bound in this test: more than a part, far less than the roster. */
const MESSAGE_BYTES_MAX = 48 * 1024
const USERS = 1_500

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i)
const closers: Array<() => Promise<void> | void> = []
let server: ServerPeer

/** A transport to the server whose sockets refuse messages over MESSAGE_BYTES_MAX, recording sizes. */
function recordingTransport(sizes: number[], probe?: (connectionId: string) => void): Transport {
  return {
    async connect(url) {
      const conn = await wsConnect(url, { messageBytesMax: MESSAGE_BYTES_MAX })
      return wrapConnection(conn, {
        onMessage: (handler) =>
          conn.onMessage((message) => {
            probe?.(conn.id)
            sizes.push(message.byteLength)
            handler(message)
          }),
      })
    },
    close: () => Promise.resolve(),
  }
}

/**
 * A device; with `sizes`, its server link records the size of every message
 * and, as each arrives, whether anything the link sent before is held back
 * (`heldBack`, counts) or pending in Yjs.
 */
async function device(id: string, sizes?: number[], heldBack?: number[]): Promise<DevicePeer> {
  const made: { peer?: DevicePeer } = {}
  const probe = (connectionId: string): void => {
    const peer = made.peer
    if (peer === undefined) return
    const pending = peer.replica.doc.store.pendingStructs === null ? 0 : 1
    heldBack?.push(peer.replica.heldBackFrom(connectionId) + pending)
  }
  const d = await createDevice({
    id,
    store: memoryStore(),
    server: server.url,
    siteKey: SITE_KEY,
    ...(sizes === undefined ? {} : { serverTransport: recordingTransport(sizes, probe) }),
  })
  made.peer = d
  closers.push(() => d.close())
  return d
}

/** An unmodified y-websocket client whose socket refuses messages over MESSAGE_BYTES_MAX. */
function plainClient(id: string, sizes: number[]): { doc: Y.Doc; provider: WebsocketProvider } {
  class SmallSocket extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols, { maxPayload: MESSAGE_BYTES_MAX })
      this.on('message', (data: Buffer) => sizes.push(data.byteLength))
    }
  }
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(server.url, 'roster', doc, {
    WebSocketPolyfill: SmallSocket as unknown as typeof globalThis.WebSocket,
    params: { device: id, key: SITE_KEY },
    // Clients in one process would otherwise sync with each other too.
    disableBc: true,
  })
  closers.push(() => provider.destroy())
  return { doc, provider }
}

const serverEntries = (): unknown => server.replica.doc.getMap('u:server').toJSON()

beforeAll(async () => {
  server = await createServer({
    store: memoryStore(),
    siteKey: SITE_KEY,
    answerChunkBytesMax: CHUNK_BYTES_MAX,
  })
  await Promise.all(
    range(USERS).map((i) =>
      server.users.put({ id: `u${i}`, name: `User ${i}`, email: `user${i}@example.com` }),
    ),
  )
  // Age it: overwrites by the server and by devices (their clientIDs),
  // and deletes.
  for (const round of range(3))
    await Promise.all(
      range(USERS / 3).map((i) => server.users.patch(`u${i * 3 + round}`, { name: `R${round}` })),
    )
  await Promise.all(range(100).map((i) => server.users.delete(`u${i * 7}`)))
  for (const id of ['W1', 'W2']) {
    const writer = await device(id)
    await writer.sync.whenIdle()
    await Promise.all(range(200).map((i) => writer.users.put({ id: `${id}-${i}`, name: id })))
    await Promise.all(range(50).map((i) => writer.users.patch(`u${i * 14 + 1}`, { name: id })))
    await writer.sync.whenIdle()
    // A full sync gives the device a fresh clientID: its overwrites of its
    // own entries then name items of its earlier one.
    await writer.sync.full()
    await Promise.all(range(200).map((i) => writer.users.patch(`${id}-${i}`, { email: 'x@y.z' })))
    await writer.sync.whenIdle()
  }
  for (const close of closers.splice(0).reverse()) await close()
}, 120_000)
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})
afterAll(async () => {
  await server.close()
})

describe('answers in chunks', () => {
  it('a fresh device gets an aged roster several parts long, each within the bound, nothing held back', async () => {
    const whole = server.replica.encodeDiff(new Uint8Array([0])).byteLength
    expect(whole).toBeGreaterThan(4 * MESSAGE_BYTES_MAX)
    const sizes: number[] = []
    const heldBack: number[] = []
    const d = await device('F1', sizes, heldBack)
    await eventually(() => expect(d.sync.status().offlineReady).toBe(true), 60_000)
    await d.sync.whenIdle()
    expect(d.users.list()).toEqual(server.users.list())
    expect(d.replica.doc.getMap('u:server').toJSON()).toEqual(serverEntries())
    expect(d.replica.doc.store.pendingStructs).toBeNull()
    expect(d.replica.doc.store.pendingDs).toBeNull()
    expect(d.serverLink?.state).toBe('connected')
    // Every message within the bound; the answer took several.
    expect(Math.max(...sizes)).toBeLessThanOrEqual(CHUNK_BYTES_MAX)
    expect(sizes.filter((s) => s > CHUNK_BYTES_MAX / 2).length).toBeGreaterThanOrEqual(3)
    // An explicit full sync (clear, then fetch every part again) completes
    // too, and as each message arrived nothing of the earlier ones waited.
    sizes.length = 0
    heldBack.length = 0
    await d.sync.full()
    expect(d.users.list()).toEqual(server.users.list())
    expect(d.replica.doc.store.pendingStructs).toBeNull()
    expect(sizes.filter((s) => s > CHUNK_BYTES_MAX / 2).length).toBeGreaterThanOrEqual(3)
    expect(heldBack).toHaveLength(sizes.length)
    expect(heldBack.every((n) => n === 0)).toBe(true)
  }, 90_000)

  it('an unmodified y-websocket client syncs a chunked roster', async () => {
    const sizes: number[] = []
    const { doc, provider } = plainClient('Y1', sizes)
    await eventually(() => expect(provider.synced).toBe(true), 60_000)
    expect(doc.getMap('u:server').toJSON()).toEqual(serverEntries())
    expect(doc.store.pendingStructs).toBeNull()
    expect(Math.max(...sizes)).toBeLessThanOrEqual(CHUNK_BYTES_MAX)
    expect(sizes.length).toBeGreaterThanOrEqual(4)
  }, 90_000)

  it('encodes the full answer once for every fresh receiver, again after a change', async () => {
    const first = plainClient('Y2', [])
    await eventually(() => expect(first.provider.synced).toBe(true), 60_000)
    const encodes = server.replica.answers.encoded
    const second = plainClient('Y3', [])
    await eventually(() => expect(second.provider.synced).toBe(true), 60_000)
    expect(second.doc.getMap('u:server').toJSON()).toEqual(serverEntries())
    expect(server.replica.answers.encoded).toBe(encodes)
    // A change drops the kept answer: the next fresh receiver gets it.
    await server.users.put({ id: 'late', name: 'Late' })
    const third = plainClient('Y4', [])
    await eventually(() => expect(third.provider.synced).toBe(true), 60_000)
    expect(server.replica.answers.encoded).toBe(encodes + 1)
    expect(third.doc.getMap('u:server').has('late')).toBe(true)
  }, 90_000)

  it('equal state vectors encoded differently share one kept answer; variants cannot push it out', () => {
    const doc = server.replica.doc
    const vector = (entries: Array<[number, number]>, countBytes?: number[]): Uint8Array => {
      const e = encoding.createEncoder()
      if (countBytes === undefined) encoding.writeVarUint(e, entries.length)
      else for (const b of countBytes) encoding.writeUint8(e, b)
      for (const [client, clock] of entries) {
        encoding.writeVarUint(e, client)
        encoding.writeVarUint(e, clock)
      }
      return encoding.toUint8Array(e)
    }
    const held = [...Y.decodeStateVector(Y.encodeStateVector(doc))]
    const unknown = Math.max(...held.map(([c]) => c)) + 1
    const full = server.replica.answers.parts(vector([]))
    const encodes = server.replica.answers.encoded
    const sameAsEmpty = [
      vector([], [0x80, 0x00]), // the count 0, written in two bytes
      vector([[unknown, 7]]), // a client the document never saw
      vector(held.map(([c]) => [c, 0])), // every client at 0
      ...Array.from({ length: 20 }, (_, i) => vector([[unknown + i, i + 1]])),
    ]
    for (const v of sameAsEmpty) expect(server.replica.answers.parts(v)).toBe(full)
    // Half of each client's operations: the same vector in either order,
    // with a stranger in it, shares one answer too.
    const half = held.map(([c, clock]): [number, number] => [c, Math.floor(clock / 2)])
    const partial = server.replica.answers.parts(vector(half))
    expect(partial).not.toBe(full)
    expect(server.replica.answers.parts(vector([...half].reverse()))).toBe(partial)
    expect(server.replica.answers.parts(vector([...half, [unknown, 3]]))).toBe(partial)
    expect(server.replica.answers.encoded).toBe(encodes + 1)
    // And the full roster is still kept.
    expect(server.replica.answers.parts(vector([]))).toBe(full)
  })
})

describe('a signed answer', () => {
  it('is sealed and encoded once for every link: each link sends the same message bytes', async () => {
    /** The large messages the server handed each link, by device. */
    const sent = new Map<string, Uint8Array[]>()
    const viaMemory = (id: string): Transport => ({
      connect: async (url) => {
        const [mine, theirs] = memoryPair(id, 'server')
        const list: Uint8Array[] = []
        sent.set(id, list)
        const recorded = wrapConnection(theirs, {
          send: (message) => {
            if (message.byteLength > CHUNK_BYTES_MAX / 2) list.push(message)
            theirs.send(message)
          },
        })
        server.accept(recorded, url)
        return mine
      },
      close: async () => undefined,
    })
    const fresh = async (id: string): Promise<Uint8Array[]> => {
      const d = await createDevice({
        id,
        store: memoryStore(),
        server: 'ws://memory',
        serverTransport: viaMemory(id),
        siteKey: SITE_KEY,
      })
      closers.push(() => d.close())
      await d.sync.whenIdle()
      await eventually(() => expect(d.users.list().length).toBeGreaterThan(USERS / 2), 60_000)
      return sent.get(id) ?? []
    }
    const first = await fresh('M1')
    const second = await fresh('M2')
    expect(first.length).toBeGreaterThan(3)
    expect(second).toHaveLength(first.length)
    second.forEach((message, i) => expect(message).toBe(first[i]))
  }, 90_000)
})

describe('the answer cache', () => {
  /** `parts` as an encoded answer (AnswerCache.get's), bringing nothing one could resume from. */
  const encoded = (parts: Uint8Array[]): EncodedParts => ({
    parts: parts[Symbol.iterator](),
    covered: new Map(),
    cut: { requested: false },
    deletesSent: new Map(),
  })

  it('keeps at most answersCachedBytesMax (the newest answer even when larger alone)', () => {
    const cache = new AnswerCache()
    const chunk = new Uint8Array(64 * 1024 * 1024)
    const answerOf = (chunks: number): Uint8Array[] => Array.from({ length: chunks }, () => chunk)
    const each = 3 // 192 MiB per answer
    for (let i = 0; i < limits.answersCachedMax; i++)
      cache.get(`k${i}`, true, () => encoded(answerOf(each))).all()
    expect(cache.kept.bytes).toBeLessThanOrEqual(limits.answersCachedBytesMax)
    expect(cache.kept.answers).toBe(
      Math.floor(limits.answersCachedBytesMax / (each * chunk.byteLength)),
    )
    // The most recent ones are those kept.
    let encodes = 0
    cache.get(`k${limits.answersCachedMax - 1}`, true, () => {
      encodes++
      return encoded([])
    })
    expect(encodes).toBe(0)
    const huge = answerOf(limits.answersCachedBytesMax / chunk.byteLength + 1)
    const stream = cache.get('huge', true, () => encoded(huge))
    const parts = stream.all()
    expect(parts).toHaveLength(huge.length)
    parts.forEach((part, i) => expect(part).toBe(huge[i]))
    expect(cache.kept).toEqual({
      answers: 1,
      bytes: limits.answersCachedBytesMax + chunk.byteLength,
    })
    expect(cache.get('huge', true, () => encoded([]))).toBe(stream)
  })
})
