/**
 * The replica's local-only state: what this peer keeps in its store and
 * never replicates. A device's deletes (rule 3) and device-specific values,
 * server entries and policies imported from an export file (issue 10), and
 * peer-local records (the server's device registry, a device's sync state).
 *
 * Invariant: each map holds what the store holds under its prefix, once the
 * batch that changed it is durable; a setter adds its store op to the batch
 * being written and changes memory at once (a failed batch reloads both).
 */
import { forEachStamp, type PolicyEntry, type ServerEntry } from '../../core/entries.js'
import { decodeValue, encodeValue } from '../../core/codec.js'
import type { Hlc, HlcStamp } from '../../core/hlc.js'
import { asUserId, type UserId } from '../../core/ids.js'
import type { DeleteMark, LocalFields, UserLocal } from '../../core/resolve.js'
import type { Store, StoreOp } from '../../core/store.js'
import { keys } from '../storage-keys.js'

/** Peer-local state of one replica (see the file's comment). */
export class LocalState {
  private readonly deleted = new Map<UserId, DeleteMark>()
  private readonly localFields = new Map<UserId, LocalFields>()
  /** Server entries and policies from an export file (see WriteContext.setImported). */
  private readonly imported = new Map<UserId, ServerEntry>()
  private readonly importedPolicies = new Map<string, PolicyEntry>()
  /** Peer-local records by `namespace/key` (see WriteContext.setRecord). */
  private readonly records = new Map<string, unknown>()

  /**
   * `hlc`: the peer's clock of stamps (the replica's, shared with its
   * document); stamps of imported entries are observed, as the document's are.
   */
  constructor(readonly hlc: Hlc) {}

  /** Loads the deletes, device-specific values and imported entries from the store. */
  async load(store: Store): Promise<void> {
    this.deleted.clear()
    this.localFields.clear()
    this.imported.clear()
    this.importedPolicies.clear()
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
  }

  /** Loads the peer-local records from the store. */
  async loadRecords(store: Store): Promise<void> {
    this.records.clear()
    for await (const [key, value] of store.range({ gte: keys.recordsFrom, lt: keys.recordsTo })) {
      this.records.set(key.slice(keys.recordsFrom.length), decodeValue(value))
    }
  }

