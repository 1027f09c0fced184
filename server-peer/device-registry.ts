/**
 * The server's device registry: who joined, from where, when they were first
 * and last seen, how each sync direction last went, and who is revoked.
 * Kept in memory and persisted as peer-local records of the server's replica
 * (namespace `device`), so a restarted server still knows its devices and
 * still refuses the revoked ones.
 *
 * What matters is stored at once: a new device, a changed name or serial, a
 * revocation, a sync direction that changed state. What only moves on every
 * connection (last seen, the address with its port) is kept in memory and
 * stored with the next such write, by a flush at most `LAZY_FLUSH_MS` later,
 * or on close: a server with hundreds of devices reconnecting would
 * otherwise make one durable write per connection and per disconnection,
 * and its answers would wait behind them (issue 5). One write batch holds
 * at most `limits.deviceRecordsPerBatchMax` records, and the rest follow
 * in the next batches (one after another, each in its own turn of the
 * event loop): 2,000 devices joining at once would otherwise be one batch
 * of tens of ms, and a connected device's message waits for it (issue 11).
 *
 * It is also the front door's memory (issue 11): ids are kept exactly as
 * the device gave them, and one that differs from a registered id only by
 * case is refused (`ID_CONFLICT`); names and serials are cleaned of
 * control characters and cut to their named limits; the registry holds at
 * most `limits.devicesRegisteredMax` devices, `limits.devicesPendingMax` of
 * them waiting for approval.
 */
import { foldCase } from '../core/fold-case.js'
import type { Clock } from '../core/clock.js'
import {
  IdConflictError,
  PeerPendingError,
  PeerRevokedError,
  RegistryFullError,
  type RostersyncError,
} from '../core/errors.js'
import { cleanLabel, idFold, isReservedWriterId, SERVER_ID } from '../core/ids.js'
import { limits } from '../core/limits.js'
import type { MetaContext, Replica } from '../peers/replica.js'

/** State of one sync direction as the server saw it last. */
export interface DirectionState {
  readonly state: 'not-started' | 'success' | 'failed'
  /** When it last changed (ms since the epoch). */
  readonly at?: number
  /** The error code of the last failure. */
  readonly error?: string
}

/** One registered device. */
export interface DeviceRecord {
  readonly id: string
  readonly name: string
  /** The serial number the device joined with (its id unless it gave one). */
  readonly serial: string
  /** The address it last connected from. */
  readonly address: string
  readonly firstSeen: number
  readonly lastSeen: number
  /** `connected`, `disconnected`, `pending` (waits for approval) or `revoked`. */
  readonly state: 'connected' | 'disconnected' | 'pending' | 'revoked'
  readonly revoked: boolean
  /** Registered in approval mode and not approved yet: refused with `PEER_PENDING`. */
  readonly pending: boolean
  readonly connected: boolean
  /**
   * The fingerprint of the public key bound to the id (`keyFingerprint` in
   * core/signing.ts), absent while none is: compare it with the one the
   * terminal shows before approving it.
   */
  readonly keyFingerprint?: string
  readonly sync: {
    readonly serverToDevice: DirectionState
    readonly deviceToServer: DirectionState
  }
  /**
   * It wrote something the server took (an item under a clientID of its
   * own): a full registry does not forget it to make room. An update that
   * brings nothing does not count (a probe: made-up ids each sending one
   * could never be forgotten). Absent on records from before it was kept.
   */
  readonly wrote?: boolean
}

const NAMESPACE = 'device'
const NOT_STARTED: DirectionState = { state: 'not-started' }
/** The longest a last-seen time or address stays in memory only. */
export const LAZY_FLUSH_MS = 5 * 60_000

/** Registry of a site's devices. */
export class DeviceRegistry {
  private readonly devices = new Map<string, DeviceRecord>()
  /** Registered id by its case fold (ID_CONFLICT). */
  private readonly byFold = new Map<string, string>()
  /** How many records are pending, kept so that admission need not count. */
  private pendingCount = 0
  /** How many records are revoked (they do not count toward the limit). */
  private revokedCount = 0
  /** Open connections per device (a device may briefly have two while reconnecting). */
  private readonly open = new Map<string, number>()
  /** Devices whose record in memory is newer than the stored one. */
  private readonly dirty = new Set<string>()
  private flushTimer: unknown = undefined
  /** The running flush (one at a time), until it has stored what it must. */
  private flushing: Promise<void> | undefined
  /** A flush was asked for (a change to store now, the lazy timer) since the running flush's last batch began. */
  private storeAgain = false
  private closed = false
  private changeCount = 0

