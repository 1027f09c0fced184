/**
 * The replica: one peer's Yjs document, its local-only state and its event
 * log, kept durable in a Store. It is the thin shell around `core/`: every
 * change goes through one write queue that folds concurrent calls into one
 * Yjs transaction and one atomic store batch, and a write resolves only once
 * that batch is on disk. Server and device peers add their rules on top
 * (`server-peer/`, `peers/device.ts`); networking feeds `applyRemote`.
 */
import { strict as assert } from 'node:assert'
import * as Y from 'yjs'
import type { Clock } from '../core/clock.js'
import { decodeValue, encodeStateVectorMap, encodeValue } from '../core/codec.js'
import { DeleteSetCache, encodeDiff } from '../core/delete-set.js'
import {
  asDeviceEntry,
  asPolicyEntry,
  asServerEntry,
  REVOCATIONS_ROOT,
  rootOwner,
  SERVER_META_ROOT,
  type RevocationEntry,
  usersRootName,
  USERS_ROOT_PREFIX,
  type DeviceEntry,
  type PolicyEntry,
  type ServerEntry,
} from '../core/entries.js'
import {
  MalformedMessageError,
  PeerClosedError,
  RostersyncError,
  StorageError,
} from '../core/errors.js'
import { EventLog, type NewEvent, type RosterEvent } from '../core/events.js'
import { Hlc, type HlcStamp } from '../core/hlc.js'
import { asUserId, SERVER_ID, type UserId, type WriterId } from '../core/ids.js'
import { limits } from '../core/limits.js'
import { scanUpdate, type UpdateRanges } from '../core/update-scan.js'
import { mergeDeviceEntries, sameDeviceStamps } from '../core/writes.js'
import {
  laterPolicy,
  laterServerEntry,
  resolveUser,
  type DeleteMark,
  type LocalFields,
  type PolicyTable,
  type UserLocal,
  type UserReplica,
  type UserView,
} from '../core/resolve.js'
import type { RecordSchema } from '../core/schema.js'
import type { Store, StoreOp } from '../core/store.js'
import type { ClientIdSource } from './identity.js'
import { HeldBackUpdates } from './held-back.js'
import { keys, seqOf } from './storage-keys.js'

/** Coalescing listeners told per turn of the event loop (Replica.tellCoalescing). */
const TELL_CHUNK = 32

/** Transaction origin of changes made by this peer. */
export const LOCAL_ORIGIN = 'rostersync:local'
/** Transaction origin of updates received from other peers. */
export const REMOTE_ORIGIN = 'rostersync:remote'

/** What a write operation may read and change, inside the write queue's transaction. */
export interface WriteContext {
  /** A fresh HLC stamp. */
  stamp(): HlcStamp
  /** The clock's time, ms. */
  now(): number
  replicaOf(id: UserId): UserReplica
  policies(): PolicyTable
  localOf(id: UserId): UserLocal
  /** The current view of a user on this peer. */
  view(id: UserId): UserView | undefined
  /** Replaces this peer's own entry for a user (server: `u:server`). */
  setOwnEntry(id: UserId, entry: ServerEntry | DeviceEntry): void
  /** Sets a field policy (server only). */
  setPolicy(field: string, entry: PolicyEntry): void
  /** Records that a device is revoked (server only; see REVOCATIONS_ROOT). */
  setRevoked(deviceId: WriterId, entry: RevocationEntry): void
  setDeleted(id: UserId, mark: DeleteMark | undefined): void
  setLocalFields(id: UserId, fields: LocalFields | undefined): void
  /**
   * Keeps (or, with `undefined`, drops) a server entry imported from an
   * export file: local-only, read as the server's entry until the
   * document's is as new (a device's import, issue 10).
   */
  setImported(id: UserId, entry: ServerEntry | undefined): void
  /** The same for a field policy of an export file. */
  setImportedPolicy(field: string, entry: PolicyEntry | undefined): void
  /** Records an event, durable with the rest of the batch. */
  event(event: NewEvent): void
  /**
   * Sets (or, with `undefined`, removes) a small peer-local record, durable
   * with the rest of the batch: the server's device registry, a device's
   * sync state. Never replicated.
   */
  setRecord(namespace: string, key: string, value: unknown): void
  /** Every user id with replicated or local state. */
  allUserIds(): UserId[]
}

/**
 * What a bookkeeping write may do (Replica.writeMeta): record events and
 * peer-local records, nothing in the replicated document.
 */
export type MetaContext = Pick<WriteContext, 'event' | 'setRecord' | 'now'>

/** Rules a peer layers on the replica. */
export interface ReplicaHooks {
  /** Runs after remote updates changed some users, in the same durable batch. */
  afterRemote?(users: ReadonlySet<UserId>, ctx: WriteContext, policiesChanged: boolean): void
}

/** Options of {@link Replica.open}. */
export interface ReplicaOptions {
  readonly writerId: WriterId
  readonly store: Store
  readonly clock: Clock
  readonly schema: RecordSchema
  /** A uniformly random unsigned 32-bit integer (new Yjs clientIDs). */
  readonly randomUint32: () => number
  /**
   * Mints clientIDs derived from the peer's key (peers/identity.ts), so
   * that its signed envelopes can prove them its own; random ones when absent.
   */
  readonly clientIds?: ClientIdSource
  readonly hooks?: ReplicaHooks
  readonly eventsMax?: number
  /**
   * Tell listeners (the network's fan-out) of durable changes at most once
   * per this many ms: changes made meanwhile are merged into one update per
   * origin (0, the default: at once, one per batch). The first change after
   * a quiet spell goes out at once. The server uses it so that heavy edit
   * traffic turns into a bounded number of messages per device.
   */
  readonly announceIntervalMs?: number
  /**
   * Added to `announceIntervalMs` per listener (per connected link): one
   * change told costs one message on every link, so this bounds the
   * messages the fan-out sends per second (0.2 ms: at most 5,000 a second,
   * whatever the number of devices).
   */
  readonly announceMsPerListener?: number
  /**
   * Under steady inbound traffic, start a batch of remote updates at most
   * once per this many ms of wall time: updates that arrive meanwhile join
   * it (0, the default: every batch starts as soon as the one before is
   * durable). The first update after a quiet spell is applied at once; a
   * local write or bookkeeping in the queue, a full batch of updates, a
   * hold of own writes or closing ends the wait. Each batch costs
   * two Yjs state vectors, an encoded update and a store write whatever its
   * size, so hundreds of devices sending one edit at a time otherwise make
   * a batch of one or two edits each. Wall time, not the injected clock:
   * it paces this machine's work, and the protocol never depends on it (a
   * virtual clock that is not advanced must not stall the queue; the
   * simulator leaves it off to stay deterministic).
   */
  readonly remoteBatchWindowMs?: number
}

/** A durable change, as told to listeners (the network layer). */
export interface ReplicaUpdate {
  readonly update: Uint8Array
  readonly origin: 'local' | 'remote'
  /** For remote updates: the connection or peer they came from. */
  readonly from?: string
}

/** What decides whether Yjs can integrate an update whole (see canIntegrate). */
interface UpdateMeta {
  /** Per client: the first clock the update holds, and one past its last. */
  readonly from: Map<number, number>
  readonly to: Map<number, number>
  /** Per client: the [clock, clock + len) ranges the update deletes. */
  readonly deletes: Map<number, Array<readonly [number, number]>>
}

/** A remote update and its metadata, decoded once. */
interface RemoteUpdate {
  readonly bytes: Uint8Array
  readonly meta: UpdateMeta
  readonly from: string | undefined
}

/** The updates one batch stores, and the 'update' listener that collects them. */
interface BatchCapture {
  readonly captured: ReplicaUpdate[]
  readonly onUpdate: (update: Uint8Array, origin: unknown) => void
}

interface PendingOp {
  readonly kind: 'local' | 'meta' | 'remote' | 'wipe' | 'wipe-end'
  readonly wipe?: WipeOptions
  /** For 'wipe-end': make a staged wipe durable (with these records), or undo it. */
  readonly end?: WipeEnd
  readonly run?: (ctx: WriteContext) => unknown
  readonly remote?: RemoteUpdate
  readonly from?: string
  readonly resolve: (value: unknown) => void
  readonly reject: (error: unknown) => void
}

/** What {@link Replica.wipe} clears besides the replicated document. */
export interface WipeOptions {
  /** Also clear local-only state (device deletes, device-specific values). */
  readonly local: boolean
  /** Recorded in the same durable batch as the wipe. */
  readonly event?: NewEvent
  /** Peer-local records (namespace, key, value) set in the same durable batch. */
  readonly records?: ReadonlyArray<readonly [string, string, unknown]>
  /**
   * Checked in the write queue right before the wipe (after every write
   * queued earlier): when false, nothing is wiped and the wipe rejects with
   * `WipeSkippedError` (a full sync: a write landed after the push).
   */
  readonly onlyIf?: (doc: Y.Doc) => boolean
  /**
   * From the wipe on, hold this peer's own writes in the queue (remote
   * updates still apply) until {@link Replica.releaseWrites}: a full sync
   * holds them until the roster is back, so that no write is computed in
   * an emptied document, without this device's own latest entries.
   */
  readonly holdWrites?: boolean
  /** Also clear this peer's deletes (rule 3: a full sync shows them again), keeping its other local state. */
  readonly deletes?: boolean
  /**
   * A full sync's wipe: in memory only until {@link Replica.commitWipe}.
   * The store keeps the old document (what arrives meanwhile is appended to
   * its log) and the deletes, so a crash before the commit restarts the
   * peer as it was before the wipe; the commit makes the emptied document,
   * plus what arrived since, durable in one batch, and
   * {@link Replica.abandonWipe} reloads the stored state. Holds own writes
   * until then (as `holdWrites`).
   */
  readonly staged?: boolean
}

/** How a staged wipe ends (see WipeOptions.staged). */
type WipeEnd =
  | { readonly commit: true; readonly records: ReadonlyArray<readonly [string, string, unknown]> }
  | { readonly commit: false }

/** The wipe's `onlyIf` said no; nothing was wiped. */
export class WipeSkippedError extends Error {
  constructor() {
    super('wipe skipped: its condition no longer held')
    this.name = 'WipeSkippedError'
  }
}

/** How the peer came up, for the clientID rule and for tests. */
export type OpenKind = 'new' | 'clean' | 'crash'

/** One peer's durable replicated state. */
export class Replica {
  doc: Y.Doc
  readonly events: EventLog
  openKind: OpenKind = 'new'

  private readonly deleted = new Map<UserId, DeleteMark>()
  private readonly localFields = new Map<UserId, LocalFields>()
  /** Server entries and policies from an export file (see WriteContext.setImported). */
  private readonly imported = new Map<UserId, ServerEntry>()
  private readonly importedPolicies = new Map<string, PolicyEntry>()
  /** Peer-local records by `namespace/key` (see WriteContext.setRecord). */
  private readonly records = new Map<string, unknown>()
  private readonly hlc = new Hlc()
  private queue: PendingOp[] = []
  private readonly idleWaiters: Array<() => void> = []
  private flushing = false
  /** The document's delete set, followed (see core/delete-set.ts); replaced with the document. */
  private deletes: DeleteSetCache | undefined
  /** Wall time (performance.now) the latest batch holding remote updates started. */
  private lastRemoteBatchAt = -Infinity
  /** The pending start of a batch held back by ReplicaOptions.remoteBatchWindowMs. */
  private windowTimer: ReturnType<typeof setTimeout> | undefined
  /** When the last batch was applied (clock ms), and the idle compaction's timer. */
  private lastBatchAt = 0
  private compactTimer: unknown = undefined
  private closed = false
  /** Set when a storage failure left memory unlike the store: every write is then refused. */
  private broken: unknown = undefined
  private nextUpdateSeq = 1
  private firstUpdateSeq = 1
  private updateBytesSinceSnapshot = 0
  private policyCache: PolicyTable | undefined
  private deviceRoots: Array<readonly [WriterId, Y.Map<unknown>]> = []
  /**
   * Per user id, the devices whose part holds an entry for it: replicaOf
   * then reads only those, not every device's map (a server with hundreds
   * of devices reads a user's entries on every change of that user).
   * Devices never remove an entry, so it only grows; rebuilt with the doc.
   */
  private deviceIndex = new Map<string, Set<WriterId>>()
  private deviceRootsShareSize = -1
  private touched = new Set<UserId>()
  private policiesTouched = false
  /** Remote updates waiting for earlier operations of their clients (see canIntegrate). */
  private readonly heldBack = new HeldBackUpdates<RemoteUpdate>()
  /** The batch being applied integrated held-back updates (their senders are not its ops'). */
  private heldApplied = false
  /** Events of the batch being applied, stored with it as one chunk. */
  private pendingEvents: RosterEvent[] = []
  /** Stored event chunks, oldest first: key seq and last event seq. */
  private eventChunks: Array<{ readonly first: number; readonly last: number }> = []
  private readonly listeners = new Set<(u: ReplicaUpdate) => void>()
  /** Listeners told at most once per announce interval (the network's fan-out). */
  private readonly coalescing = new Set<(u: ReplicaUpdate) => void>()
  /** Coalesced tells still going out, a chunk of listeners at a time (see tellCoalescing). */
  private telling: Array<{ told: ReplicaUpdate; listeners: Array<(u: ReplicaUpdate) => void> }> = []
  private tellTimer: unknown = undefined
  private readonly resetListeners = new Set<() => void>()
  /** Durable changes not told yet (see ReplicaOptions.announceIntervalMs). */
  private untold: ReplicaUpdate[] = []
  private lastAnnounceAt = -Infinity
  private announceTimer: unknown = undefined
  /** A batch (or wipe) is applied in memory and not durable yet. */
  private inFlight = false
  /**
   * The state vector before the batch being applied (its first
   * transaction's `beforeState`): what is durable while a batch of remote
   * updates is still being written (see whenDurable).
   */
  private batchBefore: Map<number, number> | undefined = undefined
  /** Readers were let in while a batch of remote updates is being written. */
  private remoteInFlight = false
  /** Readers waiting for a moment when memory holds only what is durable. */
  private durableReaders: Array<() => void> = []
  /** Own writes are held in the queue (see WipeOptions.holdWrites). */
  private holding = false
  /**
   * A staged wipe not committed yet (WipeOptions.staged): the update
   * sequence number its document's log starts at (what is stored before it
   * is the old document), and whether the commit clears deletes.
   */
  private staged: { readonly fromSeq: number; readonly deletes: boolean } | undefined
  /**
   * This device's own entries, per user, that remote transactions of the
   * batch being applied brought in next to the one Yjs kept (see
   * mergeOwnConflicts). Devices only: no other peer writes the server's part.
   */
  private ownConflicts = new Map<UserId, DeviceEntry[]>()

  /** The injected clock (sessions bound their links' rates with it). */
  get clock(): Clock {
    return this.options.clock
  }

  /**
   * How many updates from link `from` are held back (not integrated: they
   * wait for earlier operations). A link with none held holds nothing the
   * replica lacks of what it sent.
   */
  heldBackFrom(from: string): number {
    return this.heldBack.countFrom(from)
  }

  private constructor(private readonly options: ReplicaOptions) {
    this.doc = new Y.Doc()
    this.events = new EventLog(options.eventsMax ?? limits.eventsMax)
  }

  /** Opens (or creates) a replica from its store. */
  static async open(options: ReplicaOptions): Promise<Replica> {
    const replica = new Replica(options)
    await replica.load()
    return replica
  }

  /** This peer's writer id. */
  get writerId(): WriterId {
    return this.options.writerId
  }

  /** The Yjs clientID this peer writes with. */
  get clientId(): number {
    return this.doc.clientID
  }

  /**
   * Loads the document, local state and events from the store. On a
   * rollback the clientID stays: what it wrote past the store was never
   * durable nor sent, and choosing again would need a store write, which is
   * what just failed.
   */
  private async load(rollback = false): Promise<void> {
    const store = this.options.store
    // What is loaded is the stored state: a staged wipe is undone by it.
    this.staged = undefined
    const doc = new Y.Doc({ gc: true })
    const snapshot = await store.get(keys.snapshot)
    if (snapshot !== undefined) Y.applyUpdate(doc, snapshot)
    this.firstUpdateSeq = 1
    this.nextUpdateSeq = 1
    this.updateBytesSinceSnapshot = 0
    let first = true
    for await (const [key, update] of store.range({ gte: keys.updatesFrom, lt: keys.updatesTo })) {
      Y.applyUpdate(doc, update)
      const seq = seqOf(key)
      if (first) this.firstUpdateSeq = seq
      first = false
      this.nextUpdateSeq = seq + 1
      this.updateBytesSinceSnapshot += update.byteLength
    }
    if (first) this.firstUpdateSeq = this.nextUpdateSeq = await this.nextSeqAfterSnapshot()
    if (rollback) doc.clientID = this.doc.clientID
    else await this.chooseClientId(doc)
    this.installDoc(doc)
    await this.loadLocal()
  }

  /** Keeps update numbering increasing across compactions. */
  private async nextSeqAfterSnapshot(): Promise<number> {
    const stored = await this.options.store.get(keys.updateSeq)
    return stored === undefined ? 1 : Number(decodeValue(stored))
  }

  /**
   * Keeps the clientID across a clean restart; mints a new one after a crash
   * (or on first start), so that a clientID is never reused where some of its
   * operations may not have been made durable (yjs#415 explains why not to
   * mint one on every start).
   */
  private async chooseClientId(doc: Y.Doc): Promise<void> {
    const store = this.options.store
    const savedRaw = await store.get(keys.clientId)
    const cleanRaw = await store.get(keys.clean)
    const saved = savedRaw === undefined ? undefined : Number(decodeValue(savedRaw))
    const clean = cleanRaw === undefined ? undefined : Number(decodeValue(cleanRaw))
    const ops: StoreOp[] = []
    // A clientID this peer cannot sign for (one from before it had a key)
    // is not kept: its writes could never be sent.
    const provable = saved === undefined || (this.options.clientIds?.owns(saved) ?? true)
    if (saved !== undefined && clean === saved && provable) {
      doc.clientID = saved
      this.openKind = 'clean'
    } else {
      doc.clientID = this.freshClientId(doc, ops)
      this.openKind = saved === undefined ? 'new' : 'crash'
    }
    await this.storeBatch([
      ...ops,
      { type: 'put', key: keys.clientId, value: encodeValue(doc.clientID) },
      { type: 'del', key: keys.clean },
    ])
  }

  /**
   * A clientID no one has written under in `doc`; the ops that keep what
   * proves it this peer's (its nonce) join `ops`, stored in the same batch
   * as the clientID itself.
   */
  private freshClientId(doc: Y.Doc, ops: StoreOp[]): number {
    const used = Y.encodeStateVector(doc)
    const known = Y.decodeStateVector(used)
    for (let attempt = 0; attempt < 100; attempt++) {
      const minted = this.options.clientIds?.mint()
      const id = minted?.clientId ?? this.options.randomUint32() >>> 0
      if (id !== 0 && !known.has(id) && id !== doc.clientID) {
        if (minted !== undefined) ops.push(...minted.ops)
        return id
      }
    }
    throw new Error('could not mint a fresh Yjs clientID in 100 attempts')
  }

