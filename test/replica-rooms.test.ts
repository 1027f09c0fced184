/**
 * The replica's rooms (peers/replica/, issue 14), each on its own with the
 * collaborators it is built with: the fan-out's timing, the write queue's
 * batching and holds, the intake's held-back updates, the document's reads
 * and index, the update log's clientID rule and compaction, the local
 * state's store ops, and the device sync's rounds. The replica as a whole
 * is tested elsewhere (persistence, crash, batch window, received bytes).
 */
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { usersRootName } from '../core/entries.js'
import { Hlc } from '../core/hlc.js'
import { asUserId, asWriterId, SERVER_ID } from '../core/ids.js'
import { limits } from '../core/limits.js'
import { RecordSchema } from '../core/schema.js'
import type { StoreOp } from '../core/store.js'
import { SyncRounds, type Round } from '../peers/device-sync/rounds.js'
import { compactionDue } from '../peers/replica/compactor.js'
import { ReplicaDocument } from '../peers/replica/document.js'
import { DurableGate } from '../peers/replica/durable-gate.js'
import { FanOut } from '../peers/replica/fan-out.js'
import { Intake, updateMeta } from '../peers/replica/intake.js'
import { LocalState } from '../peers/replica/local-state.js'
import { ReplicaStatus } from '../peers/replica/status.js'
import {
  REMOTE_ORIGIN,
  type BatchCapture,
  type Outcome,
  type PendingOp,
  type ReplicaUpdate,
  type WriteContext,
} from '../peers/replica/types.js'
import { UpdateLog } from '../peers/replica/update-log.js'
import { WriteQueue } from '../peers/replica/write-queue.js'
import { keys } from '../peers/storage-keys.js'
import { memoryStore } from '../storage/level-store.js'
import { ManualClock, settle } from './helpers/manual-clock.js'

/** Successive updates of one writer (each holds the next key). */
const writer = new Y.Doc()
writer.clientID = 1
const update = (n: number): ReplicaUpdate => {
  const before = Y.encodeStateVector(writer)
  writer.getMap('m').set(`k${n}`, n)
  return { update: Y.encodeStateAsUpdate(writer, before), origin: 'local' }
}
const op = (kind: PendingOp['kind'], extra: Partial<PendingOp> = {}): PendingOp => ({
  kind,
  resolve: () => undefined,
  reject: () => undefined,
  ...extra,
})

function documentOf(writer = 'd1'): { document: ReplicaDocument; local: LocalState } {
  const hlc = new Hlc()
  const local = new LocalState(hlc)
  const document = new ReplicaDocument({
    writerId: asWriterId(writer),
    schema: new RecordSchema(),
    hlc,
    local,
    onTransaction: () => undefined,
  })
  document.installDoc(new Y.Doc({ gc: true }))
  return { document, local }
}

