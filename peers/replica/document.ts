/**
 * The replica's document: the Yjs doc with its per-writer roots, the index
 * of which devices wrote each user, the followed delete set, and every read
 * of the roster (`replicaOf`, `policies`, `view`, `list`). It also merges a
 * device's own concurrent entries (`collectOwnConflicts`,
 * `mergeOwnConflicts`). No I/O and no timers: the journal loads the doc and
 * installs it here, the batch runner changes it inside transactions.
 *
 * Invariants: `deviceIndex` names, for every user id, every device whose
 * root holds an entry for it (it only grows; rebuilt with the doc);
 * `touched` and `policiesTouched` describe the transactions since
 * `beginBatch`; `ownConflicts` is emptied by the batch that collected it.
 */
import * as Y from 'yjs'
import { newDoc } from '../../core/new-doc.js'
import { DeleteSetCache, encodeDiff } from '../../core/delete-set.js'
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
} from '../../core/entries.js'
import { stampMs, type Hlc } from '../../core/hlc.js'
import { limits } from '../../core/limits.js'
import { rootNameOf } from '../../core/root-names.js'
import { asUserId, SERVER_ID, type UserId, type WriterId } from '../../core/ids.js'
import { mergeDeviceEntries, sameDeviceStamps } from '../../core/writes.js'
import {
  laterPolicy,
  laterServerEntry,
  resolveUser,
  type PolicyTable,
  type UserLocal,
  type UserReplica,
  type UserView,
} from '../../core/resolve.js'
import type { RecordSchema } from '../../core/schema.js'
import { AnswerCache, answerKey, encodeParts, isSettled, type AnswerCost } from './answer-cache.js'
import type { AnswerStream } from './answer-stream.js'
import type { LocalState } from './local-state.js'
import { LOCAL_ORIGIN, type WriteContext } from './types.js'

/** What the document is built with. */
export interface DocumentOptions {
  readonly writerId: WriterId
  readonly schema: RecordSchema
  /** The peer's HLC: stamps that remote changes bring are observed. */
  readonly hlc: Hlc
  /** Local-only state: imported entries are read with the document's. */
  readonly local: LocalState
  /** Told of every transaction first (the durable gate notes the state before a batch). */
  readonly onTransaction: (tr: Y.Transaction) => void
}

/** The replicated document of one peer and its reads. */
export class ReplicaDocument {
  doc: Y.Doc
  /** The document's delete set, followed (see core/delete-set.ts); replaced with the document. */
  private deletes: DeleteSetCache | undefined
  /** Answers to state exchanges, until the document changes (see AnswerCache). */
  private readonly answers = new AnswerCache()
  private policyCache: PolicyTable | undefined
  /**
   * Per user id, the devices whose part holds an entry for it: replicaOf
   * then reads only those, not every device's map (a server with hundreds
   * of devices reads a user's entries on every change of that user).
   * Devices never remove an entry, so it only grows; rebuilt with the doc.
   */
  private deviceIndex = new Map<string, Set<WriterId>>()
  /** On a device: the latest stamp of its server it holds, ms (stampHorizon). */
  private serverStampHigh = 0
  private touched = new Set<UserId>()
  private policiesTouched = false
  /**
   * This device's own entries, per user, that remote transactions of the
   * batch being applied brought in next to the one Yjs kept (see
   * mergeOwnConflicts). Devices only: no other peer writes the server's part.
   */
  private ownConflicts = new Map<UserId, DeviceEntry[]>()
  private readonly resetListeners = new Set<() => void>()

  constructor(private readonly options: DocumentOptions) {
    this.doc = newDoc()
  }

  private get hlc(): Hlc {
    return this.options.hlc
  }

  private get local(): LocalState {
    return this.options.local
  }

  /**
   * Where other writers' stamps are judged from (core/authorize.ts, which
   * refuses stamps `stampSkewMsMax` past it): the latest of this peer's
   * clock `now`, the latest time it stamped at (`wall`, Hlc.wall) and, on
   * a device, its server's latest stamp less that skew (plus
   * `stampHorizonSlackMs`). A clock that ran ahead and was set back leaves
   * stamps ahead that peers took and write after (years probe: a server a
   * day ahead for a while had every device's writes refused for a day).
   * No other writer moves it further than the server would take: a
   * device's stamp up to the server's bound, adopted by the server, moves
   * a device's bound to the server's (review), not past it.
   */
  stampHorizon(now: number, wall: number): number {
    const server =
      this.serverStampHigh === 0
        ? 0
        : this.serverStampHigh - limits.stampSkewMsMax + limits.stampHorizonSlackMs
    return Math.max(now, wall, server)
  }