  /**
   * Mints a new clientID now (after a wipe, a full sync or a detected
   * restore), so that operations made from here on never collide with ones
   * made under the old id.
   */
  async renewClientId(): Promise<void> {
    const ops: StoreOp[] = []
    this.doc.clientID = this.freshClientId(this.doc, ops)
    await this.storeBatch([
      ...ops,
      { type: 'put', key: keys.clientId, value: encodeValue(this.doc.clientID) },
    ])
  }

  private installDoc(doc: Y.Doc): void {
    if (this.doc !== doc) this.doc.destroy()
    this.deletes?.destroy()
    this.deletes = new DeleteSetCache(doc)
    this.doc = doc
    this.deviceRoots = []
    this.deviceRootsShareSize = -1
    this.policyCache = undefined
    this.ownConflicts = new Map()
    this.deviceIndex = new Map()
    for (const [writer, map] of this.devices())
      for (const id of map.keys()) this.indexEntry(id, writer)
    doc.on('afterTransaction', (tr: Y.Transaction) => this.noteTransaction(tr))
    for (const listener of this.resetListeners) listener()
  }

  private async loadLocal(): Promise<void> {
    const store = this.options.store
    this.deleted.clear()
    this.localFields.clear()
    this.imported.clear()
    this.importedPolicies.clear()
    this.policyCache = undefined
    for await (const [key, value] of store.range({ gte: keys.importedFrom, lt: keys.importedTo })) {
      const entry = decodeValue(value) as ServerEntry
      this.imported.set(asUserId(key.slice(keys.importedFrom.length)), entry)
      // As for the document's entries: later stamps of this peer follow them.
      this.observeStamps(entry)
    }
    for await (const [key, value] of store.range({
      gte: keys.importedPoliciesFrom,
      lt: keys.importedPoliciesTo,
    })) {
      const entry = decodeValue(value) as PolicyEntry
      this.importedPolicies.set(key.slice(keys.importedPoliciesFrom.length), entry)
      this.hlc.observe(entry.t)
    }
    for await (const [key, value] of store.range({ gte: keys.deletedFrom, lt: keys.deletedTo })) {
      this.deleted.set(
        asUserId(key.slice(keys.deletedFrom.length)),
        decodeValue(value) as DeleteMark,
      )
    }
    for await (const [key, value] of store.range({
      gte: keys.localFieldsFrom,
      lt: keys.localFieldsTo,
    })) {
      this.localFields.set(
        asUserId(key.slice(keys.localFieldsFrom.length)),
        decodeValue(value) as LocalFields,
      )
    }
    const events: RosterEvent[] = []
    this.eventChunks = []
    this.pendingEvents = []
    for await (const [key, value] of store.range({ gte: keys.eventsFrom, lt: keys.eventsTo })) {
      const chunk = decodeValue(value) as RosterEvent[]
      const last = chunk.at(-1)
      if (last === undefined) continue
      events.push(...chunk)
      this.eventChunks.push({ first: seqOf(key), last: last.seq })
    }
    this.events.restore(events)
    const hlc = await store.get(keys.hlc)
    if (hlc !== undefined) this.hlc.observe(Number(decodeValue(hlc)))
    this.records.clear()
    for await (const [key, value] of store.range({ gte: keys.recordsFrom, lt: keys.recordsTo })) {
      this.records.set(key.slice(keys.recordsFrom.length), decodeValue(value))
    }
  }

  /** A peer-local record (see WriteContext.setRecord), or undefined. */
  record(namespace: string, key: string): unknown {
    return this.records.get(`${namespace}/${key}`)
  }

  /** Every record of a namespace, as [key, value] pairs in key order. */
  recordsOf(namespace: string): Array<[string, unknown]> {
    const prefix = `${namespace}/`
    const out: Array<[string, unknown]> = []
    for (const [key, value] of this.records)
      if (key.startsWith(prefix)) out.push([key.slice(prefix.length), value])
    return out.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  }

  /** Sets one record durably (a write of its own). */
  setRecord(namespace: string, key: string, value: unknown): Promise<void> {
    return this.writeMeta((ctx) => ctx.setRecord(namespace, key, value))
  }

  /** Collects which users and policies a transaction touched. */
  private noteTransaction(tr: Y.Transaction): void {
    if (this.inFlight && this.batchBefore === undefined) this.batchBefore = tr.beforeState
    for (const [type, subs] of tr.changed) {
      if (type._item !== null) continue
      const name = this.rootName(type)
      if (name === SERVER_META_ROOT) {
        this.policiesTouched = true
        this.policyCache = undefined
      } else if (name === REVOCATIONS_ROOT) {
        // A revoked device's part leaves every view (replicaOf).
        for (const writer of subs) {
          if (writer === null) continue
          const root = this.doc.share.get(`${USERS_ROOT_PREFIX}${writer}`)
          for (const id of root?._map.keys() ?? []) this.touched.add(asUserId(id))
        }
      } else if (name?.startsWith(USERS_ROOT_PREFIX) === true) {
        const remote = tr.origin !== LOCAL_ORIGIN
        const owner = rootOwner(name)
        const device = owner !== undefined && owner !== SERVER_ID ? owner : undefined
        for (const key of subs) {
          if (key === null) continue
          this.touched.add(asUserId(key))
          if (device !== undefined) this.indexEntry(key, device)
          if (remote) this.observeEntry(type._map.get(key))
        }
        if (remote && name === this.ownRootName()) {
          this.collectOwnConflicts(type, subs)
        }
      }
    }
  }

  /** The root map of this peer's own entries; undefined on the server (see ownConflicts). */
  private ownRootName(): string | undefined {
    return this.options.writerId === SERVER_ID ? undefined : usersRootName(this.options.writerId)
  }

