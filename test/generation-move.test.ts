/**
 * A device's move to its server's generation (peers/device-sync/generation-move.ts)
 * on a real replica (LevelDB's in-memory store): the server's hello and the
 * sync round both ask for the move at once (found by the simulator, seeds
 * 5215 and 5248). Each call must settle with one staged move; before the
 * fix the second queued a second staged wipe behind the hold of own writes
 * the first started, and its round waited forever (no sync succeeded again,
 * every own write of the device stayed queued).
 */
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { FIRST_GENERATION, signGeneration } from '../core/generation-statement.js'
import { CloseCode } from '../core/protocol.js'
import { asUserId, asWriterId } from '../core/ids.js'
import { RecordSchema } from '../core/schema.js'
import { keyPairFromSeed } from '../core/signing.js'
import { deviceWrite } from '../core/writes.js'
import { GenerationMove, deviceGeneration } from '../peers/device-sync/generation-move.js'
import { EnvelopeLog } from '../peers/envelope-log.js'
import { DeviceSigning } from '../peers/signed-link.js'
import { memoryPair } from '../transports/memory-transport.js'
import { Replica, WipeSkippedError } from '../peers/replica.js'
import { memoryStore } from '../storage/level-store.js'

const D1 = asWriterId('d1')
const U1 = asUserId('u1')
const KEY = keyPairFromSeed(new Uint8Array(32).fill(7))
const NEXT = signGeneration(KEY, { site: 'site', n: 1, id: 'generation-one', at: 1_000 })

async function openWithOwnWrite(store = memoryStore()): Promise<Replica> {
  let next = 100
  const replica = await Replica.open({
    writerId: D1,
    store,
    clock: { now: () => 1_000, setTimeout: () => undefined, clearTimeout: () => undefined },
    schema: new RecordSchema(),
    randomUint32: () => next++,
  })
  await replica.write((ctx) =>
    ctx.setOwnEntry(U1, deviceWrite(undefined, 0, new Map([['name', 'Ann']]), 10)),
  )
  return replica
}

/** Settles with the promise's outcome, or 'pending' once the replica's queue is idle. */
async function settleOrIdle<T>(replica: Replica, promise: Promise<T>): Promise<T | 'pending'> {
  let settled = false
  const watched = promise.finally(() => {
    settled = true
  })
  for (let i = 0; i < 50 && !settled; i++) await new Promise((resolve) => setImmediate(resolve))
  return settled ? watched : 'pending'
}

/** The promise's outcome, or 'hung' if it has not settled within `ms` (a bound, not a timing). */
async function withinOrHung<T>(promise: Promise<T>, ms = 5_000): Promise<T | 'hung'> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const hung = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), ms)))
  try {
    return await Promise.race([promise, hung])
  } finally {
    clearTimeout(timer)
  }
}