  /** On a device: the latest stamp of its server it holds, ms (0: none). */
  get serverStampHighMs(): number {
    return this.serverStampHigh
  }

  /** Replaces the document (load, rollback, wipe) and tells the reset listeners. */
  installDoc(doc: Y.Doc): void {
    // Answers being made of the old document are made to the end first (cut ones dropped).
    this.answers.replaced()
    if (this.doc !== doc) this.doc.destroy()
    this.deletes?.destroy()
    this.deletes = new DeleteSetCache(doc)
    this.doc = doc
    this.policyCache = undefined
    this.ownConflicts = new Map()
    this.deviceIndex = new Map()
    for (const [writer, map] of this.devices())
      for (const id of map.keys()) this.indexEntry(id, writer)
    this.serverStampHigh = 0
    if (this.options.writerId !== SERVER_ID)
      for (const root of [usersRootName(SERVER_ID), SERVER_META_ROOT, REVOCATIONS_ROOT])
        for (const item of this.doc.getMap(root)._map.values()) this.observeServerEntry(item)
    doc.on('afterTransaction', (tr: Y.Transaction) => this.noteTransaction(tr))
    // An answer being made part by part is made to the end before the
    // document changes (peers/replica/answer-stream.ts).
    doc.on('beforeTransaction', () => this.answers.settle())
    for (const listener of this.resetListeners) listener()
  }

  /** Listens to the document being replaced (rollback after a storage failure, wipe). */
  onReset(listener: () => void): () => void {
    this.resetListeners.add(listener)
    return () => this.resetListeners.delete(listener)
  }

  /** Frees the document (closing). */
  destroy(): void {
    this.answers.clear('the replica closed')
    this.deletes?.destroy()
    this.doc.destroy()
  }

  /** Starts noting which users and policies the next batch's transactions touch. */
  beginBatch(): void {
    this.touched = new Set()
    this.policiesTouched = false
  }

  /** The users the transactions since beginBatch touched. */
  get touchedUsers(): ReadonlySet<UserId> {
    return this.touched
  }

  /** Whether the transactions since beginBatch changed a field policy. */
  get policiesChanged(): boolean {
    return this.policiesTouched
  }

  /** Whether remote transactions brought concurrent entries of this device's own. */
  get hasOwnConflicts(): boolean {
    return this.ownConflicts.size > 0
  }

  /** Drops the cached policy table (an imported policy changed). */
  invalidatePolicies(): void {
    this.policyCache = undefined
  }