  /**
   * Called from 'afterTransaction', before Yjs garbage-collects what the
   * transaction deleted: for each of this device's own users that a remote
   * transaction changed, every entry still holding content in that key's
   * item list. Normally that is one (the entry Yjs shows; the one it
   * replaced was deleted long ago and collected). More than one means the
   * transaction brought an entry concurrent with one this device already
   * held: the device wrote without its own latest entry (restored from an
   * old backup, or a fetch that came back incomplete), and Yjs picked one
   * of the two by clientID, deleting the other.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- Yjs types its roots this way
  private collectOwnConflicts(type: Y.AbstractType<Y.YEvent<any>>, keys: Set<string | null>): void {
    for (const key of keys) {
      if (key === null) continue
      const entries: DeviceEntry[] = []
      for (let item = type._map.get(key) ?? null; item !== null; item = item.left) {
        if (!(item.content instanceof Y.ContentAny)) continue
        const entry = asDeviceEntry(item.content.getContent().at(-1))
        if (entry === undefined) continue
        entries.push(entry)
        // The merge may write the stamps of an entry Yjs deleted: the HLC
        // must be past them, or a later write could stamp lower.
        for (const stamp of Object.values(entry.s)) this.hlc.observe(stamp)
      }
      if (entries.length < 2) continue
      const id = asUserId(key)
      this.ownConflicts.set(id, [...(this.ownConflicts.get(id) ?? []), ...entries])
    }
  }

  /**
   * Writes, for each user collected by collectOwnConflicts, the field-wise
   * merge of the concurrent entries (latest stamp per field; see
   * mergeDeviceEntries) when it differs from the entry Yjs kept, so that no
   * write of this device is lost to Yjs's clientID order. The merged entry
   * follows the kept one, so every peer ends with it.
   */
  private mergeOwnConflicts(ctx: WriteContext): void {
    const conflicts = this.ownConflicts
    if (conflicts.size === 0) return
    this.ownConflicts = new Map()
    const own = this.ownRootName()
    if (own === undefined) return
    for (const [id, entries] of conflicts) {
      const kept = asDeviceEntry(this.doc.getMap(own).get(id))
      if (kept === undefined) continue
      const merged = mergeDeviceEntries([kept, ...entries])
      if (!sameDeviceStamps(merged, kept)) ctx.setOwnEntry(id, merged)
    }
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- Yjs types its roots this way
  private rootName(type: Y.AbstractType<Y.YEvent<any>>): string | undefined {
    for (const [name, shared] of this.doc.share) if (shared === type) return name
    return undefined
  }

  // ---------------------------------------------------------------- reads

  /** The server's users map. */
  private serverMap(): Y.Map<unknown> {
    return this.doc.getMap(usersRootName(SERVER_ID))
  }

  /** Every device's users map, refreshed when new roots appear. */
  private devices(): ReadonlyArray<readonly [WriterId, Y.Map<unknown>]> {
    if (this.deviceRootsShareSize !== this.doc.share.size) {
      const roots: Array<readonly [WriterId, Y.Map<unknown>]> = []
      for (const name of [...this.doc.share.keys()]) {
        const owner = rootOwner(name)
        if (owner === undefined || owner === SERVER_ID || !name.startsWith(USERS_ROOT_PREFIX))
          continue
        roots.push([owner, this.doc.getMap(name)])
      }
      this.deviceRoots = roots
      this.deviceRootsShareSize = this.doc.share.size
    }
    return this.deviceRoots
  }

  private indexEntry(id: string, writer: WriterId): void {
    const writers = this.deviceIndex.get(id)
    if (writers === undefined) this.deviceIndex.set(id, new Set([writer]))
    else writers.add(writer)
  }

  /**
   * Whether the server revoked device `writer` (as far as this peer has
   * heard): its envelopes are refused and its part is left out of views.
   */
  isRevoked(writer: string): boolean {
    return this.doc.getMap(REVOCATIONS_ROOT).has(writer)
  }

  /** Whether the server revoked any device (as far as this peer has heard). */
  hasRevocations(): boolean {
    return this.doc.getMap(REVOCATIONS_ROOT).size > 0
  }

  /**
   * What the replicated document holds for one user (a revoked device's
   * entries left out, but a device's own); the server's entry is the later
   * of the document's and an imported one (issue 10).
   */
  replicaOf(id: UserId): UserReplica {
    const server = laterServerEntry(asServerEntry(this.serverMap().get(id)), this.imported.get(id))
    const devices: Array<readonly [WriterId, DeviceEntry]> = []
    for (const writer of this.deviceIndex.get(id) ?? []) {
      if (writer !== this.options.writerId && this.isRevoked(writer)) continue
      const entry = asDeviceEntry(this.doc.getMap(usersRootName(writer)).get(id))
      if (entry !== undefined) devices.push([writer, entry])
    }
    return { server, devices }
  }

  /** The field policies in force (from the server's meta map). */
  policies(): PolicyTable {
    if (this.policyCache === undefined) {
      const table = new Map<string, PolicyEntry>()
      for (const [field, value] of this.doc.getMap(SERVER_META_ROOT)) {
        const entry = asPolicyEntry(value)
        if (entry !== undefined) table.set(field, entry)
      }
      for (const [field, entry] of this.importedPolicies) {
        const later = laterPolicy(table.get(field), entry)
        if (later !== undefined) table.set(field, later)
      }
      this.policyCache = table
    }
    return this.policyCache
  }

  /** This peer's local-only state for a user. */
  localOf(id: UserId): UserLocal {
    return { deleted: this.deleted.get(id), fields: this.localFields.get(id) }
  }

  /** The view of one user, or undefined. */
  view(id: UserId): UserView | undefined {
    return resolveUser(
      id,
      this.replicaOf(id),
      this.policies(),
      this.localOf(id),
      this.options.schema.fieldNames,
    )
  }

  /** Every user id mentioned by replicated or local state, sorted. */
  allUserIds(): UserId[] {
    const ids = new Set<string>(this.serverMap().keys())
    for (const id of this.deviceIndex.keys()) ids.add(id)
    for (const id of this.localFields.keys()) ids.add(id)
    for (const id of this.imported.keys()) ids.add(id)
    return [...ids].sort().map(asUserId)
  }

  /** The views of all users, ordered by id. */
  list(): UserView[] {
    const views: UserView[] = []
    for (const id of this.allUserIds()) {
      const view = this.view(id)
      if (view !== undefined) views.push(view)
    }
    return views
  }

  /** The greatest HLC stamp issued or observed. */
  hlcPeek(): HlcStamp {
    return this.hlc.peek()
  }

  /** The peer's clock now, ms: what checks of remote stamps judge them against (issue 11). */
  now(): number {
    return this.options.clock.now()
  }

  // ---------------------------------------------------------------- writes

  /**
   * Runs `run` inside the next write batch; resolves with its result once the
   * batch is durable. If `run` throws, only this operation fails.
   */
  write<T>(run: (ctx: WriteContext) => T): Promise<T> {
    return this.enqueue('local', run)
  }

  /**
   * A write of bookkeeping only (events, peer-local records), durable like
   * any write. It needs no Yjs transaction (a batch of them and of remote
   * updates that changed nothing runs without one), and it is not held by
   * a full sync (WipeOptions.holdWrites): it cannot build on the document.
   */
  writeMeta<T>(run: (ctx: MetaContext) => T): Promise<T> {
    return this.enqueue('meta', run)
  }

  private enqueue<T>(kind: 'local' | 'meta', run: (ctx: WriteContext) => T): Promise<T> {
    if (this.closed) return Promise.reject(new PeerClosedError())
    if (this.broken !== undefined) return Promise.reject(this.brokenError())
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ kind, run, resolve: resolve as (v: unknown) => void, reject })
      this.scheduleFlush()
    })
  }

  /**
   * Applies an update received from another peer; resolves once it (and any
   * adoption it caused) is durable. Malformed bytes reject with
   * `MALFORMED_MESSAGE` and change nothing.
   */
  applyRemote(update: Uint8Array, from?: string, scanned?: UpdateRanges): Promise<void> {
    if (this.closed) return Promise.reject(new PeerClosedError())
    if (this.broken !== undefined) return Promise.reject(this.brokenError())
    let meta: UpdateMeta
    try {
      // Decoding first means a malformed update is refused before any of it
      // is applied (Yjs can apply part of an update and then throw); the
      // same pass yields what canIntegrate needs. A caller that checked the
      // update scanned these very bytes already (`scanned`: scanUpdate's
      // answer for `update`, which nothing has changed since).
      meta = scanned ?? updateMeta(update)
    } catch (cause) {
      return Promise.reject(new MalformedMessageError('update does not decode', cause))
    }
    return new Promise<void>((resolve, reject) => {
      const remote: RemoteUpdate = { bytes: update, meta, from }
      const op: PendingOp = { kind: 'remote', remote, resolve: () => resolve(), reject }
      this.queue.push(from === undefined ? op : { ...op, from })
      this.scheduleFlush()
    })
  }

  /**
   * Events of one batch are stored as one value (`e/<first seq>`): one key
   * per event made bulk enrolment spend half its time in the store. A chunk
   * is deleted once all its events have fallen off the bounded log.
   */
  private writeEventChunk(storeOps: StoreOp[]): void {
    const chunk = this.pendingEvents
    const first = chunk[0]
    const last = chunk.at(-1)
    this.pendingEvents = []
    if (first !== undefined && last !== undefined) {
      storeOps.push({ type: 'put', key: keys.event(first.seq), value: encodeValue(chunk) })
      this.eventChunks.push({ first: first.seq, last: last.seq })
    }
    const oldest = this.events.firstSeq
    while (this.eventChunks.length > 0 && (this.eventChunks[0]?.last ?? Infinity) < oldest) {
      const gone = this.eventChunks.shift()
      if (gone !== undefined) storeOps.push({ type: 'del', key: keys.event(gone.first) })
    }
  }

  /**
   * Listens to durable changes; returns the unsubscribe function. With
   * `coalesce`, the listener is told at most once per announce interval
   * (ReplicaOptions.announceIntervalMs), what changed meanwhile merged: the
   * links of the network's fan-out listen so. Others hear of every batch
   * at once.
   */
  onUpdate(listener: (u: ReplicaUpdate) => void, options?: { coalesce?: boolean }): () => void {
    const set = options?.coalesce === true ? this.coalescing : this.listeners
    set.add(listener)
    return () => set.delete(listener)
  }

  /** Listens to the document being replaced (rollback after a storage failure, wipe). */
  onReset(listener: () => void): () => void {
    this.resetListeners.add(listener)
    return () => this.resetListeners.delete(listener)
  }

  /** Resolves when every queued write is durable and the queue is idle. */
  async drain(): Promise<void> {
    if (!this.flushing && this.queue.length === 0) return
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve))
  }

  private scheduleFlush(): void {
    if (this.flushing) {
      // Waiting out the remote batch window: a write that may not wait
      // ends it.
      // (The timer first: windowWait reads the whole queue.)
      if (this.windowTimer !== undefined && this.windowWait() === 0) this.endWindow()
      return
    }
    this.flushing = true
    const wait = this.windowWait()
    if (wait > 0) {
      this.windowTimer = setTimeout(() => {
        this.windowTimer = undefined
        // After the event loop's poll for I/O, not in the timers phase: an
        // answer that became due meanwhile goes before the batch.
        setImmediate(() => void this.flushLoop())
      }, wait)
      return
    }
    // A microtask, not a timer: every write issued in the same tick joins
    // the batch, and no real timer runs under the simulator.
    queueMicrotask(() => void this.flushLoop())
  }

  /** Starts the batch waiting out its window (if one is) now. */
  private endWindow(): void {
    if (this.windowTimer === undefined) return
    clearTimeout(this.windowTimer)
    this.windowTimer = undefined
    queueMicrotask(() => void this.flushLoop())
  }

  /**
   * How long the next batch should wait for more remote updates to join it
   * (ReplicaOptions.remoteBatchWindowMs), ms; 0 when it starts now: the
   * window is off, a batch with remote updates started long enough ago, the
   * queue holds something other than remote updates or a full batch of
   * them, or own writes are held.
   */
  private windowWait(): number {
    const window = this.options.remoteBatchWindowMs ?? 0
    // A full batch waiting gains nothing; a hold (a device's full sync)
    // has writes waiting that are not its own to delay.
    if (window <= 0 || this.closed || this.holding) return 0
    if (this.queue.length >= limits.writeBatchOpsMax) return 0
    const wait = this.lastRemoteBatchAt + window - performance.now()
    if (wait <= 0) return 0
    return this.queue.every((op) => op.kind === 'remote') ? wait : 0
  }

  private async flushLoop(): Promise<void> {
    try {
      for (;;) {
        if (this.windowWait() > 0) break
        const next = this.nextBatch()
        if (next === undefined) break
        this.inFlight = true
        try {
          if (next.wipe !== undefined) await this.flushWipe(next.wipe)
          else await this.flushBatch(next.batch)
        } finally {
          this.settle()
        }
      }
    } finally {
      this.endHold()
    }
  }

  /**
   * Ends a hold of the queue (flushLoop, or a compaction run in its place):
   * runs what became runnable meanwhile, or wakes drain() when nothing is
   * left.
   */
  private endHold(): void {
    this.flushing = false
    if (this.nextRunnable()) this.scheduleFlush()
    else if (this.queue.length === 0) for (const resolve of this.idleWaiters.splice(0)) resolve()
  }

  /** Whether the queue holds something flushLoop may run now. */
  private nextRunnable(): boolean {
    return this.holding
      ? this.queue.some(
          (op) => op.kind === 'remote' || op.kind === 'meta' || op.kind === 'wipe-end',
        )
      : this.queue.length > 0
  }

  /**
   * What the queue runs next: a wipe alone (what was queued before it is
   * durable first, and what is queued after it lands in the emptied
   * document), or a batch of operations up to the next wipe. While own
   * writes are held, only remote updates and bookkeeping run.
   */
  private nextBatch():
    { wipe: PendingOp; batch?: never } | { wipe?: never; batch: PendingOp[] } | undefined {
    if (this.queue.length === 0) return undefined
    // The end of a staged wipe goes first, whatever waits: the writes it
    // held must land in the document it leaves, never in the staged one.
    const endAt = this.queue.findIndex((op) => op.kind === 'wipe-end')
    if (endAt >= 0) return { wipe: this.queue.splice(endAt, 1)[0] as PendingOp }
    if (this.holding) {
      const batch: PendingOp[] = []
      const rest: PendingOp[] = []
      for (const op of this.queue) {
        const runs = op.kind === 'remote' || op.kind === 'meta'
        if (runs && batch.length < limits.writeBatchOpsMax) batch.push(op)
        else rest.push(op)
      }
      if (batch.length === 0) return undefined
      this.queue = rest
      return { batch }
    }
    const wipeAt = this.queue.findIndex((op) => op.kind === 'wipe')
    if (wipeAt === 0) return { wipe: this.queue.shift() as PendingOp }
    const take = wipeAt < 0 ? limits.writeBatchOpsMax : Math.min(wipeAt, limits.writeBatchOpsMax)
    return { batch: this.queue.splice(0, take) }
  }

  /** Ends a hold of own writes (see WipeOptions.holdWrites); they run now. */
  releaseWrites(): void {
    if (!this.holding) return
    this.holding = false
    if (this.queue.length > 0) this.scheduleFlush()
  }

  /**
   * What a peer at `stateVector` lacks of the document: the bytes of
   * `Y.encodeStateAsUpdate(doc, stateVector)`, without walking every
   * struct for the delete set (core/delete-set.ts). Read it inside
   * whenDurable when it is an answer.
   */
  encodeDiff(stateVector: Uint8Array): Uint8Array {
    const deletes = this.deletes
    return deletes === undefined
      ? Y.encodeStateAsUpdate(this.doc, stateVector)
      : encodeDiff(this.doc, stateVector, deletes)
  }

  /**
   * Runs `read` at a moment when the document in memory holds none of this
   * peer's own changes that are not durable yet: at once when no batch with
   * own changes is being written, else right after it is on disk, before
   * the next one is applied. What a peer sends from its document (its
   * answer to a state exchange) must be read this way: sending its own
   * change that a crash then destroys would leave other peers holding
   * operations of a clientID that this peer, restarted under a fresh
   * clientID, never made durable, and the server refuses them back as
   * forged. Remote changes not yet durable here may be read: each is
   * durable where it came from, and its sender counts it as delivered only
   * once an answer to a later message of its own says so (a connection's
   * messages are applied, durably, in order).
   */
  whenDurable<T>(read: (doc: Y.Doc, durableVector: Uint8Array) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const run = (): void => {
        if (this.broken !== undefined) {
          reject(this.brokenError())
          return
        }
        try {
          const before = this.remoteInFlight ? this.batchBefore : undefined
          const vector =
            before === undefined ? Y.encodeStateVector(this.doc) : encodeStateVectorMap(before)
          resolve(read(this.doc, vector))
        } catch (error) {
          reject(error instanceof Error ? error : new Error(String(error)))
        }
      }
      if (this.inFlight) this.durableReaders.push(run)
      else run()
    })
  }

  /**
   * Memory holds none of this peer's own changes that are not durable:
   * runs the waiting readers (see whenDurable). `remoteOnly`: a batch of
   * remote updates is still being written (readers get the state vector
   * from before it).
   */
  private settle(remoteOnly = false): void {
    this.inFlight = false
    this.remoteInFlight = remoteOnly
    for (const run of this.durableReaders.splice(0)) run()
  }

  /** Applies one batch of operations, makes it durable, then settles each. */
  private async flushBatch(batch: PendingOp[]): Promise<void> {
    this.batchBefore = undefined
    if (batch.some((op) => op.kind === 'remote')) this.lastRemoteBatchAt = performance.now()
    const captured: ReplicaUpdate[] = []
    const storeOps: StoreOp[] = []
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = []
    const onUpdate = (update: Uint8Array, origin: unknown): void => {
      captured.push({ update, origin: origin === REMOTE_ORIGIN ? 'remote' : 'local' })
    }
    this.doc.on('update', onUpdate)
    try {
      this.applyBatch(batch, storeOps, outcomes, { captured, onUpdate })
    } finally {
      this.doc.off('update', onUpdate)
    }
    // Only this peer's own changes must be durable before an answer holds
    // them (see whenDurable): a batch of remote updates (and bookkeeping)
    // lets readers in now, which under heavy device traffic is nearly
    // every batch, so answers do not wait for the disk.
    if (!captured.some((item) => item.origin === 'local')) this.settle(true)
    for (const { update } of captured) {
      storeOps.push({ type: 'put', key: keys.update(this.nextUpdateSeq++), value: update })
      this.updateBytesSinceSnapshot += update.byteLength
    }
    if (captured.length > 0)
      storeOps.push({ type: 'put', key: keys.hlc, value: encodeValue(this.hlc.peek()) })
    this.writeEventChunk(storeOps)
    try {
      await this.storeBatch(storeOps)
    } catch (error) {
      await this.rollback()
      this.settle()
      for (const op of batch) op.reject(error)
      return
    }
    // Readers first: an answer they send holds this batch, and must go out
    // before the updates announced below, which may build on what it holds.
    this.settle()
    batch.forEach((op, i) => {
      const outcome = outcomes[i]
      if (outcome?.ok === false) op.reject(outcome.error)
      else op.resolve(outcome?.value)
    })
    this.announce(captured, batch)
    try {
      await this.maybeCompact()
    } catch (error) {
      this.compactionFailed(error)
    }
  }

  /**
   * Clears the replicated document (and local state when asked) in one
   * atomic batch, and starts an empty document under a fresh clientID: the
   * full sync then fetches the whole roster again, and the old clientID is
   * never written with again. A staged wipe stores only the fresh clientID
   * now; the rest waits for its commit (see WipeOptions.staged).
   */
  private async flushWipe(op: PendingOp): Promise<void> {
    if (op.kind === 'wipe-end') return this.flushWipeEnd(op)
    const options = op.wipe as WipeOptions
    const old = this.doc
    if (options.onlyIf !== undefined && !options.onlyIf(old)) {
      op.reject(new WipeSkippedError())
      return
    }
    const staged = options.staged === true
    if (staged && this.closed) {
      // Nothing would end it: closing undoes a staged wipe only if it began.
      op.reject(new PeerClosedError())
      return
    }
    const doc = new Y.Doc({ gc: true })
    const ops: StoreOp[] = []
    doc.clientID = this.freshClientId(old, ops)
    ops.push({ type: 'put', key: keys.clientId, value: encodeValue(doc.clientID) })
    if (!staged) this.wipeOps(ops, this.nextUpdateSeq, options.deletes === true || options.local)
    if (options.local) {
      for (const id of this.localFields.keys()) ops.push({ type: 'del', key: keys.localFields(id) })
    }
    if (options.event !== undefined) {
      this.pendingEvents.push(this.events.append(options.event, this.options.clock.now()).event)
    }
    const records = options.records ?? []
    this.recordOps(ops, records)
    this.writeEventChunk(ops)
    try {
      await this.storeBatch(ops)
    } catch (error) {
      await this.rollback()
      this.settle()
      op.reject(error)
      return
    }
    if (staged) {
      this.staged = { fromSeq: this.nextUpdateSeq, deletes: options.deletes === true }
    } else {
      this.firstUpdateSeq = this.nextUpdateSeq
      this.updateBytesSinceSnapshot = 0
      if (options.deletes === true || options.local) this.deleted.clear()
      this.clearImported()
    }
    this.setRecords(records)
    this.heldBack.takeAll()
    if (options.local) this.localFields.clear()
    this.installDoc(doc)
    if (options.holdWrites === true || staged) this.holding = true
    this.settle()
    op.resolve(undefined)
  }

  /**
   * The store ops that replace the stored document by the log from
   * `fromSeq` on (an empty snapshot, the log before it deleted), and clear
   * the deletes when asked.
   */
  private wipeOps(ops: StoreOp[], fromSeq: number, deletes: boolean): void {
    ops.push(
      { type: 'put', key: keys.snapshot, value: Y.encodeStateAsUpdate(new Y.Doc()) },
      { type: 'put', key: keys.updateSeq, value: encodeValue(this.nextUpdateSeq) },
    )
    for (let seq = this.firstUpdateSeq; seq < fromSeq; seq++) {
      ops.push({ type: 'del', key: keys.update(seq) })
    }
    if (deletes)
      for (const id of this.deleted.keys()) ops.push({ type: 'del', key: keys.deleted(id) })
    // Imported server entries are the server's data: a wipe clears them
    // with the document, and a full sync brings the server's own.
    for (const id of this.imported.keys()) ops.push({ type: 'del', key: keys.imported(id) })
    for (const field of this.importedPolicies.keys())
      ops.push({ type: 'del', key: keys.importedPolicy(field) })
  }

  /** Forgets imported entries in memory, once a wipe's wipeOps are durable. */
  private clearImported(): void {
    this.imported.clear()
    this.importedPolicies.clear()
  }

  /**
   * Ends a staged wipe and the hold of own writes. A commit stores, in one
   * batch, the emptied document (the log since the wipe is all it holds),
   * the cleared deletes and the caller's records; it rejects with
   * `WipeSkippedError` when no staged wipe is pending (a storage failure
   * reloaded the stored state meanwhile). An abandon reloads the stored
   * state: the document from before the wipe, plus what arrived since.
   */
  private async flushWipeEnd(op: PendingOp): Promise<void> {
    const end = op.end as WipeEnd
    const staged = this.staged
    this.holding = false
    if (staged === undefined) {
      if (end.commit) op.reject(new WipeSkippedError())
      else op.resolve(undefined)
      return
    }
    if (!end.commit) {
      await this.rollback()
      op.resolve(undefined)
      return
    }
    const ops: StoreOp[] = []
    this.wipeOps(ops, staged.fromSeq, staged.deletes)
    this.recordOps(ops, end.records)
    try {
      await this.storeBatch(ops)
    } catch (error) {
      await this.rollback()
      op.reject(error)
      return
    }
    this.staged = undefined
    this.firstUpdateSeq = staged.fromSeq
    this.updateBytesSinceSnapshot = 0
    if (staged.deletes) this.deleted.clear()
    this.clearImported()
    this.setRecords(end.records)
    op.resolve(undefined)
  }

  /** The store ops that set peer-local records (see WriteContext.setRecord). */
  private recordOps(
    ops: StoreOp[],
    records: ReadonlyArray<readonly [string, string, unknown]>,
  ): void {
    for (const [namespace, key, value] of records)
      ops.push({ type: 'put', key: keys.record(`${namespace}/${key}`), value: encodeValue(value) })
  }

  /** Sets peer-local records in memory once they are durable. */
  private setRecords(records: ReadonlyArray<readonly [string, string, unknown]>): void {
    for (const [namespace, key, value] of records) this.records.set(`${namespace}/${key}`, value)
  }

  /**
   * Empties the replicated document (see flushWipe); queued like a write,
   * resolves once the wipe is durable (a staged one: in memory).
   */
  wipe(options: WipeOptions): Promise<void> {
    // A staged wipe clears nothing in the store before its commit.
    assert(options.staged !== true || !options.local, 'a staged wipe keeps local state')
    if (this.closed) return Promise.reject(new PeerClosedError())
    if (this.broken !== undefined) return Promise.reject(this.brokenError())
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ kind: 'wipe', wipe: options, resolve: () => resolve(), reject })
      this.scheduleFlush()
    })
  }

  /**
   * Makes a staged wipe durable, with peer-local `records` in the same
   * batch, and releases the writes it held; resolves once on disk.
   */
  commitWipe(records: ReadonlyArray<readonly [string, string, unknown]> = []): Promise<void> {
    return this.endWipe({ commit: true, records })
  }

  /** Undoes a staged wipe (the stored state is reloaded) and releases the writes it held. */
  abandonWipe(): Promise<void> {
    return this.endWipe({ commit: false })
  }

  private endWipe(end: WipeEnd): Promise<void> {
    if (this.closed && end.commit) return Promise.reject(new PeerClosedError())
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ kind: 'wipe-end', end, resolve: () => resolve(), reject })
      this.scheduleFlush()
    })
  }

  /** Runs the batch's operations against the document and local state. */
  private applyBatch(
    batch: PendingOp[],
    storeOps: StoreOp[],
    outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }>,
    capture: BatchCapture,
  ): void {
    const ctx = this.writeContext(storeOps)
    this.touched = new Set()
    this.heldApplied = false
    this.policiesTouched = false
    // Several remote updates apply in one Yjs transaction: a transaction
    // costs two state vectors and an encoded update of its own, which under
    // heavy traffic (hundreds of small edits per batch) was most of the
    // work, and the batch then stores one update instead of one each. A
    // batch of one keeps applyReceived's path (a full sync's large update is
    // stored as it came).
    const remotes = batch.reduce((n, op) => (op.kind === 'remote' ? n + 1 : n), 0)
    const applyRemotes = (apply: (remote: RemoteUpdate) => void): void =>
      batch.forEach((op, i) => {
        if (op.kind !== 'remote' || op.remote === undefined) return
        if (!this.canIntegrate(op.remote.meta)) {
          const refused = this.heldBack.add(op.remote)
          outcomes[i] =
            refused === undefined ? { ok: true, value: undefined } : { ok: false, error: refused }
          return
        }
        try {
          apply(op.remote)
          outcomes[i] = { ok: true, value: undefined }
        } catch (error) {
          outcomes[i] = {
            ok: false,
            error: new MalformedMessageError('update failed to apply', error),
          }
        }
      })
    if (remotes > 1) {
      this.doc.transact(() => {
        applyRemotes((remote) => Y.applyUpdate(this.doc, remote.bytes, REMOTE_ORIGIN))
      }, REMOTE_ORIGIN)
    } else if (remotes === 1) {
      applyRemotes((remote) => this.applyReceived(remote, capture))
    }
    this.integrateHeldBack(ctx)
    const remoteTouched = this.touched
    const policiesChanged = this.policiesTouched
    if (policiesChanged) for (const entry of this.policies().values()) this.hlc.observe(entry.t)
    const runWrites = (): void =>
      batch.forEach((op, i) => {
        if ((op.kind !== 'local' && op.kind !== 'meta') || op.run === undefined) return
        try {
          outcomes[i] = { ok: true, value: op.run(ctx) }
        } catch (error) {
          if (!(error instanceof RostersyncError)) throw error
          outcomes[i] = { ok: false, error }
        }
      })
    // A Yjs transaction costs a state vector on each side of it: a batch of
    // bookkeeping and of remote updates that touched nothing needs none.
    const hasLocal = batch.some((op) => op.kind === 'local')
    if (!hasLocal && remoteTouched.size === 0 && !policiesChanged && this.ownConflicts.size === 0) {
      runWrites()
      return
    }
    this.doc.transact(() => {
      this.mergeOwnConflicts(ctx)
      this.pruneImported(remoteTouched, policiesChanged, ctx)
      if (remoteTouched.size > 0 || policiesChanged) {
        this.options.hooks?.afterRemote?.(remoteTouched, ctx, policiesChanged)
      }
      runWrites()
    }, LOCAL_ORIGIN)
  }

  /**
   * Applies a received update that canIntegrate admitted. When it brings
   * only what this document lacks (see bringsOnlyNew), the received bytes
   * are what the batch stores and tells listeners, instead of Yjs encoding
   * the same operations again (for a full sync of 100,000 users, half a
   * second): the batch's 'update' capture is off while Yjs applies it, and
   * its transactions are watched instead. They are stored as received only
   * when the update was applied whole, as the one transaction, and changed
   * something (a no-op update must not be stored or relayed: peers that
   * relay what they are told would pass it round forever). Otherwise
   * (observers writing, pending structs, a throw part-way) what changed
   * since the state before is stored, as the capture would have.
   */
  private applyReceived(remote: RemoteUpdate, capture: BatchCapture): void {
    const doc = this.doc
    if (!this.bringsOnlyNew(remote.meta)) {
      Y.applyUpdate(doc, remote.bytes, REMOTE_ORIGIN)
      return
    }
    const before = Y.encodeStateVector(doc)
    const transactions: Y.Transaction[] = []
    const watch = (tr: Y.Transaction): void => void transactions.push(tr)
    let whole = false
    doc.off('update', capture.onUpdate)
    doc.on('afterTransactionCleanup', watch)
    try {
      Y.applyUpdate(doc, remote.bytes, REMOTE_ORIGIN)
      whole =
        transactions.length === 1 &&
        doc.store.pendingStructs === null &&
        doc.store.pendingDs === null
    } finally {
      doc.off('afterTransactionCleanup', watch)
      doc.on('update', capture.onUpdate)
      if (transactions.some(changedDocument)) {
        const remoteOnly = transactions.every((tr) => tr.origin === REMOTE_ORIGIN)
        capture.captured.push(
          whole
            ? { update: remote.bytes, origin: 'remote' }
            : {
                update: Y.encodeStateAsUpdate(doc, before),
                origin: remoteOnly ? 'remote' : 'local',
              },
        )
      }
    }
  }

  /**
   * True when an update holds nothing this document has: every client's
   * structs start exactly at our state, every range it deletes starts at
   * or after it (so names only items the update brings), and no earlier
   * update waits in Yjs's pending store (which applying this one could
   * integrate). Then the received bytes and Yjs's own encoding of the
   * change hold the same operations, and storing either replays to the
   * same document. A state exchange with a known peer fails this (it
   * carries the sender's whole delete set), and is re-encoded as before.
   */
  private bringsOnlyNew(meta: UpdateMeta): boolean {
    const store = this.doc.store
    if (store.pendingStructs !== null || store.pendingDs !== null) return false
    for (const [client, clock] of meta.from) if (clock !== Y.getState(store, client)) return false
    for (const [client, ranges] of meta.deletes) {
      const state = Y.getState(store, client)
      if (ranges.some(([start]) => start < state)) return false
    }
    return true
  }

  /**
   * True when Yjs can integrate all of an update now: for every client, the
   * update starts at or before what this document has, and every item it
   * deletes is here (or comes in the update itself). Otherwise Yjs would keep
   * the structs pending but apply the delete set as soon as its items arrive,
   * deleting an entry before the entry that replaces it is here: a user would
   * vanish for a while, and a device writing meanwhile would stamp a server
   * epoch older than the one it has received.
   */
  private canIntegrate(meta: UpdateMeta): boolean {
    const store = this.doc.store
    for (const [client, clock] of meta.from) if (clock > Y.getState(store, client)) return false
    for (const [client, ranges] of meta.deletes) {
      const upTo = Math.max(Y.getState(store, client), meta.to.get(client) ?? 0)
      if (ranges.some(([, end]) => end > upTo)) return false
    }
    return true
  }

  /** Integrates held-back updates that became ready, in the current batch. */
  private integrateHeldBack(ctx: WriteContext): void {
    let progress = true
    while (progress && this.heldBack.length > 0) {
      progress = false
      const ready = this.heldBack.all().findIndex((held) => this.canIntegrate(held.meta))
      if (ready >= 0) {
        this.applyHeld(this.heldBack.take(ready, 1), ctx)
        progress = true
      } else if (this.heldBack.length > 1) {
        // Updates that each miss something the other holds (relays of
        // several writers) can still be complete together. Whether they
        // are is read from their metadata (a merge starts each client at
        // the lowest clock of its parts, ends it at the highest, and
        // deletes what any part deletes), so a gap that no part fills
        // costs no merge: after every batch, it did, of every held update.
        if (this.canIntegrate(unionMeta(this.heldBack.all().map((held) => held.meta)))) {
          this.applyHeld(this.heldBack.takeAll(), ctx)
          progress = true
        }
      }
    }
  }

  private applyHeld(held: RemoteUpdate[], ctx: WriteContext): void {
    this.heldApplied = true
    const bytes =
      held.length === 1 ? (held[0] as RemoteUpdate).bytes : Y.mergeUpdates(held.map((h) => h.bytes))
    try {
      Y.applyUpdate(this.doc, bytes, REMOTE_ORIGIN)
    } catch (error) {
      // Its sender's applyRemote resolved when it was held back, so the
      // refusal is recorded here; the next state-vector exchange resends
      // whatever of it is still missing.
      ctx.event({
        type: 'write-refused',
        code: 'MALFORMED_MESSAGE',
        message: `held-back update from ${held.map((h) => h.from ?? 'unknown').join(', ')} failed to apply: ${(error as Error).message}`,
      })
    }
  }

  /**
   * Advances the HLC past the stamps of an entry a remote change brought
   * (a server entry's `t`, a device entry's field stamps). Only the entries
   * that changed: the others were observed when they came, or are covered
   * by the stamp stored with every batch.
   */
  private observeEntry(item: Y.Item | undefined): void {
    if (item === undefined || item.deleted || !(item.content instanceof Y.ContentAny)) return
    const value = item.content.getContent().at(-1) as { t?: unknown; s?: unknown } | undefined
    if (typeof value !== 'object' || value === null) return
    if (typeof value.t === 'number') this.hlc.observe(value.t)
    const stamps = value.s
    if (typeof stamps === 'object' && stamps !== null)
      for (const stamp of Object.values(stamps))
        if (typeof stamp === 'number') this.hlc.observe(stamp)
  }

  /** Takes note of every stamp of an imported server entry (as observeEntry does). */
  private observeStamps(entry: ServerEntry): void {
    this.hlc.observe(entry.t)
    for (const map of [entry.s, entry.x])
      for (const stamp of Object.values(map ?? {})) this.hlc.observe(stamp)
  }

  /**
   * Drops imported entries and policies the document now holds as new
   * (issue 10): from then on the document's are read, and the import is
   * spent. Nothing a reader sees changes (replicaOf took the later already).
   */
  private pruneImported(
    users: ReadonlySet<UserId>,
    policiesChanged: boolean,
    ctx: WriteContext,
  ): void {
    if (this.imported.size > 0) {
      for (const id of users) {
        const imported = this.imported.get(id)
        if (imported === undefined) continue
        const doc = asServerEntry(this.serverMap().get(id))
        if (doc !== undefined && laterServerEntry(doc, imported) === doc)
          ctx.setImported(id, undefined)
      }
    }
    if (policiesChanged && this.importedPolicies.size > 0) {
      const meta = this.doc.getMap(SERVER_META_ROOT)
      for (const [field, imported] of [...this.importedPolicies]) {
        const doc = asPolicyEntry(meta.get(field))
        if (doc !== undefined && laterPolicy(doc, imported) === doc)
          ctx.setImportedPolicy(field, undefined)
      }
    }
  }

  /** How many users' server entries come from an import and are not yet in the document. */
  get importedCount(): number {
    return this.imported.size
  }

  private writeContext(storeOps: StoreOp[]): WriteContext {
    const self = this.options.writerId
    return {
      stamp: () => this.hlc.next(this.options.clock.now()),
      now: () => this.options.clock.now(),
      replicaOf: (id) => this.replicaOf(id),
      policies: () => this.policies(),
      localOf: (id) => this.localOf(id),
      view: (id) => this.view(id),
      allUserIds: () => this.allUserIds(),
      setOwnEntry: (id, entry) => {
        this.doc.getMap(usersRootName(self)).set(id, entry)
        // At once: reads later in the same transaction see the entry.
        if (self !== SERVER_ID) this.indexEntry(id, self)
      },
      setPolicy: (field, entry) => {
        if (self !== SERVER_ID) throw new Error('only the server sets field policies')
        this.doc.getMap(SERVER_META_ROOT).set(field, entry)
      },
      setRevoked: (deviceId, entry) => {
        if (self !== SERVER_ID) throw new Error('only the server revokes devices')
        this.doc.getMap(REVOCATIONS_ROOT).set(deviceId, entry)
      },
      setDeleted: (id, mark) => {
        if (mark === undefined) this.deleted.delete(id)
        else this.deleted.set(id, mark)
        storeOps.push(
          mark === undefined
            ? { type: 'del', key: keys.deleted(id) }
            : { type: 'put', key: keys.deleted(id), value: encodeValue(mark) },
        )
      },
      setLocalFields: (id, fields) => {
        const empty = fields === undefined || Object.keys(fields.s).length === 0
        if (empty) this.localFields.delete(id)
        else this.localFields.set(id, fields)
        storeOps.push(
          empty
            ? { type: 'del', key: keys.localFields(id) }
            : { type: 'put', key: keys.localFields(id), value: encodeValue(fields) },
        )
      },
      setImported: (id, entry) => {
        if (entry === undefined) this.imported.delete(id)
        else {
          this.imported.set(id, entry)
          this.observeStamps(entry)
        }
        storeOps.push(
          entry === undefined
            ? { type: 'del', key: keys.imported(id) }
            : { type: 'put', key: keys.imported(id), value: encodeValue(entry) },
        )
      },
      setImportedPolicy: (field, entry) => {
        if (entry === undefined) this.importedPolicies.delete(field)
        else {
          this.importedPolicies.set(field, entry)
          this.hlc.observe(entry.t)
        }
        this.policyCache = undefined
        storeOps.push(
          entry === undefined
            ? { type: 'del', key: keys.importedPolicy(field) }
            : { type: 'put', key: keys.importedPolicy(field), value: encodeValue(entry) },
        )
      },
      event: (event) => {
        this.pendingEvents.push(this.events.append(event, this.options.clock.now()).event)
      },
      setRecord: (namespace, key, value) => {
        if (namespace.includes('/')) throw new Error('a record namespace has no "/"')
        const full = `${namespace}/${key}`
        if (value === undefined) this.records.delete(full)
        else this.records.set(full, value)
        storeOps.push(
          value === undefined
            ? { type: 'del', key: keys.record(full) }
            : { type: 'put', key: keys.record(full), value: encodeValue(value) },
        )
      },
    }
  }

  private announce(captured: ReplicaUpdate[], batch: PendingOp[]): void {
    if (captured.length === 0) return
    if (this.listeners.size === 0 && this.coalescing.size === 0) return
    // A remote update is told to listeners with its sender so that the
    // network layer does not echo it back.
    const senders = new Set(batch.filter((op) => op.kind === 'remote').map((op) => op.from))
    const from = senders.size === 1 && !this.heldApplied ? [...senders][0] : undefined
    const items = captured.map((item): ReplicaUpdate =>
      item.origin === 'remote' && from !== undefined ? { ...item, from } : item,
    )
    this.tell(items, this.listeners)
    if (this.coalescing.size === 0) return
    const every = Math.max(
      this.options.announceIntervalMs ?? 0,
      (this.options.announceMsPerListener ?? 0) * this.coalescing.size,
    )
    const now = this.options.clock.now()
    if (every <= 0 || (this.untold.length === 0 && now - this.lastAnnounceAt >= every)) {
      this.lastAnnounceAt = now
      this.tellCoalescing(items)
      return
    }
    // Within the interval: kept, and told merged when it ends. Durable
    // already, so a crash meanwhile loses nothing; the next state exchange
    // brings it to whoever missed it.
    this.untold.push(...items)
    if (this.announceTimer === undefined) {
      this.announceTimer = this.options.clock.setTimeout(
        () => this.tellUntold(),
        Math.max(0, this.lastAnnounceAt + every - now),
      )
    }
  }

  private tellUntold(): void {
    this.announceTimer = undefined
    const items = this.untold
    this.untold = []
    if (items.length === 0 || this.closed) return
    this.lastAnnounceAt = this.options.clock.now()
    this.tellCoalescing(items)
  }

  /**
   * Tells the coalescing listeners, `TELL_CHUNK` of them per turn of the
   * event loop: each is a socket write, and a server with hundreds of
   * devices would otherwise spend several ms in one go on it, during which
   * nothing else (an HTTP read, a device's state exchange) is answered.
   * Tells go out in order: one starts once the one before reached every
   * listener, so each link gets its updates in the order they were made.
   */
  private tellCoalescing(items: readonly ReplicaUpdate[]): void {
    for (const told of this.merged(items))
      this.telling.push({ told, listeners: [...this.coalescing] })
    this.tellChunk()
  }

  private tellChunk(): void {
    this.options.clock.clearTimeout(this.tellTimer)
    this.tellTimer = undefined
    let budget = TELL_CHUNK
    while (budget > 0 && this.telling.length > 0) {
      const head = this.telling[0] as (typeof this.telling)[number]
      const chunk = head.listeners.splice(0, budget)
      for (const listener of chunk) listener(head.told)
      budget -= chunk.length
      if (head.listeners.length === 0) this.telling.shift()
    }
    if (this.telling.length > 0 && this.tellTimer === undefined && !this.closed)
      this.tellTimer = this.options.clock.setTimeout(() => this.tellChunk(), 0)
  }

  /**
   * Tells listeners of durable changes, one merged update per origin: under
   * heavy traffic a batch (or an announce interval) holds many devices'
   * edits, and the server forwards each told update to every connected
   * device, so merging turns N x devices messages into one per device
   * (issue 5, "debounce fan-out"). The sender is kept when all of them came
   * from the same one.
   */
  private tell(
    items: readonly ReplicaUpdate[],
    listeners: ReadonlySet<(u: ReplicaUpdate) => void>,
  ): void {
    if (listeners.size === 0) return
    for (const told of this.merged(items)) for (const listener of listeners) listener(told)
  }

  /** One update per origin ('remote' first), merged; see tell. */
  private merged(items: readonly ReplicaUpdate[]): ReplicaUpdate[] {
    const out: ReplicaUpdate[] = []
    for (const origin of ['remote', 'local'] as const) {
      const mine = items.filter((item) => item.origin === origin)
      const first = mine[0]
      if (first === undefined) continue
      const update = mine.length === 1 ? first.update : Y.mergeUpdates(mine.map((i) => i.update))
      const from = first.from
      const same = from !== undefined && mine.every((item) => item.from === from)
      out.push(same ? { update, origin, from } : { update, origin })
    }
    return out
  }

  /** After a failed store write: rebuild memory from what is durable. */
  private async rollback(): Promise<void> {
    try {
      await this.load(true)
    } catch (error) {
      // Memory now holds changes the store does not: refuse every further
      // write until the peer is reopened, rather than serve a false state.
      this.broken = error
    }
  }

  private brokenError(): StorageError {
    return new StorageError(
      'the store failed and could not be reloaded; reopen the peer',
      this.broken,
    )
  }

  private async storeBatch(ops: StoreOp[]): Promise<void> {
    if (ops.length === 0) return
    try {
      await this.options.store.batch(ops)
    } catch (error) {
      throw error instanceof RostersyncError
        ? error
        : new StorageError(
            `store write failed: ${error instanceof Error ? error.message : String(error)}`,
            error,
          )
    }
  }

  /**
   * After a batch: compacts at once when the log is far too long (see
   * limits), and otherwise, when it is due, once the queue has been idle
   * for `compactionIdleMs` (compactWhenIdle).
   */
  private async maybeCompact(force = false): Promise<void> {
    const count = this.nextUpdateSeq - this.firstUpdateSeq
    // A broken replica's memory is not what the store holds: never snapshot it.
    if (count === 0 || this.broken !== undefined) return
    const now =
      force ||
      count >= limits.updatesBeforeCompactionHardMax ||
      this.updateBytesSinceSnapshot >= limits.updateBytesBeforeCompactionMax
    if (now) {
      await this.compactLog()
      return
    }
    this.lastBatchAt = this.options.clock.now()
    if (count >= limits.updatesBeforeCompactionMax && this.compactTimer === undefined) {
      this.compactTimer = this.options.clock.setTimeout(
        () => this.compactWhenIdle(),
        limits.compactionIdleMs,
      )
    }
  }

  /**
   * The idle compaction's timer: compacts if nothing was written for
   * `compactionIdleMs` and the queue is idle, else looks again when that
   * much time has passed since the last batch. It holds the queue while it
   * runs, so no batch is applied (and not yet durable) while it encodes.
   */
  private compactWhenIdle(): void {
    this.compactTimer = undefined
    if (this.closed || this.broken !== undefined) return
    if (this.nextUpdateSeq === this.firstUpdateSeq) return
    const wait = this.lastBatchAt + limits.compactionIdleMs - this.options.clock.now()
    if (this.flushing || this.nextRunnable() || wait > 0) {
      this.compactTimer = this.options.clock.setTimeout(
        () => this.compactWhenIdle(),
        wait > 0 ? wait : limits.compactionIdleMs,
      )
      return
    }
    this.flushing = true
    this.compactLog()
      .catch((error: unknown) => this.compactionFailed(error))
      .finally(() => this.endHold())
  }

  /**
   * A failed compaction: the writes are durable in the update log already;
   * compaction only shortens it and is tried again later. The failure is
   * recorded in the event log, stored with the next batch.
   */
  private compactionFailed(error: unknown): void {
    const code = error instanceof RostersyncError ? error.code : 'STORAGE_FAILED'
    const message = error instanceof Error ? error.message : String(error)
    const at = this.options.clock.now()
    this.pendingEvents.push(
      this.events.append({ type: 'compaction-failed', code, message }, at).event,
    )
  }

  /** Folds the update log into one snapshot, in one atomic batch. */
  private async compactLog(): Promise<void> {
    // The document in memory is a staged wipe's: its snapshot would make
    // the wipe durable before the roster is back.
    if (this.staged !== undefined) return
    const ops: StoreOp[] = [
      { type: 'put', key: keys.snapshot, value: Y.encodeStateAsUpdate(this.doc) },
      { type: 'put', key: keys.updateSeq, value: encodeValue(this.nextUpdateSeq) },
    ]
    for (let seq = this.firstUpdateSeq; seq < this.nextUpdateSeq; seq++) {
      ops.push({ type: 'del', key: keys.update(seq) })
    }
    await this.storeBatch(ops)
    this.firstUpdateSeq = this.nextUpdateSeq
    this.updateBytesSinceSnapshot = 0
  }

  /** Compacts now (used by close and by tests). */
  async compact(): Promise<void> {
    // Holds the queue while it runs, as the idle compaction does: the check
    // and the hold are in one synchronous step, so no batch slips in.
    while (this.flushing || this.queue.length > 0) await this.drain()
    this.flushing = true
    try {
      await this.maybeCompact(true)
    } finally {
      this.endHold()
    }
  }

  /**
   * Stops accepting writes, makes everything durable, marks the shutdown
   * clean (so the clientID is kept) and closes the store.
   */
  async close(): Promise<void> {
    if (this.closed) return
    // Closed first: a write made from here on is refused (PEER_CLOSED)
    // rather than slipping in between the drain and the last compaction.
    this.closed = true
    // A batch waiting out its window starts now: closing drains it.
    this.endWindow()
    // A staged wipe not committed is undone first: the writes it held then
    // land in the stored document.
    if (this.staged !== undefined) void this.abandonWipe()
    this.releaseWrites()
    await this.drain()
    this.options.clock.clearTimeout(this.announceTimer)
    this.announceTimer = undefined
    this.options.clock.clearTimeout(this.compactTimer)
    this.compactTimer = undefined
    this.options.clock.clearTimeout(this.tellTimer)
    this.tellTimer = undefined
    this.telling = []
    try {
      // A broken replica is not marked clean: its clientID may have written
      // what the store never took, so the next open mints a fresh one.
      if (this.broken === undefined) {
        await this.maybeCompact(true)
        await this.storeBatch([
          { type: 'put', key: keys.hlc, value: encodeValue(this.hlc.peek()) },
          { type: 'put', key: keys.clean, value: encodeValue(this.doc.clientID) },
        ])
      }
    } finally {
      this.deletes?.destroy()
      this.doc.destroy()
      await this.options.store.close()
    }
  }
}