describe('fan-out', () => {
  it('tells plain listeners every batch at once, coalescing ones once per interval, merged', async () => {
    const clock = new ManualClock()
    const fanOut = new FanOut({ clock, announceIntervalMs: 10 })
    const plain: ReplicaUpdate[] = []
    const coalesced: ReplicaUpdate[] = []
    fanOut.onUpdate((u) => plain.push(u))
    fanOut.onUpdate((u) => coalesced.push(u), { coalesce: true })
    fanOut.announce([update(1)], [op('local')], false)
    fanOut.announce([update(2)], [op('local')], false)
    fanOut.announce([update(3)], [op('local')], false)
    expect(plain).toHaveLength(3)
    // The first after a quiet spell goes at once; the rest wait for the interval.
    expect(coalesced).toHaveLength(1)
    await clock.advance(10)
    expect(coalesced).toHaveLength(2)
    const merged = new Y.Doc()
    Y.applyUpdate(merged, coalesced[0]?.update as Uint8Array)
    Y.applyUpdate(merged, coalesced[1]?.update as Uint8Array)
    expect(merged.getMap('m').toJSON()).toEqual({ k1: 1, k2: 2, k3: 3 })
  })

  it('keeps the sender of remote updates from one link, and drops it after held-back ones', () => {
    const fanOut = new FanOut({ clock: new ManualClock() })
    const told: ReplicaUpdate[] = []
    fanOut.onUpdate((u) => told.push(u))
    const remote: ReplicaUpdate = { ...update(1), origin: 'remote' }
    fanOut.announce([remote], [op('remote', { from: 'a' })], false)
    fanOut.announce([remote], [op('remote', { from: 'a' })], true)
    expect(told.map((u) => u.from)).toEqual(['a', undefined])
  })

  it('tells coalescing listeners 32 per turn, in order, and nothing once stopped', async () => {
    const clock = new ManualClock()
    const fanOut = new FanOut({ clock })
    const heard: number[] = []
    for (let i = 0; i < 40; i++) fanOut.onUpdate(() => heard.push(i), { coalesce: true })
    fanOut.announce([update(1)], [op('local')], false)
    expect(heard).toHaveLength(32)
    await clock.advance(0)
    expect(heard).toHaveLength(40)
    fanOut.announce([update(2)], [op('local')], false)
    fanOut.stop()
    fanOut.cancelTells()
    await clock.advance(0)
    expect(heard).toHaveLength(72)
  })
})

describe('write queue', () => {
  function queueWith(runs: PendingOp[][]): { queue: WriteQueue; gate: DurableGate } {
    const status = new ReplicaStatus()
    const gate = new DurableGate(documentOf().document, status)
    const queue = new WriteQueue({}, status, gate, {
      batch: (batch) => {
        runs.push(batch)
        for (const o of batch) o.resolve(undefined)
        return Promise.resolve()
      },
      wipe: (o) => {
        runs.push([o])
        o.resolve(undefined)
        return Promise.resolve()
      },
    })
    return { queue, gate }
  }

  it('folds the ops of one tick into one batch, and runs a wipe alone', async () => {
    const runs: PendingOp[][] = []
    const { queue } = queueWith(runs)
    queue.push(op('local'))
    queue.push(op('remote'))
    queue.push(op('wipe'))
    queue.push(op('local'))
    await queue.drain()
    expect(runs.map((batch) => batch.map((o) => o.kind))).toEqual([
      ['local', 'remote'],
      ['wipe'],
      ['local'],
    ])
  })

  it('holds own writes but not remote updates or bookkeeping, until released', async () => {
    const runs: PendingOp[][] = []
    const { queue } = queueWith(runs)
    queue.setHolding(true)
    queue.push(op('local'))
    queue.push(op('remote'))
    queue.push(op('meta'))
    await settle()
    expect(runs.map((batch) => batch.map((o) => o.kind))).toEqual([['remote', 'meta']])
    expect(queue.idle).toBe(false)
    queue.releaseWrites()
    await queue.drain()
    expect(runs.at(-1)?.map((o) => o.kind)).toEqual(['local'])
  })

  it('bounds a batch by writeBatchOpsMax', async () => {
    const runs: PendingOp[][] = []
    const { queue } = queueWith(runs)
    for (let i = 0; i <= limits.writeBatchOpsMax; i++) queue.push(op('meta'))
    await queue.drain()
    expect(runs.map((batch) => batch.length)).toEqual([limits.writeBatchOpsMax, 1])
  })

  it('lets a durable read in only once the batch in flight settles', async () => {
    const { document } = documentOf()
    const gate = new DurableGate(document, new ReplicaStatus())
    gate.begin(true)
    let read = false
    const reading = gate.whenDurable(() => (read = true))
    await settle()
    expect(read).toBe(false)
    gate.settle()
    await reading
    expect(read).toBe(true)
  })
})