  /** A device was forgotten to make room (its key binding goes too: server-peer/create-server.ts). */
  onForgotten: ((id: string) => void) | undefined

  constructor(
    private readonly clock: Clock,
    private readonly replica: Replica,
  ) {
    for (const [id, value] of replica.recordsOf(NAMESPACE)) {
      const stored = value as Omit<DeviceRecord, 'connected' | 'state' | 'pending'> & {
        pending?: boolean
      }
      // Nothing is connected to a server that just started; records from
      // before approval mode existed are approved.
      const record = withState({ ...stored, pending: stored.pending === true, connected: false })
      this.devices.set(id, record)
      this.byFold.set(idFold(id), id)
      if (record.pending) this.pendingCount++
      if (record.revoked) this.revokedCount++
    }
  }

  /**
   * Decides whether a device id with the site key may sync; undefined
   * admits it. Refuses `ID_CONFLICT` (reserved, or a registered id in
   * another case), `PEER_REVOKED`, `PEER_PENDING` (waits for approval) and
   * `REGISTRY_FULL`. With `approval`, an id never seen before is registered
   * as pending (and refused) until {@link approve}.
   */
  admission(
    id: string,
    join: { name: string; address: string; serial: string },
    approval: boolean,
    proven: () => boolean = () => true,
  ): RostersyncError | undefined {
    if (isReservedWriterId(id)) return new IdConflictError(id, SERVER_ID)
    const taken = this.byFold.get(idFold(id))
    if (taken !== undefined && taken !== id) return new IdConflictError(id, taken)
    const prev = this.devices.get(id)
    if (prev?.revoked === true) return new PeerRevokedError(id)
    if (prev?.pending === true) {
      // Still asking: the administrator sees when and from where.
      this.set(withState({ ...prev, address: join.address, lastSeen: this.clock.now() }), false)
      return new PeerPendingError(id)
    }
    if (prev !== undefined) return undefined
    if (!approval) {
      // Room is made (makeRoom) only once the new id is admitted (seen):
      // a join refused later (its proof, its key) forgets no one.
      return this.full() && this.forgettable(false) === undefined
        ? new RegistryFullError('devices', limits.devicesRegisteredMax)
        : undefined
    }
    // Approval mode: only a device waiting for approval makes room.
    // Room is made for a join whose proof holds only: joins with the site
    // key alone (no key, a made-up proof) cannot push out a device waiting.
    if (
      (this.full() || this.pendingCount >= limits.devicesPendingMax) &&
      !(proven() && this.makeRoom(true))
    )
      return this.full()
        ? new RegistryFullError('devices', limits.devicesRegisteredMax)
        : new RegistryFullError('devices waiting for approval', limits.devicesPendingMax)
    const now = this.clock.now()
    this.pendingCount++
    this.set(
      withState({
        id,
        name: cleanLabel(join.name, limits.deviceNameCharsMax) || id,
        serial: cleanLabel(join.serial, limits.deviceSerialCharsMax) || id,
        address: join.address,
        firstSeen: now,
        lastSeen: now,
        revoked: false,
        pending: true,
        connected: false,
        sync: { serverToDevice: NOT_STARTED, deviceToServer: NOT_STARTED },
        wrote: false,
      }),
      true,
    )
    return new PeerPendingError(id)
  }

  /**
   * Approves a pending device durably: it syncs from its next connection
   * on. True when it is approved now (or was already); false if unknown.
   * A revoked device stays refused: rejects with `PEER_REVOKED`.
   */
  async approve(id: string): Promise<boolean> {
    const prev = this.devices.get(id)
    if (prev === undefined) return false
    if (prev.revoked) throw new PeerRevokedError(id)
    if (!prev.pending) return true
    this.pendingCount--
    this.devices.set(id, withState({ ...prev, pending: false }))
    this.changeCount++
    this.dirty.add(id)
    await this.store((ctx) => ctx.event({ type: 'device-approved', deviceId: id }), id)
    return true
  }