describe('GenerationMove', () => {
  it('a hello and a round asking for the same move at once stage it once, and both go on', async () => {
    const replica = await openWithOwnWrite()
    try {
      const move = new GenerationMove(replica)
      // The hello's learn and the round's ensure, in the same tick.
      const fromHello = move.learn(NEXT)
      const fromRound = move.ensure()
      expect(await settleOrIdle(replica, fromHello)).toBe(true)
      expect(await settleOrIdle(replica, fromRound)).toBe(true)
      expect(move.pending).toBe(true)
      expect(replica.movingGeneration).toBe(true)
      // The round completes the move: the own entry is carried, and an own
      // write made meanwhile (held during the move) lands after it.
      const held = replica.write((ctx) =>
        ctx.setOwnEntry(asUserId('u2'), deviceWrite(undefined, 0, new Map([['name', 'Bo']]), 20)),
      )
      expect(await settleOrIdle(replica, move.commit([]))).toEqual(NEXT)
      await held
      expect(deviceGeneration(replica)).toEqual({ n: 1, id: 'generation-one' })
      expect(replica.movingGeneration).toBe(false)
      expect(replica.view(U1)?.name).toBe('Ann')
      expect(replica.view(asUserId('u2'))?.name).toBe('Bo')
    } finally {
      await replica.close()
    }
  })

  it("stores the move's event in the batch that commits the move (a crash cannot lose one without the other)", async () => {
    // A probe: a device killed right after its move committed had moved,
    // and no generation-moved event said so (it was written after).
    const store = memoryStore()
    const batches: string[][] = []
    const batch = store.batch.bind(store)
    store.batch = (ops) => {
      batches.push(ops.map((op) => op.key))
      return batch(ops)
    }
    const replica = await openWithOwnWrite(store)
    try {
      const move = new GenerationMove(replica)
      expect(await move.learn(NEXT)).toBe(true)
      batches.length = 0
      await move.commit([], false, move.stagedMove, (to, relayed) => ({
        type: 'generation-moved',
        message: `to ${to.n}, ${relayed} relayed`,
      }))
      const committing = batches.find((keys) => keys.some((k) => k.endsWith('sync/generation')))
      expect(committing).toBeDefined()
      expect(committing?.some((k) => k.startsWith('e/'))).toBe(true)
      expect(replica.events.query({ type: 'generation-moved' })).toMatchObject([
        { message: 'to 1, 0 relayed' },
      ])
    } finally {
      await replica.close()
    }
  })

  it('an abandon asked while a hello stages the move undoes it, and a round can move again', async () => {
    const replica = await openWithOwnWrite()
    try {
      const move = new GenerationMove(replica)
      const fromHello = move.learn(NEXT)
      const abandoned = move.abandon()
      expect(await settleOrIdle(replica, fromHello)).toBe(true)
      expect(await settleOrIdle(replica, abandoned)).toBeUndefined()
      expect(replica.movingGeneration).toBe(false)
      expect(deviceGeneration(replica)).toEqual(FIRST_GENERATION)
      expect(replica.view(U1)?.name).toBe('Ann')
      expect(await settleOrIdle(replica, move.ensure())).toBe(true)
      expect(replica.movingGeneration).toBe(true)
    } finally {
      await replica.close()
    }
  })

  it('a move staged again during its fetch (a third generation) is not committed unfetched', async () => {
    const replica = await openWithOwnWrite()
    try {
      const move = new GenerationMove(replica)
      expect(await settleOrIdle(replica, move.learn(NEXT))).toBe(true)
      const fetchedFor = move.stagedMove
      // During the fetch a hello names a third generation: abandoned, staged again.
      const third = signGeneration(KEY, { site: 'site', n: 2, id: 'generation-two', at: 2_000 })
      expect(await settleOrIdle(replica, move.learn(third))).toBe(true)
      await expect(move.commit([], false, fetchedFor)).rejects.toThrow(/staged again/)
      expect(deviceGeneration(replica)).toEqual(FIRST_GENERATION)
      expect(replica.movingGeneration).toBe(true)
      // The staged move itself still commits once fetched for.
      expect(await settleOrIdle(replica, move.commit([], false, move.stagedMove))).toEqual(third)
      expect(replica.view(U1)?.name).toBe('Ann')
    } finally {
      await replica.close()
    }
  })

  it("a full sync's staged wipe queued while a move is staged is refused, not left to hang", async () => {
    // The full sync's round (refetch) queues its staged wipe after a hello
    // staged a move: before the fix the wipe waited behind the move's hold
    // of own writes, which only the move's round could end, and that round
    // waited for the full sync's round: the device never synced again.
    const replica = await openWithOwnWrite()
    try {
      const move = new GenerationMove(replica)
      expect(await settleOrIdle(replica, move.learn(NEXT))).toBe(true)
      const fullSyncWipe = replica
        .wipe({ local: false, deletes: true, staged: true })
        .then(() => 'wiped' as const)
        .catch((error: unknown) => error)
      const outcome = await withinOrHung(fullSyncWipe)
      expect(outcome).toBeInstanceOf(WipeSkippedError)
      // The move is untouched and completes.
      expect(replica.movingGeneration).toBe(true)
      expect(await withinOrHung(move.commit([], false, move.stagedMove))).toEqual(NEXT)
      expect(replica.view(U1)?.name).toBe('Ann')
      // On the new generation now: no second move.
      expect(await settleOrIdle(replica, move.learn(NEXT))).toBe(false)
    } finally {
      await replica.close()
    }
  })

  it("remote updates queued behind a move's staging wipe, or its undoing, are refused, not applied", async () => {
    const replica = await openWithOwnWrite()
    try {
      /** A device part's update under its own clientID (what a LAN peer relays). */
      const partUpdate = (client: number, user: string): Uint8Array => {
        const doc = new Y.Doc()
        doc.clientID = client
        doc.getMap('u:d2').set(user, deviceWrite(undefined, 0, new Map([['name', user]]), 30))
        return Y.encodeStateAsUpdate(doc)
      }
      const held = (client: number): number => Y.getState(replica.doc.store, client)
      // The hello stages the move; LAN updates of the old generation come in
      // the same tick, queued behind its wipe.
      const staging = replica.wipe({ local: false, staged: true, generation: true })
      const lan = [replica.applyRemote(partUpdate(501, 'x1'), 'lan-1')]
      lan.push(replica.applyRemote(partUpdate(502, 'x2'), 'lan-2'))
      await staging
      for (const refused of lan)
        await expect(refused).rejects.toMatchObject({ code: 'GENERATION_CHANGED' })
      expect(held(501) + held(502)).toBe(0)
      const logged = (): number =>
        replica.events
          .query({ type: 'write-refused' })
          .filter((event) => event.code === 'GENERATION_CHANGED').length
      expect(logged()).toBe(1)
      // What comes after the staging (the new generation's fetch) applies.
      await replica.applyRemote(partUpdate(503, 'x3'), 'server')
      expect(held(503)).toBeGreaterThan(0)
      // Queued for the staged document, then the move is undone first (its
      // end goes ahead of what waits): refused, not applied to the old one.
      const fetched = replica.applyRemote(partUpdate(504, 'x4'), 'server')
      await replica.abandonWipe()
      await expect(fetched).rejects.toMatchObject({ code: 'GENERATION_CHANGED' })
      expect(held(504) + held(503)).toBe(0)
      expect(replica.view(U1)?.name).toBe('Ann')
      expect(logged()).toBe(2)
    } finally {
      await replica.close()
    }
  })

  it('a move undone after its round failed closes the server link that called for it (4412)', async () => {
    const replica = await openWithOwnWrite()
    try {
      const move = new GenerationMove(replica)
      const [device, server] = memoryPair('device', 'server')
      const closes: number[] = []
      server.onClose(({ code }) => closes.push(code))
      // The hello over this link stages the move; the round fails (a storage
      // failure at commit, say) with the link still open.
      expect(await settleOrIdle(replica, move.learnOn(NEXT, device))).toBe(true)
      await move.abandon()
      for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve))
      expect(device.open).toBe(false)
      expect(closes).toEqual([CloseCode.generationChanged])
      expect(deviceGeneration(replica)).toEqual(FIRST_GENERATION)
      // A round that fails with nothing staged leaves its link alone.
      const [other] = memoryPair('device-2', 'server-2')
      expect(await settleOrIdle(replica, move.learnOn(undefined, other))).toBe(false)
      await move.abandon()
      expect(other.open).toBe(true)
      other.close()
    } finally {
      await replica.close()
    }
  })

  // Found by the simulator (seed 2): a device that only ever heard LAN
  // relays building on items it never got holds no client, but keeps them
  // pending in Yjs (and logged for relay). It counted as holding
  // nothing, only noted the server's new generation, and kept them: a
  // struct built on the previous base's clientID waited for ever, on it
  // and on every peer it offered the logged envelope to.
  it('a device holding only pending old-generation structs moves, and its relay log is cleared', async () => {
    let next = 100
    const store = memoryStore()
    const replica = await Replica.open({
      writerId: D1,
      store,
      clock: { now: () => 1_000, setTimeout: () => undefined, clearTimeout: () => undefined },
      schema: new RecordSchema(),
      randomUint32: () => next++,
    })
    try {
      // Client 700 (the old generation's base) writes an item; client 701
      // (a device) writes after it: its item's left origin is 700:0.
      const base = new Y.Doc()
      base.clientID = 700
      base.getArray('old').push(['a'])
      const writer = new Y.Doc()
      writer.clientID = 701
      Y.applyUpdate(writer, Y.encodeStateAsUpdate(base))
      writer.getArray('old').push(['b'])
      const relayed = Y.encodeStateAsUpdate(writer, Y.encodeStateVector(base))
      await replica.applyRemote(relayed, 'lan-1')
      expect(replica.doc.store.clients.size).toBe(0)
      expect(replica.doc.store.pendingStructs).not.toBeNull()
      // What the device logged for relay: the envelope log and the replica
      // it clears on (DeviceSigning).
      const log = await EnvelopeLog.open(store)
      new DeviceSigning({
        identity: undefined as never,
        replica,
        writerId: D1,
        log,
        check: () => undefined,
        clock: { now: () => 1_000, setTimeout: () => undefined, clearTimeout: () => undefined },
      })
      log.add(new Uint8Array([1]), { writer: 'd2', update: relayed }, new Map([[701, 1]]))
      expect(log.beyond(new Map())).toHaveLength(1)

      const move = new GenerationMove(replica)
      expect(await settleOrIdle(replica, move.learn(NEXT))).toBe(true)
      expect(replica.movingGeneration).toBe(true)
      expect(replica.doc.store.pendingStructs).toBeNull()
      expect(log.beyond(new Map())).toHaveLength(0)
      // The fetch brings the new generation; the commit stores it alone.
      await replica.applyRemote(Y.encodeStateAsUpdate(new Y.Doc()), 'server')
      await move.commit([])
      expect(deviceGeneration(replica).n).toBe(1)
      expect(replica.doc.store.pendingStructs).toBeNull()
      expect(Y.getState(replica.doc.store, 701)).toBe(0)
      // Nor is the logged envelope in the store any more.
      await log.flushed()
      expect((await EnvelopeLog.open(store)).beyond(new Map())).toHaveLength(0)
    } finally {
      await replica.close()
    }
  })

  it('a device that holds nothing at all only notes the generation, and its relay log is cleared', async () => {
    const store = memoryStore()
    const replica = await Replica.open({
      writerId: D1,
      store,
      clock: { now: () => 1_000, setTimeout: () => undefined, clearTimeout: () => undefined },
      schema: new RecordSchema(),
      randomUint32: () => 100,
    })
    try {
      const log = await EnvelopeLog.open(store)
      new DeviceSigning({
        identity: undefined as never,
        replica,
        writerId: D1,
        log,
        check: () => undefined,
        clock: { now: () => 1_000, setTimeout: () => undefined, clearTimeout: () => undefined },
      })
      // An envelope logged while held back (a gap before it): in no document.
      const other = new Y.Doc()
      other.clientID = 702
      other.getMap('u:d2').set('u9', deviceWrite(undefined, 0, new Map([['name', 'C']]), 10))
      log.add(
        new Uint8Array([2]),
        { writer: 'd2', update: Y.encodeStateAsUpdate(other) },
        new Map([[702, 1]]),
      )
      const move = new GenerationMove(replica)
      expect(await settleOrIdle(replica, move.learn(NEXT))).toBe(false)
      expect(replica.movingGeneration).toBe(false)
      expect(deviceGeneration(replica).n).toBe(1)
      expect(log.beyond(new Map())).toHaveLength(0)
    } finally {
      await replica.close()
    }
  })
})