  /** Restores the clock's stored state: the last stamp, and the time it stamped at last. */
  async loadClock(store: Store): Promise<void> {
    const hlc = await store.get(keys.hlc)
    if (hlc !== undefined) this.hlc.observe(Number(decodeValue(hlc)))
    const wall = await store.get(keys.hlcWall)
    if (wall !== undefined) this.hlc.observeWall(Number(decodeValue(wall)))
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

  /** This peer's local-only state for a user. */
  localOf(id: UserId): UserLocal {
    return { deleted: this.deleted.get(id), fields: this.localFields.get(id) }
  }

  /** The imported server entry of a user, if one is kept. */
  importedOf(id: UserId): ServerEntry | undefined {
    return this.imported.get(id)
  }

  /** The users with an imported entry. */
  importedIds(): UserId[] {
    return [...this.imported.keys()]
  }

  /** The imported policies, by field. */
  importedPolicyEntries(): ReadonlyMap<string, PolicyEntry> {
    return this.importedPolicies
  }

  /** How many users' server entries come from an import. */
  get importedCount(): number {
    return this.imported.size
  }

  /** The users with device-specific values or a delete mark of this peer's. */
  localIds(): Set<UserId> {
    return new Set([...this.localFields.keys(), ...this.deleted.keys()])
  }

  /** Every user id with device-specific values or an imported entry. */
  userIds(): Iterable<UserId> {
    return [...this.localFields.keys(), ...this.imported.keys()]
  }

  /** This peer's device-specific values, by user. */
  allLocalFields(): Array<[UserId, LocalFields]> {
    return [...this.localFields]
  }

  /** The latest stamp at or below `bound` of the local-only state, or 0 (see ReplicaDocument.highestStampUpTo). */
  highestStampUpTo(bound: HlcStamp): HlcStamp {
    let high = 0
    const visit = (stamp: number): void => {
      if (stamp <= bound && stamp > high) high = stamp
    }
    for (const mark of this.deleted.values()) forEachStamp(mark, visit)
    for (const fields of this.localFields.values()) forEachStamp(fields, visit)
    for (const entry of this.imported.values()) forEachStamp(entry, visit)
    for (const entry of this.importedPolicies.values()) forEachStamp(entry, visit)
    return high
  }

  /** Takes note of every stamp of an imported server entry (as observeEntry does). */
  observeStamps(entry: ServerEntry): void {
    forEachStamp(entry, (stamp) => this.hlc.observe(stamp))
  }

  /** See WriteContext.setDeleted. */
  setDeleted(id: UserId, mark: DeleteMark | undefined, storeOps: StoreOp[]): void {
    if (mark === undefined) this.deleted.delete(id)
    else this.deleted.set(id, mark)
    storeOps.push(
      mark === undefined
        ? { type: 'del', key: keys.deleted(id) }
        : { type: 'put', key: keys.deleted(id), value: encodeValue(mark) },
    )
  }

  /** See WriteContext.setLocalFields. */
  setLocalFields(id: UserId, fields: LocalFields | undefined, storeOps: StoreOp[]): void {
    const empty = fields === undefined || Object.keys(fields.s).length === 0
    if (empty) this.localFields.delete(id)
    else this.localFields.set(id, fields)
    storeOps.push(
      empty
        ? { type: 'del', key: keys.localFields(id) }
        : { type: 'put', key: keys.localFields(id), value: encodeValue(fields) },
    )
  }

  /** See WriteContext.setImported. */
  setImported(id: UserId, entry: ServerEntry | undefined, storeOps: StoreOp[]): void {
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
  }

  /** See WriteContext.setImportedPolicy. */
  setImportedPolicy(field: string, entry: PolicyEntry | undefined, storeOps: StoreOp[]): void {
    if (entry === undefined) this.importedPolicies.delete(field)
    else {
      this.importedPolicies.set(field, entry)
      this.hlc.observe(entry.t)
    }
    storeOps.push(
      entry === undefined
        ? { type: 'del', key: keys.importedPolicy(field) }
        : { type: 'put', key: keys.importedPolicy(field), value: encodeValue(entry) },
    )
  }

  /** See WriteContext.setRecord. */
  setRecord(namespace: string, key: string, value: unknown, storeOps: StoreOp[]): void {
    if (namespace.includes('/')) throw new Error('a record namespace has no "/"')
    const full = `${namespace}/${key}`
    if (value === undefined) this.records.delete(full)
    else this.records.set(full, value)
    storeOps.push(
      value === undefined
        ? { type: 'del', key: keys.record(full) }
        : { type: 'put', key: keys.record(full), value: encodeValue(value) },
    )
  }

  /** The store ops that set peer-local records (see WriteContext.setRecord). */
  recordOps(ops: StoreOp[], records: ReadonlyArray<readonly [string, string, unknown]>): void {
    for (const [namespace, key, value] of records)
      ops.push({ type: 'put', key: keys.record(`${namespace}/${key}`), value: encodeValue(value) })
  }

  /** Sets peer-local records in memory once they are durable. */
  setRecords(records: ReadonlyArray<readonly [string, string, unknown]>): void {
    for (const [namespace, key, value] of records) this.records.set(`${namespace}/${key}`, value)
  }

  /**
   * The store ops of a wipe that clear local state: the deletes when asked,
   * the device-specific values when asked, the imported entries always.
   */
  wipeOps(ops: StoreOp[], deletes: boolean): void {
    if (deletes)
      for (const id of this.deleted.keys()) ops.push({ type: 'del', key: keys.deleted(id) })
    // Imported server entries are the server's data: a wipe clears them
    // with the document, and a full sync brings the server's own.
    for (const id of this.imported.keys()) ops.push({ type: 'del', key: keys.imported(id) })
    for (const field of this.importedPolicies.keys())
      ops.push({ type: 'del', key: keys.importedPolicy(field) })
  }

  /** The store ops that clear the device-specific values (a wipe of local state). */
  localFieldsOps(ops: StoreOp[]): void {
    for (const id of this.localFields.keys()) ops.push({ type: 'del', key: keys.localFields(id) })
  }

  /** Forgets the deletes in memory, once their removal is durable. */
  clearDeleted(): void {
    this.deleted.clear()
  }

  /** Forgets the device-specific values in memory, once their removal is durable. */
  clearLocalFields(): void {
    this.localFields.clear()
  }

  /** Forgets imported entries in memory, once a wipe's wipeOps are durable. */
  clearImported(): void {
    this.imported.clear()
    this.importedPolicies.clear()
  }
}