  /**
   * Puts a registered device back to waiting for approval, durably (the
   * administrator's key reset): refused with `PEER_PENDING` until
   * {@link approve}. False if unknown; rejects `PEER_REVOKED` for a revoked one.
   */
  async hold(id: string): Promise<boolean> {
    const prev = this.devices.get(id)
    if (prev === undefined) return false
    if (prev.revoked) throw new PeerRevokedError(id)
    if (prev.pending) return true
    this.pendingCount++
    this.devices.set(id, withState({ ...prev, pending: true }))
    this.changeCount++
    this.dirty.add(id)
    await this.store(undefined, id)
    return true
  }

  /** Records a device joining; returns whether it is new. */
  seen(id: string, rawName: string, address: string, rawSerial = id): boolean {
    const now = this.clock.now()
    const prev = this.devices.get(id)
    // A device names itself: no escape sequences, no 10,000 characters.
    const name = cleanLabel(rawName, limits.deviceNameCharsMax) || id
    const serial = cleanLabel(rawSerial, limits.deviceSerialCharsMax) || id
    if (prev === undefined && this.full()) this.makeRoom(false)
    this.open.set(id, (this.open.get(id) ?? 0) + 1)
    const changed = prev === undefined || prev.name !== name || prev.serial !== serial
    this.set(
      withState({
        id,
        name,
        serial,
        address,
        firstSeen: prev?.firstSeen ?? now,
        lastSeen: now,
        revoked: prev?.revoked ?? false,
        pending: prev?.pending ?? false,
        connected: true,
        sync: prev?.sync ?? { serverToDevice: NOT_STARTED, deviceToServer: NOT_STARTED },
        ...(prev === undefined
          ? { wrote: false }
          : prev.wrote === undefined
            ? {}
            : { wrote: prev.wrote }),
      }),
      changed,
    )
    return prev === undefined
  }

  /** `id` wrote something the server took (see DeviceRecord.wrote): stored at once, the first time. */
  wrote(id: string): void {
    const prev = this.devices.get(id)
    if (prev === undefined || prev.wrote === true) return
    this.set(withState({ ...prev, wrote: true }), true)
  }

  /** Marks one connection of a device closed. */
  left(id: string): void {
    const prev = this.devices.get(id)
    const open = Math.max(0, (this.open.get(id) ?? 1) - 1)
    this.open.set(id, open)
    if (prev !== undefined)
      this.set(withState({ ...prev, connected: open > 0, lastSeen: this.clock.now() }), false)
  }

  /**
   * Notes how a sync direction went. Persisted when the state or error
   * changes; a run of successes only moves the time in memory, so heavy
   * edit traffic does not turn into registry writes. Returns the state
   * before (undefined for an unknown device).
   */
  direction(
    id: string,
    direction: 'serverToDevice' | 'deviceToServer',
    state: 'success' | 'failed',
    error?: string,
  ): DirectionState | undefined {
    const prev = this.devices.get(id)
    if (prev === undefined) return undefined
    const now = this.clock.now()
    const before = prev.sync[direction]
    const next: DirectionState =
      error === undefined ? { state, at: now } : { state, at: now, error }
    const record = withState({
      ...prev,
      lastSeen: now,
      sync: { ...prev.sync, [direction]: next },
    })
    this.set(record, before.state !== state || before.error !== error)
    return before
  }

  /**
   * Forgets a device, durably: its record goes, and the id is new to the
   * registry if it joins again. A revoked device is not forgotten (its
   * record is what keeps it refused): rejects `PEER_REVOKED`. Returns false
   * if unknown.
   */
  async forget(id: string, why = 'by the administrator'): Promise<boolean> {
    const prev = this.devices.get(id)
    if (prev === undefined) return false
    if (prev.revoked) throw new PeerRevokedError(id)
    this.drop(prev)
    await this.replica.writeMeta((ctx) => {
      ctx.setRecord(NAMESPACE, id, undefined)
      ctx.event({ type: 'device-forgotten', deviceId: id, message: why })
    })
    return true
  }