describe('intake', () => {
  it('holds back an update whose earlier operations are missing, and integrates it once they come', () => {
    const { document } = documentOf()
    const intake = new Intake(document)
    const source = new Y.Doc()
    source.clientID = 7
    source.getMap('u:d2').set('a', { e: 0, f: {}, s: {} })
    const first = Y.encodeStateAsUpdate(source)
    const vector = Y.encodeStateVector(source)
    source.getMap('u:d2').set('b', { e: 0, f: {}, s: {} })
    const second = Y.encodeStateAsUpdate(source, vector)
    const remote = (bytes: Uint8Array, from: string): PendingOp =>
      op('remote', { remote: { bytes, meta: updateMeta(bytes), from }, from })
    const capture: BatchCapture = {
      captured: [],
      onTransaction: () => undefined,
      deleteFree: new Set(),
    }
    const ctx = { event: () => undefined } as unknown as WriteContext
    const outcomes: Outcome[] = []
    intake.applyRemotes([remote(second, 'x')], outcomes, capture, ctx)
    expect(outcomes[0]).toEqual({ ok: true, value: undefined })
    expect(intake.heldBackFrom('x')).toBe(1)
    expect([...document.doc.getMap('u:d2').keys()]).toEqual([])
    intake.applyRemotes([remote(first, 'y')], [], capture, ctx)
    expect(intake.heldBackFrom('x')).toBe(0)
    expect(intake.appliedHeld).toBe(true)
    expect([...document.doc.getMap('u:d2').keys()].sort()).toEqual(['a', 'b'])
    expect(document.doc.getMap('u:d2').size).toBe(2)
    expect(REMOTE_ORIGIN).toBe('rostersync:remote')
  })
})

describe('document', () => {
  it('reads a user from the server part and the devices that wrote it, through its index', () => {
    const { document } = documentOf('d1')
    document.doc.getMap(usersRootName(SERVER_ID)).set('u1', { e: 0, t: 5, f: { name: 'S' } })
    document.doc.getMap(usersRootName(asWriterId('d2'))).set('u1', {
      e: 0,
      f: { name: 'D' },
      s: { name: 9 },
    })
    const replica = document.replicaOf(asUserId('u1'))
    expect(replica.server?.f).toEqual({ name: 'S' })
    expect(replica.devices.map(([writer]) => writer)).toEqual(['d2'])
    expect(document.allUserIds()).toEqual(['u1'])
    expect(document.touchedUsers.has(asUserId('u1'))).toBe(true)
    expect(document.view(asUserId('u1'))?.name).toBe('S')
  })
})