/**
 * Scans an update once: throws on malformed bytes (a strict validation, so
 * nothing of a malformed update is applied), returns what canIntegrate
 * needs. The scan skips over content values instead of building them.
 */
function updateMeta(update: Uint8Array): UpdateMeta {
  return scanUpdate(update)
}

/** The metadata of the merge of updates with these metadata (see integrateHeldBack). */
function unionMeta(metas: readonly UpdateMeta[]): UpdateMeta {
  const from = new Map<number, number>()
  const to = new Map<number, number>()
  const deletes = new Map<number, Array<readonly [number, number]>>()
  for (const meta of metas) {
    for (const [client, clock] of meta.from)
      from.set(client, Math.min(clock, from.get(client) ?? clock))
    for (const [client, clock] of meta.to) to.set(client, Math.max(clock, to.get(client) ?? clock))
    for (const [client, ranges] of meta.deletes) {
      const all = deletes.get(client)
      if (all === undefined) deletes.set(client, [...ranges])
      else all.push(...ranges)
    }
  }
  return { from, to, deletes }
}

/** Whether a transaction changed the document: Yjs's own test before it emits 'update'. */
function changedDocument(tr: Y.Transaction): boolean {
  if (tr.deleteSet.clients.size > 0) return true
  for (const [client, clock] of tr.afterState) if (tr.beforeState.get(client) !== clock) return true
  return false
}