  /** Whether the registry holds its limit (revoked records do not count: only the administrator makes them). */
  private full(): boolean {
    return this.devices.size - this.revokedCount >= limits.devicesRegisteredMax
  }

  /**
   * The device a full registry forgets for a new id (`pending`: among those
   * waiting for approval, else among the approved): the one away longest
   * among those that never wrote anything the server took (`wrote`) and are not
   * connected, once away `limits.deviceUnsyncedForgetMs`.
   */
  private forgettable(pending: boolean): DeviceRecord | undefined {
    const before = this.clock.now() - limits.deviceUnsyncedForgetMs
    let oldest: DeviceRecord | undefined
    for (const record of this.devices.values()) {
      if (record.revoked || record.connected || record.pending !== pending) continue
      if (record.wrote === true) continue
      // A record from before `wrote` was kept: as it was judged then.
      if (record.wrote === undefined && record.sync.deviceToServer.state !== 'not-started') continue
      if (record.lastSeen > before) continue
      if (oldest === undefined || record.lastSeen < oldest.lastSeen) oldest = record
    }
    return oldest
  }

  /** Forgets the device `forgettable` names, if any; true when it made room. */
  private makeRoom(pending: boolean): boolean {
    const oldest = this.forgettable(pending)
    if (oldest === undefined) return false
    const id = oldest.id
    this.drop(oldest)
    void this.replica
      .writeMeta((ctx) => {
        ctx.setRecord(NAMESPACE, id, undefined)
        ctx.event({
          type: 'device-forgotten',
          deviceId: id,
          message: 'to make room in a full registry: it never wrote anything and was away an hour',
        })
      })
      .catch(() => undefined)
    this.onForgotten?.(id)
    return true
  }

  /** Removes a record from memory (forget, makeRoom). */
  private drop(record: DeviceRecord): void {
    this.devices.delete(record.id)
    this.byFold.delete(idFold(record.id))
    this.open.delete(record.id)
    this.dirty.delete(record.id)
    if (record.pending) this.pendingCount--
    this.changeCount++
  }

  /** Revokes a device durably; it is refused from then on. Returns false if unknown. */
  async revoke(id: string): Promise<boolean> {
    const prev = this.devices.get(id)
    if (prev === undefined) return false
    // Revoked already: nothing changes, and nothing is logged again.
    if (prev.revoked) return true
    if (prev.pending) this.pendingCount--
    this.revokedCount++
    const record = withState({ ...prev, revoked: true, pending: false, connected: false })
    this.devices.set(id, record)
    this.changeCount++
    this.dirty.add(id)
    // Not stored on failure: still revoked in memory (refused from now on),
    // and stored with the next registry write.
    await this.store((ctx) => ctx.event({ type: 'device-revoked', deviceId: id }), id)
    return true
  }

  /**
   * Grows by one or more whenever a record changes in memory (a join, a
   * sync direction, a revocation): the admin page's live updates compare it.
   */
  get changes(): number {
    return this.changeCount
  }

  isRevoked(id: string): boolean {
    return this.devices.get(id)?.revoked === true
  }

  /** One device, or undefined. */
  get(id: string): DeviceRecord | undefined {
    return this.devices.get(id)
  }

  /** Devices, ordered by id; `nameContains` filters by partial name (case-insensitive). */
  list(filter: { nameContains?: string } = {}): DeviceRecord[] {
    const needle = filter.nameContains === undefined ? undefined : foldCase(filter.nameContains)
    return [...this.devices.values()]
      .filter((d) => needle === undefined || foldCase(d.name).includes(needle))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }

  /**
   * Stores every record changed since it was last stored (best effort: the
   * registry is bookkeeping), `deviceRecordsPerBatchMax` per write batch,
   * one batch after another. Called on close, by the lazy flush, and for a
   * change stored at once. One flush runs at a time: a change made while
   * it runs is stored by it.
   */
  flush(): Promise<void> {
    this.clock.clearTimeout(this.flushTimer)
    this.flushTimer = undefined
    if (this.flushing !== undefined) {
      // It stores one more batch at least, with what changed meanwhile.
      this.storeAgain = true
      return this.flushing
    }
    if (this.dirty.size === 0) return Promise.resolve()
    const flushing = this.flushLoop()
    // Not yet cleared by the loop's end (it awaits its first batch first).
    this.flushing = flushing
    return flushing
  }