  /** Collects which users and policies a transaction touched. */
  private noteTransaction(tr: Y.Transaction): void {
    this.options.onTransaction(tr)
    this.answers.note(tr)
    for (const [type, subs] of tr.changed) {
      if (type._item !== null) continue
      const name = rootNameOf(this.doc, type)
      if (tr.origin !== LOCAL_ORIGIN && (name === SERVER_META_ROOT || name === REVOCATIONS_ROOT))
        for (const key of subs) if (key !== null) this.observeServerEntry(type._map.get(key))
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
          if (remote && owner === SERVER_ID) this.observeServerEntry(type._map.get(key))
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
  mergeOwnConflicts(ctx: WriteContext): void {
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

  /** Advances serverStampHigh to the stamp of a server entry, policy or revocation (bounded at the door). */
  private observeServerEntry(item: Y.Item | undefined): void {
    if (item === undefined || item.deleted || !(item.content instanceof Y.ContentAny)) return
    const t = (item.content.getContent().at(-1) as { t?: unknown } | undefined)?.t
    if (typeof t === 'number' && Number.isSafeInteger(t) && stampMs(t) > this.serverStampHigh)
      this.serverStampHigh = stampMs(t)
  }

  // ---------------------------------------------------------------- reads

  /** The server's users map. */
  private serverMap(): Y.Map<unknown> {
    return this.doc.getMap(usersRootName(SERVER_ID))
  }

  /** Every device's users map. */
  private *devices(): Iterable<readonly [WriterId, Y.Map<unknown>]> {
    for (const name of [...this.doc.share.keys()]) {
      const owner = rootOwner(name)
      if (owner !== undefined && owner !== SERVER_ID && name.startsWith(USERS_ROOT_PREFIX))
        yield [owner, this.doc.getMap(name)]
    }
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
    const server = laterServerEntry(
      asServerEntry(this.serverMap().get(id)),
      this.local.importedOf(id),
    )
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
      for (const [field, entry] of this.local.importedPolicyEntries()) {
        const later = laterPolicy(table.get(field), entry)
        if (later !== undefined) table.set(field, later)
      }
      this.policyCache = table
    }
    return this.policyCache
  }

  /** This peer's local-only state for a user. */
  localOf(id: UserId): UserLocal {
    return this.local.localOf(id)
  }

  /** The Yjs item of the server's entry for `id` (client, clock), if it holds a live one. */
  serverItemOf(id: UserId): readonly [number, number] | undefined {
    const item = this.serverMap()._map.get(id)
    return item === undefined || item.deleted ? undefined : [item.id.client, item.id.clock]
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
    // Sorted, then duplicates dropped side by side: at 1M users a Set of
    // every id cost a third of the first page after a cold start.
    // Read off the map's entries directly: Y.Map's key iterator, a chain of
    // generic iterators, took 170 of the 210 ms at 1M users.
    const ids: UserId[] = []
    for (const [id, item] of this.serverMap()._map) if (!item.deleted) ids.push(asUserId(id))
    for (const id of this.deviceIndex.keys()) ids.push(asUserId(id))
    for (const id of this.local.userIds()) ids.push(id)
    // Enrolled in order, they often are in order already: a look costs less than a sort.
    if (!inOrder(ids)) ids.sort()
    let kept = 0
    for (let i = 0; i < ids.length; i++)
      if (kept === 0 || ids[i] !== ids[kept - 1]) ids[kept++] = ids[i] as UserId
    ids.length = kept
    return ids
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

  /** `Y.encodeStateAsUpdate(doc, stateVector)` without a walk for the delete set (core/delete-set.ts). */
  encodeDiff(stateVector: Uint8Array): Uint8Array {
    const deletes = this.deletes
    return deletes === undefined
      ? Y.encodeStateAsUpdate(this.doc, stateVector)
      : encodeDiff(this.doc, stateVector, deletes)
  }

  /**
   * What a peer at `stateVector` lacks, in parts of at most `partBytesMax`
   * bytes that apply in order (core/answer-chunks.ts), taken from the
   * cache while the document has not changed since it was encoded. Yjs's
   * pending structs and deletes (which wait for what nobody sent yet) are
   * not in it. Each part is made when first asked for, of the document as
   * it is now (answer-stream.ts); made lazily (none yet: made in turns)
   * when it is made now and brings `lazyFrom` operations or more. Read it
   * inside whenDurable; `unread()` it when done.
   */
  answerParts(stateVector: Uint8Array, partBytesMax: number, lazyFrom = Infinity): AnswerStream {
    const target = Y.decodeStateVector(stateVector)
    // From the asker's vector, or (the rest of a cut answer) from what its
    // parts brought, of the document as it is then; during a transaction
    // (or its cleanup) nothing is kept.
    const encode: Parameters<AnswerCache['get']>[2] = (from = target, sent) =>
      encodeParts(this.doc, this.deletes, from, partBytesMax, sent)
    const { key, operations } = answerKey(this.doc.store, target, partBytesMax)
    const stream = this.answers.get(key, isSettled(this.doc), encode, operations >= lazyFrom)
    stream.read()
    return stream
  }

  /** What an answer to a peer at `target` would encode (AnswerCache.cost). */
  answerCost(target: ReadonlyMap<number, number>, partBytesMax: number): AnswerCost {
    return this.answers.cost(this.doc.store, target, partBytesMax)
  }

  /** Large answers encoded rather than taken from the cache (AnswerCache.encodes). */
  get answersEncoded(): number {
    return this.answers.encodes
  }

  // ---------------------------------------------------------------- writes

  /** Replaces this peer's own entry for a user (see WriteContext.setOwnEntry). */
  setOwnEntry(id: UserId, entry: ServerEntry | DeviceEntry): void {
    const self = this.options.writerId
    this.doc.getMap(usersRootName(self)).set(id, entry)
    // At once: reads later in the same transaction see the entry.
    if (self !== SERVER_ID) this.indexEntry(id, self)
  }

  /** Sets a field policy (server only). */
  setPolicy(field: string, entry: PolicyEntry): void {
    if (this.options.writerId !== SERVER_ID) throw new Error('only the server sets field policies')
    this.doc.getMap(SERVER_META_ROOT).set(field, entry)
  }

  /** Records that a device is revoked (server only); `undefined` takes it back (a reset key approved again). */
  setRevoked(deviceId: WriterId, entry: RevocationEntry | undefined): void {
    if (this.options.writerId !== SERVER_ID) throw new Error('only the server revokes devices')
    if (entry === undefined) this.doc.getMap(REVOCATIONS_ROOT).delete(deviceId)
    else this.doc.getMap(REVOCATIONS_ROOT).set(deviceId, entry)
  }
}

/** Whether `ids` ascend (duplicates side by side allowed). */
function inOrder(ids: readonly string[]): boolean {
  for (let i = 1; i < ids.length; i++) if ((ids[i - 1] as string) > (ids[i] as string)) return false
  return true
}