describe('update log and local state', () => {
  it('keeps the clientID across a clean close and mints one after a crash', async () => {
    const store = memoryStore()
    let next = 100
    const log = new UpdateLog({ store, randomUint32: () => next++ })
    const doc = await log.loadDoc(false, 0)
    expect(log.openKind).toBe('new')
    await log.storeBatch(log.closeOps(1, doc.clientID))
    const again = await new UpdateLog({ store, randomUint32: () => next++ }).loadDoc(false, 0)
    expect(again.clientID).toBe(doc.clientID)
    const crashed = new UpdateLog({ store, randomUint32: () => next++ })
    expect((await crashed.loadDoc(false, 0)).clientID).not.toBe(doc.clientID)
    expect(crashed.openKind).toBe('crash')
  })

  it('a clean close tells the next open how much of the log may delete something (issue 13)', async () => {
    const store = memoryStore()
    const log = new UpdateLog({ store, randomUint32: () => 7 })
    const doc = await log.loadDoc(false, 0)
    const ops: StoreOp[] = []
    const inserts = [update(1), update(2)]
    log.appendOps(inserts, ops, new Set(inserts.map((u) => u.update)))
    log.appendOps([update(3)], ops)
    await log.storeBatch(ops)
    const deleting = log.deletingBytes
    expect(deleting).toBeLessThan(log.bytes)
    await log.storeBatch(log.closeOps(1, doc.clientID))
    // Reopened after the clean close: inserts alone are not taken for garbage.
    const reopened = new UpdateLog({ store, randomUint32: () => 8 })
    await reopened.loadDoc(false, 0)
    expect(reopened.bytes).toBe(log.bytes)
    expect(reopened.deletingBytes).toBe(deleting)
    // Opened again without a clean close since: nothing is known.
    const crashed = new UpdateLog({ store, randomUint32: () => 9 })
    await crashed.loadDoc(false, 0)
    expect(crashed.deletingBytes).toBe(crashed.bytes)
  })

  it('appends updates to the log and folds them into a snapshot', async () => {
    const store = memoryStore()
    const log = new UpdateLog({ store, randomUint32: () => 5 })
    const doc = await log.loadDoc(false, 0)
    const ops: StoreOp[] = []
    log.appendOps([update(1), update(2)], ops)
    await log.storeBatch(ops)
    expect(log.count).toBe(2)
    await log.compactLog(doc)
    expect(log.count).toBe(0)
    expect(await store.get(keys.update(1))).toBeUndefined()
    expect(await store.get(keys.snapshot)).toBeDefined()
  })

  it('compacts in proportion to the snapshot: bounded cost per byte written (issue 13)', async () => {
    const { updatesBeforeCompactionMax: due, updateBytesBeforeCompactionMax: fixed } = limits
    // A small roster: the fixed bounds.
    expect(compactionDue(due - 1, 1_000, 1_000)).toBe('no')
    expect(compactionDue(due, 1_000, 1_000)).toBe('idle')
    expect(compactionDue(10, fixed, 1_000)).toBe('now')
    expect(compactionDue(limits.updatesBeforeCompactionHardMax, 125, 1_000)).toBe('now')
    // A large roster (a snapshot of 4x the fixed bound): a log of the fixed
    // size waits, and a few edits are not worth an idle encode.
    const large = 4 * fixed
    expect(compactionDue(10, fixed, large)).toBe('no')
    // Many small updates: at once only once worth an encode of the roster
    // (1/updateLogToSnapshotRatioIdleMin of it), or past the ceiling.
    const hard = limits.updatesBeforeCompactionHardMax
    const worth = large / limits.updateLogToSnapshotRatioIdleMin
    expect(compactionDue(hard, worth - 1, large)).toBe('no')
    expect(compactionDue(hard, worth, large)).toBe('now')
    expect(compactionDue(limits.updatesBeforeCompactionCeiling - 1, worth - 1, large)).toBe('no')
    expect(compactionDue(limits.updatesBeforeCompactionCeiling, 10, large)).toBe('now')
    expect(compactionDue(10, large * limits.updateLogToSnapshotRatioMax, large)).toBe('now')
    expect(compactionDue(due, 1_000, large)).toBe('no')
    expect(compactionDue(due, large / limits.updateLogToSnapshotRatioIdleMin, large)).toBe('idle')
    // A log of inserts alone (no update deletes: a bulk enrolment) holds no
    // garbage: past the fixed bound it waits, and past the snapshot's size
    // too, up to updateBytesWithoutDeletesMax; the updates that delete
    // count towards the other bounds.
    const noGarbage = limits.updateBytesWithoutDeletesMax
    expect(compactionDue(10, fixed, 1_000, 0)).toBe('no')
    expect(compactionDue(10, large, large, 0)).toBe('no')
    expect(compactionDue(10, noGarbage - 1, 1_000, 0)).toBe('no')
    expect(compactionDue(10, noGarbage, 1_000, 0)).toBe('now')
    expect(compactionDue(10, 2 * noGarbage - 1, 2 * noGarbage, 0)).toBe('no')
    expect(compactionDue(10, 2 * noGarbage, 2 * noGarbage, 0)).toBe('now')
    expect(compactionDue(10, 2 * fixed, 1_000, fixed)).toBe('now')
    expect(compactionDue(10, 2 * fixed, 1_000, fixed - 1)).toBe('no')
    expect(compactionDue(10, 2 * large, large, large)).toBe('now')
    expect(compactionDue(limits.updatesBeforeCompactionHardMax, 125, 1_000, 0)).toBe('now')
    expect(compactionDue(due, large / limits.updateLogToSnapshotRatioIdleMin, large, 0)).toBe(
      'idle',
    )
    // The log knows its snapshot's size, from a load and from a compaction.
    const store = memoryStore()
    const log = new UpdateLog({ store, randomUint32: () => 5 })
    const doc = await log.loadDoc(false, 0)
    doc.getMap('u:server').set('u1', { e: 0, t: 1, f: { name: 'x'.repeat(500) } })
    await log.compactLog(doc)
    expect(log.snapshotSize).toBe(Y.encodeStateAsUpdate(doc).byteLength)
    const reloaded = new UpdateLog({ store, randomUint32: () => 7 })
    await reloaded.loadDoc(false, 0)
    expect(reloaded.snapshotSize).toBe(log.snapshotSize)
    // A staged wipe's commit: what arrived while it was staged stays in the
    // log and counts towards the next compaction.
    reloaded.stage(true)
    const ops: StoreOp[] = []
    reloaded.appendOps([update(1), update(2)], ops)
    await reloaded.storeBatch(ops)
    const arrived = reloaded.bytes
    expect(arrived).toBeGreaterThan(0)
    reloaded.commitStaged()
    expect(reloaded.bytes).toBe(arrived)
    expect(reloaded.count).toBe(2)
  })

  it('counts the bytes of updates that may delete (issue 13): unknown ones do', async () => {
    const store = memoryStore()
    const log = new UpdateLog({ store, randomUint32: () => 5 })
    const doc = await log.loadDoc(false, 0)
    const [a, b, c] = [update(11), update(12), update(13)]
    const ops: StoreOp[] = []
    log.appendOps([a, b], ops, new Set([a.update]))
    log.appendOps([c], ops)
    await log.storeBatch(ops)
    expect(log.bytes).toBe(a.update.byteLength + b.update.byteLength + c.update.byteLength)
    expect(log.deletingBytes).toBe(b.update.byteLength + c.update.byteLength)
    // Loaded from the store: what each update deletes is not known.
    const reloaded = new UpdateLog({ store, randomUint32: () => 7 })
    await reloaded.loadDoc(false, 0)
    expect(reloaded.deletingBytes).toBe(reloaded.bytes)
    await log.compactLog(doc)
    expect(log.deletingBytes).toBe(0)
    expect(log.bytes).toBe(0)
  })

  it('stores local-only state with the batch and loads it back', async () => {
    const store = memoryStore()
    const local = new LocalState(new Hlc())
    const ops: StoreOp[] = []
    local.setDeleted(asUserId('u1'), { e: 0, t: 3 } as never, ops)
    local.setRecord('sync', 'state', { ok: true }, ops)
    expect(() => local.setRecord('a/b', 'k', 1, ops)).toThrow()
    await store.batch(ops)
    const loaded = new LocalState(new Hlc())
    await loaded.load(store)
    await loaded.loadRecords(store)
    expect(loaded.localOf(asUserId('u1')).deleted).toEqual({ e: 0, t: 3 })
    expect(loaded.record('sync', 'state')).toEqual({ ok: true })
  })
})

describe('device sync rounds', () => {
  it('runs one round at a time; a request while one is queued joins it', async () => {
    const ran: Array<Pick<Round, 'kind' | 'quiet'>> = []
    let closed = false
    const rounds = new SyncRounds(
      async (round) => {
        ran.push({ kind: round.kind, quiet: round.quiet })
        await settle(1)
      },
      () => closed,
    )
    const a = rounds.run('delta', true)
    const b = rounds.run('full', false)
    expect(b).toBe(a)
    expect(rounds.busy).toBe(true)
    await a
    expect(ran).toEqual([{ kind: 'full', quiet: false }])
    closed = true
    await expect(rounds.run('delta', false)).rejects.toMatchObject({ code: 'SYNC_FAILED' })
  })
})