  /**
   * Stores batches while the last one was full, a change to store at once
   * came meanwhile, or the registry is closing; what changed only lazily
   * meanwhile waits for the lazy flush.
   */
  private async flushLoop(): Promise<void> {
    try {
      for (;;) {
        this.storeAgain = false
        const written = await this.store()
        const more = written >= limits.deviceRecordsPerBatchMax || this.storeAgain || this.closed
        if (this.dirty.size === 0 || !more) return
      }
    } catch {
      // A failing store is reported on every roster write; the records stay
      // dirty in memory and are stored with the next write (or close).
      if (!this.closed) this.armFlush()
    } finally {
      // Cleared in the turn the loop decides to end: a change made after
      // it starts a new flush.
      this.flushing = undefined
    }
  }

  /**
   * Writes dirty records, `first` first and at most
   * `deviceRecordsPerBatchMax` in all (and `also`, in the same batch).
   * The records are clean once the batch is durable; a failed batch marks
   * them dirty again, and rejects. Resolves with how many it wrote.
   */
  private async store(also?: (ctx: MetaContext) => void, first?: string): Promise<number> {
    let written: string[] = []
    try {
      await this.replica.writeMeta((ctx) => {
        written = this.writeDirty(ctx, first)
        also?.(ctx)
      })
    } catch (error) {
      for (const id of written) this.dirty.add(id)
      throw error
    }
    return written.length
  }

  /** Stores the dirty records within LAZY_FLUSH_MS, unless a flush is due already. */
  private armFlush(): void {
    if (this.flushTimer === undefined)
      this.flushTimer = this.clock.setTimeout(() => void this.flush(), LAZY_FLUSH_MS)
  }

  /**
   * The server is closing (its connections are closed): every device is
   * disconnected as of now, and what is still in memory is stored.
   */
  async close(): Promise<void> {
    const now = this.clock.now()
    for (const [id, open] of this.open) {
      const prev = this.devices.get(id)
      if (open > 0 && prev !== undefined) {
        this.devices.set(id, withState({ ...prev, connected: false, lastSeen: now }))
        this.changeCount++
        this.dirty.add(id)
      }
    }
    this.open.clear()
    this.closed = true
    await this.flush()
  }

  /**
   * Keeps a record; stores it (and every other dirty one) now when `now`,
   * else within LAZY_FLUSH_MS.
   */
  private set(record: DeviceRecord, now: boolean): void {
    this.devices.set(record.id, record)
    this.changeCount++
    this.byFold.set(idFold(record.id), record.id)
    this.dirty.add(record.id)
    // After close (a connection's close event coming late) nothing is stored.
    if (this.closed) return
    if (now) void this.flush()
    else this.armFlush()
  }

  /**
   * Writes dirty records into a write batch, `first` (if dirty) first, at
   * most `deviceRecordsPerBatchMax` in all, in the order they became dirty,
   * and returns their ids. Cleared now, inside the batch: a change made
   * while the batch is being written marks its device dirty again; a
   * failed batch marks them dirty again (store).
   */
  private writeDirty(ctx: MetaContext, first?: string): string[] {
    const ids: string[] = []
    const take = (id: string): void => {
      this.dirty.delete(id)
      ids.push(id)
      const record = this.devices.get(id)
      if (record !== undefined) ctx.setRecord(NAMESPACE, id, stored(record))
    }
    if (first !== undefined && this.dirty.has(first)) take(first)
    for (const id of this.dirty) {
      if (ids.length >= limits.deviceRecordsPerBatchMax) break
      take(id)
    }
    return ids
  }
}

function withState(record: Omit<DeviceRecord, 'state'>): DeviceRecord {
  return {
    ...record,
    state: record.revoked
      ? 'revoked'
      : record.pending
        ? 'pending'
        : record.connected
          ? 'connected'
          : 'disconnected',
  }
}

function stored(record: DeviceRecord): Omit<DeviceRecord, 'connected' | 'state'> {
  const { connected: _connected, state: _state, ...rest } = record
  return rest
}
