/**
 * The replica's shared vocabulary: what a write may do (WriteContext), the
 * options, the updates told to listeners, the wipe, and the operations the
 * write queue carries between the rooms. `peers/replica.ts` re-exports the
 * public ones, so importers keep importing from there.
 */
import type * as Y from 'yjs'
import type { Clock } from '../../core/clock.js'
import type { DeviceEntry, PolicyEntry, RevocationEntry, ServerEntry } from '../../core/entries.js'
import type { NewEvent } from '../../core/events.js'
import type { HlcStamp } from '../../core/hlc.js'
import type { UserId, WriterId } from '../../core/ids.js'
import type {
  DeleteMark,
  LocalFields,
  PolicyTable,
  UserLocal,
  UserReplica,
  UserView,
} from '../../core/resolve.js'
import type { RecordSchema } from '../../core/schema.js'
import type { Store } from '../../core/store.js'
import type { ClientIdSource } from '../identity.js'

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
  /** Records that a device is revoked (server only; see REVOCATIONS_ROOT); `undefined` takes it back. */
  setRevoked(deviceId: WriterId, entry: RevocationEntry | undefined): void
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
  /**
   * Drops every imported entry and policy: the server's roster came since,
   * so the import is spent (a server restored from a backup since the file
   * was made holds older entries, and they win). Returns how many.
   */
  dropImports(): number
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
  /**
   * Whether afterRemote would write anything for `users` (reads only).
   * False lets a batch with nothing else to write skip its own Yjs
   * transaction, which costs two walks of the state vector (a server with
   * 1,000 devices has 1,000 clientIDs); absent, afterRemote always runs.
   */
  writesAfterRemote?(users: ReadonlySet<UserId>, ctx: WriteContext): boolean
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
  /**
   * A fresh clientID at every open, clean restarts included (the server:
   * a data directory restored from a backup must not write again under
   * ids that devices may already hold with other content: PROTOCOL.md,
   * "A restored server"). Off by default (yjs#415: clientIDs pile up).
   */
  readonly freshClientIdEachOpen?: boolean
  readonly hooks?: ReplicaHooks
  readonly eventsMax?: number
  /**
   * Largest message of an answer to a step 1, in bytes
   * (`netLimits.answerChunkBytesMax` by default; a test lowers it to see
   * a small roster answered in parts).
   */
  readonly answerChunkBytesMax?: number
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
   * Tells per second of the clock that go at once, whatever
   * `announceIntervalMs`: only past them are changes held and merged (a
   * device: its writes are told as they are made unless it writes faster
   * than its server takes messages). Unset: every tell keeps the interval.
   */
  readonly announceFreePerSecond?: number
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
export interface UpdateMeta {
  /** Per client: the first clock the update holds, and one past its last. */
  readonly from: Map<number, number>
  readonly to: Map<number, number>
  /** Per client: the [clock, clock + len) ranges the update deletes. */
  readonly deletes: Map<number, Array<readonly [number, number]>>
}

/** A remote update and its metadata, decoded once. */
export interface RemoteUpdate {
  readonly bytes: Uint8Array
  readonly meta: UpdateMeta
  readonly from: string | undefined
  /**
   * The document's generation epoch when it was queued (UpdateLog.epoch):
   * one queued for another generation's document is refused when it comes
   * to apply (GENERATION_CHANGED).
   */
  readonly epoch?: number
}

/** The updates one batch stores, and the 'update' listener that collects them. */
export interface BatchCapture {
  readonly captured: ReplicaUpdate[]
  /** Captures a transaction's update: the document's 'afterTransactionCleanup' listener while a batch applies. */
  readonly onTransaction: (tr: Y.Transaction) => void
  /**
   * Captured updates whose transactions deleted nothing (they add no
   * garbage a compaction would take away: see compactionDue).
   */
  readonly deleteFree: Set<Uint8Array>
}

export interface PendingOp {
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
  /**
   * Peer-local records (namespace, key, value) set in the same durable
   * batch; a function is given the document right before the wipe (after
   * every write queued earlier), to keep something of it.
   */
  readonly records?:
    | ReadonlyArray<readonly [string, string, unknown]>
    | ((doc: Y.Doc) => ReadonlyArray<readonly [string, string, unknown]>)
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
  /**
   * The caller already holds own writes for this wipe
   * ({@link Replica.holdWrites}): a staged wipe goes ahead while they are
   * held (else it is refused, as one that would follow another's hold).
   */
  readonly writesHeld?: boolean
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
  /**
   * A move to another generation of the site's document (issue 13; implies
   * `staged`): nothing received while it is staged is stored, since the
   * old log must never take the new generation's updates (a crash would
   * mix the two). The commit stores the whole new document as a snapshot
   * and deletes the old log, in one batch: a crash before it restarts the
   * peer on the old generation, whole (it moves again), after it on the
   * new one.
   */
  readonly generation?: boolean
}

/** What a device held before it fetched its restored server's roster again. */
export interface HeldBeforeRefetch {
  /**
   * The users its delete marks hid (rule 3), each with the versions of its
   * server entry up to the one the mark names: that entry's Yjs item and
   * the items it replaced, as (client, first clock, length) ranges.
   */
  readonly hidden: ReadonlyMap<UserId, ReadonlyArray<readonly [number, number, number]>>
  /**
   * A move back to a generation it left (its server restored from a backup
   * taken before a compaction): how far it held the server's clientIDs
   * there (peers/device-sync/left-generations.ts). Every entry within
   * them counts as a version its marks hid; `hidden`'s name the
   * generation it leaves, whose items the fetched document does not hold.
   */
  readonly seen?: ReadonlyMap<number, number>
  /**
   * A move to a new generation, no restore seen (`hidden` holds no
   * versions): the fetched entries are copies, in new items, of the ones
   * the marks name (settleMarks points the marks at them).
   */
  readonly forward?: boolean
}

/** How a staged wipe ends (see WipeOptions.staged). */
export type WipeEnd =
  | {
      readonly commit: true
      readonly records: ReadonlyArray<readonly [string, string, unknown]>
      /**
       * Own writes made in the staged document inside the commit's batch
       * (a generation move carries the device's own entries over).
       */
      readonly carry?: (ctx: WriteContext) => void
      /**
       * Also clear the delete marks (rule 3), as a full sync does: a move
       * that completes a full sync the caller asked for.
       */
      readonly deletes?: boolean
      /**
       * The fetch follows a server restored from a backup: what the device
       * held before it, so that delete marks hiding a user then and
       * rolled back to an entry it held already are settled on it
       * (settleMarks).
       */
      readonly restored?: HeldBeforeRefetch
    }
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

/** How one operation of a batch ended: its value, or the error it is rejected with. */
export type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown }
