/**
 * The device's sync lifecycle (SEMANTICS.md, "Sync lifecycle"): full and
 * delta syncs with the server, the offline gate, status per direction,
 * retries with backoff, and the retention wipe, every timer through the
 * injected clock. One exchange: send step 1 (our state vector); the server
 * answers with step 2 (what we lack; durable here before we go on) and its
 * own step 1 (what it now holds); we answer that with step 2 (what it
 * lacks). Our changes have arrived once a later answer of the server covers
 * our state vector (PROTOCOL.md, "Acknowledgement").
 */
import { SyncError } from '../core/errors.js'
import type { NewEvent } from '../core/events.js'
import { SyncRounds, type Kind } from './device-sync/rounds.js'
import { ServerExchange } from './device-sync/server-exchange.js'
import {
  asSyncError,
  linkWait,
  noServer,
  ONLINE_ONLY,
  refusedError,
  restoredBehindEpoch,
  restoredMessage,
  unreachable,
  userNamed,
} from './device-sync/sync-errors.js'
import { SyncStatusBook } from './device-sync/status-book.js'
import { SyncTimers } from './device-sync/timers.js'
import { GenerationMove } from './device-sync/generation-move.js'
import { moveGeneration } from './device-sync/move-round.js'
import type { GenerationStatement } from '../core/generation-statement.js'
import type { Connection } from '../core/transport.js'
import type {
  DeviceSyncApi,
  DeviceSyncOptions,
  Persisted,
  SyncStatus,
} from './device-sync/types.js'
import type { SyncAnswer, SyncSession } from './sync-session.js'
import { stageFullSyncWipe } from './device-sync/full-sync-wipe.js'
import * as retention from './device-sync/retention.js'
import { ackedOwn, holdsUnsent } from './device-sync/unsent.js'
import { writeRetained } from './device-sync/retained.js'
import type { LinkState, ServerLink } from './ws-client.js'

export type {
  DeviceSyncApi,
  DeviceSyncOptions,
  DirectionStatus,
  LinkFactory,
  SyncState,
  SyncStatus,
} from './device-sync/types.js'

const RECORD = ['sync', 'state'] as const
/** The device's sync controller. */
export class DeviceSync implements DeviceSyncApi {
  private persisted: Persisted
  /** Each direction's status, and the failures logged. */
  private readonly book: SyncStatusBook
  private readonly link: ServerLink | undefined
  /** The exchanges with the server (session, push, fetch; the last refusal). */
  private readonly server: ServerExchange
  /** Syncs, one at a time. */
  private readonly rounds: SyncRounds
  /** The delta, retry and retention timers. */
  private readonly timers: SyncTimers
  private persistedUseAt: number
  /** How often a use is stored (not on every call: a durable write per read). */
  private readonly persistEveryMs: number
  private closed = false
  /** The generation this device is on, and its move to its server's (issue 13). */
  private readonly generation: GenerationMove
  /** Callers of `whenReady` waiting for the first full sync. */
  private readyWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = []
  /** A full sync failed: the retry is a full sync too. */
  private fullPending = false

  private constructor(
    private readonly options: DeviceSyncOptions,
    persisted: Persisted,
  ) {
    this.persisted = persisted
    this.persistedUseAt = persisted.lastUsedAt
    this.persistEveryMs = Math.min(3_600_000, options.retentionMs / 10)
    this.generation = new GenerationMove(options.replica, options.clientKeys)
    this.link = options.link?.({
      paused: persisted.awaitingUse,
      onState: (state, detail, failedAttempt) => this.onLinkState(state, detail, failedAttempt),
      onConnected: (session) => this.onConnected(session),
      onError: (code, message) => this.onRemoteError(code, message),
      onGeneration: (statement, connection) => this.onGeneration(statement, connection),
      // A device still without its first full sync has nothing to carry
      // to a new generation: it comes back on its usual backoff.
      spreadsMove: () => this.persisted.offlineReady,
    })
    this.server = new ServerExchange(this.link, options)
    this.rounds = new SyncRounds(
      (round) => this.exchange(round.kind, round.quiet, round.automatic),
      () => this.closed,
      () => this.book.started(options.clock.now()),
    )
    this.timers = new SyncTimers(options)
    this.book = new SyncStatusBook(options.clock, (event) => this.log(event))
    const types = ['sync-started', 'sync-succeeded', 'sync-failed', 'roster-wiped'] as const
    this.book.restore(options.replica.events.query({ type: types, limit: 2 }))
  }

  /**
   * Starts the controller: wipes at once if the device was unused for
   * `retentionMs` while it was off, unless it holds own changes its server
   * lacks (./device-sync/unsent.ts: the retention timer's wipe then runs
   * now, a push first); else arms the retention timer.
   */
  static async start(options: DeviceSyncOptions): Promise<DeviceSync> {
    const now = options.clock.now()
    const stored = options.replica.record(...RECORD) as Persisted | undefined
    const persisted: Persisted = stored ?? {
      offlineReady: false,
      lastUsedAt: now,
      awaitingUse: false,
    }
    if (stored === undefined) await options.replica.setRecord(...RECORD, persisted)
    const expired =
      !persisted.awaitingUse &&
      now - persisted.lastUsedAt >= options.retentionMs &&
      !holdsUnsent(options.replica, persisted.acked)
    const sync = new DeviceSync(options, expired ? { ...persisted, awaitingUse: true } : persisted)
    if (expired) await sync.wipeForRetention()
    else sync.armRetention()
    return sync
  }

  /** The server link, when the device has one. */
  get serverLink(): ServerLink | undefined {
    return this.link
  }

  full(): Promise<void> {
    this.touch()
    return this.rounds.run('full', false)
  }

  delta(): Promise<void> {
    this.touch()
    return this.rounds.run(this.persisted.offlineReady ? 'delta' : 'full', false)
  }

  status(): SyncStatus {
    const link = this.link?.state ?? 'none'
    const warning = !this.persisted.offlineReady && link !== 'connected' ? ONLINE_ONLY : undefined
    return {
      serverToDevice: this.book.serverToDevice,
      deviceToServer: this.book.deviceToServer,
      offlineReady: this.persisted.offlineReady,
      link,
      lastUsedAt: this.persisted.lastUsedAt,
      ...(this.persisted.lastFullSyncAt === undefined
        ? {}
        : { lastFullSyncAt: this.persisted.lastFullSyncAt }),
      ...(warning === undefined ? {} : { warning }),
      ...linkWait(this.link),
    }
  }

  async whenIdle(): Promise<void> {
    await this.options.replica.drain()
    if (this.link === undefined) throw noServer('nothing it writes leaves it')
    await this.rounds.run(this.persisted.offlineReady ? 'delta' : 'full', true)
  }

  whenReady(): Promise<void> {
    if (this.closed) return Promise.reject(new SyncError('SYNC_FAILED', 'the device is closed'))
    if (this.persisted.offlineReady) return Promise.resolve()
    if (this.link === undefined) return Promise.reject(noServer('it never runs a full sync'))
    if (this.link.state === 'refused')
      return Promise.reject(refusedError(this.link.reason?.replace(/^\d+: /, '')))
    this.touch()
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }))
  }

  /** Marks the device used (an API call, a sign-in): retention counts from now; a wiped one syncs. */
  touch(): void {
    if (this.closed) return
    const now = this.options.clock.now()
    this.persisted = { ...this.persisted, lastUsedAt: now }
    if (this.persisted.awaitingUse) {
      this.persisted = { ...this.persisted, awaitingUse: false }
      this.persist()
      // Paused, the link's connection starts it; connected again meanwhile, now.
      if (this.link?.state === 'connected') this.auto()
      else this.link?.resume()
    } else if (now < this.persistedUseAt || now - this.persistedUseAt >= this.persistEveryMs) {
      this.persist()
    }
    this.armRetention()
  }

  /** Stops every timer and the link. */
  close(): void {
    this.closed = true
    this.timers.clearAll()
    this.link?.close()
    const closing = new SyncError('SYNC_FAILED', 'the device closed before the sync ended')
    this.book.closed(this.rounds.kind ?? 'delta', closing)
    this.server.rejectWaiters(closing)
    this.rounds.close(closing)
    for (const w of this.readyWaiters.splice(0)) w.reject(closing)
  }

  private persist(): void {
    this.persistedUseAt = this.persisted.lastUsedAt
    this.options.replica.setRecord(...RECORD, this.persisted).catch(() => {
      // A failing store fails every write; kept in memory, stored with its next change.
    })
  }

  // ---- rounds -------------------------------------------------------------

  /** A sync started by the controller itself: failures are in the status and the log. */
  private auto(): void {
    if (this.closed || this.link === undefined || this.persisted.awaitingUse) return
    if (this.rounds.busy) return
    const kind = this.persisted.offlineReady && !this.fullPending ? 'delta' : 'full'
    this.rounds.run(kind, false, true).catch(() => undefined)
  }

  private async exchange(asked: Kind, quiet: boolean, automatic: boolean): Promise<void> {
    // Wiped for retention behind it (a round queued by a hello): it waits for use.
    if (automatic && this.persisted.awaitingUse) return
    const { clock } = this.options // whenIdle() behind the first full sync needs only a delta:
    const kind = quiet && this.persisted.offlineReady && !this.fullPending ? 'delta' : asked
    this.timers.clearRetry()
    this.book.started(clock.now())
    const outage = this.book.failingWith !== undefined
    // A quiet round (whenIdle) logs a full sync (maybe the first), not a
    // delta; one in an outage is not waited for (the round goes on at once).
    const logged = !quiet || kind === 'full'
    if (logged || outage) await this.book.logStarted(kind, outage)
    try {
      const session = await this.server.session(automatic)
      this.server.clearRemoteError()
      const { replica } = this.options
      // On another generation than its server's: move, push nothing old.
      const moving = await this.generation.ensure()
      // Holding nothing yet, the first answer brings the whole roster.
      const empty = replica.doc.store.clients.size === 0
      // Push first: a full sync must not clear changes the server lacks.
      let pushed = moving
        ? undefined
        : await this.server.push(session, () => {
            // A delta has what it lacked once the first answer is durable here.
            if (kind === 'delta') this.book.serverToDevice = { state: 'success', at: clock.now() }
          })
      // The server lacks operations of its own this device holds: its data
      // directory was restored from a backup. Its document is fetched
      // whole, this device's own entries carried over it (a move to the
      // same generation), so the rolled-back operations go.
      const generation = this.generation.current().id
      const lost = pushed ? await this.server.lostSince(session, pushed, generation) : 0
      if (lost > 0) await this.restored(restoredMessage(lost))
      // (A hello may have called for a move during the push: ensure waits
      // for one it is staging, so no second staged wipe queues behind it.)
      if (await this.generation.ensure()) {
        const at = await moveGeneration(this.generation, this.server, session, {
          clock,
          done: (when) => [...RECORD, this.afterFullSync(when)],
          deviceId: replica.writerId,
          // A full sync asked for and failed (the switch cut it) is this move.
          deletes: kind === 'full' || this.fullPending,
        })
        this.persistedUseAt = at
        if (lost > 0) this.server.refetched(session)
        if (!this.persisted.awaitingUse) this.persisted = this.afterFullSync(at)
        this.fullPending = false
        for (const w of this.readyWaiters.splice(0)) w.resolve()
        this.book.serverToDevice = { state: 'success', at }
        this.book.deviceToServer = { state: 'success', at }
      } else if (pushed === undefined) {
        throw new SyncError('SYNC_FAILED', 'the generation move did not start')
      } else if (kind === 'full') {
        this.book.deviceToServer = { state: 'success', at: clock.now() }
        // One reading of the clock: the status and the record say the same time.
        const at = empty ? await this.fullSyncFetched() : await this.refetch(session, pushed)
        this.fullPending = false
        // The fetch is durable and the device offline-ready: whenReady() holds.
        for (const w of this.readyWaiters.splice(0)) w.resolve()
        this.book.serverToDevice = { state: 'success', at }
      } else {
        this.book.deviceToServer = { state: 'success', at: clock.now() }
        await replica.write((ctx) => ctx.dropImports()) // spent: the server's roster is here
      }
      // Kept by a retention wipe: into the fetched roster, and pushed (./device-sync/retained.ts).
      if (this.persisted.offlineReady && (await writeRetained(replica)) > 0)
        pushed = await this.server.push(session, () => undefined)
      const acked = pushed && ackedOwn(replica, pushed.theirs, this.persisted.acked) // ./device-sync/unsent.ts
      if (acked) {
        this.persisted = { ...this.persisted, acked }
        this.persist()
      }
      this.timers.resetBackoff()
      this.book.succeeded()
      this.server.saved()
      if (logged || outage) await this.log({ type: 'sync-succeeded', kind })
      this.scheduleDelta()
    } catch (cause) {
      // An unfinished move is undone: the old generation is loaded again.
      await this.generation.abandon().catch(() => undefined)
      // A refusal from the server (it closes the link with the error's code,
      // after an error message) is the cause: say which. Refused for good,
      // the link says so by the time a round cut by that close gets here.
      const refusal = this.server.remoteError
      if (this.server.refusedOwnEpoch(this.options.replica.writerId))
        await this.restored(restoredBehindEpoch)
      const error =
        this.link?.state === 'refused'
          ? refusedError(this.link.reason)
          : asSyncError(cause, refusal, this.link?.reason)
      const shown =
        refusal === undefined || refusal.code === 'STORAGE_FAILED'
          ? { code: error.code, message: error.message }
          : refusal
      await this.book.failed(kind, shown, (status) => status.state === 'in-progress')
      if (kind === 'full') this.fullPending = true
      this.scheduleRetry(error)
      throw error
    }
  }

  /** Its server was restored from a backup: the next round fetches its roster whole (GenerationMove.refetch). */
  private async restored(message: string): Promise<void> {
    await this.log({ type: 'restore-detected', message })
    await this.generation.refetch()
  }

  /**
   * The rest of a full sync once the push is acknowledged (again if this
   * device wrote since: device-sync/full-sync-wipe.ts): a staged wipe, the
   * roster fetched whole, then one batch with the cleared deletes (rule 3)
   * and the record of success, so a crash restarts the device as before or
   * after; its own writes wait in the queue until then. Returns the time.
   */
  private async refetch(session: SyncSession, acknowledged: SyncAnswer): Promise<number> {
    const { replica, clock } = this.options
    await stageFullSyncWipe(replica, acknowledged, () => this.server.push(session, () => undefined))
    let committed = false
    try {
      await this.server.fetch(session)
      const at = clock.now()
      const done = this.afterFullSync(at)
      await replica.commitWipe([[...RECORD, done]])
      committed = true
      this.persistedUseAt = done.lastUsedAt
      // A use meanwhile is kept; a retention wipe queued (run after the commit) stores its own.
      if (!this.persisted.awaitingUse) this.persisted = this.afterFullSync(at)
      return at
    } finally {
      if (!committed) await replica.abandonWipe()
    }
  }

  /** A first full sync is done (its first answer brought the roster): records it, durably. */
  private async fullSyncFetched(): Promise<number> {
    const at = this.options.clock.now()
    this.persisted = this.afterFullSync(at)
    this.persistedUseAt = this.persisted.lastUsedAt
    await this.options.replica.setRecord(...RECORD, this.persisted)
    return at
  }

  /** The persisted state after a full sync completed at `at`. */
  private afterFullSync(at: number): Persisted {
    return { ...this.persisted, offlineReady: true, lastFullSyncAt: at }
  }

  // ---- timers -------------------------------------------------------------

  /** The next delta sync, `deltaIntervalMs` after this completion. */
  private scheduleDelta(): void {
    this.timers.clearDelta()
    if (this.closed) return
    this.timers.scheduleDelta(() => this.auto())
  }

  /** A failed sync comes back after a backoff with jitter, up to a bound. */
  private scheduleRetry(error: SyncError): void {
    this.timers.clearRetry()
    // The server refusing the device is final; a retry cannot change it.
    if (this.closed || this.link === undefined || this.link.state === 'refused') return
    if (error.code === 'NO_SERVER') return
    this.timers.scheduleRetry(() => this.auto())
  }

  private armRetention(): void {
    const { clock, retentionMs } = this.options
    this.timers.clearRetention()
    if (this.closed || this.persisted.awaitingUse) return
    this.timers.armRetention(
      () => {
        if (clock.now() - this.lastUse() >= retentionMs) void this.retire().catch(() => undefined)
        else this.armRetention()
      },
      Math.max(0, this.lastUse() + retentionMs - clock.now()),
    )
  }

  /** Last use; one in the future (the clock set back since) counts from now (years probe). */
  private lastUse(): number {
    const now = this.options.clock.now()
    if (this.persisted.lastUsedAt <= now) return this.persisted.lastUsedAt
    this.persisted = { ...this.persisted, lastUsedAt: now }
    this.persist() // kept in memory only, every restart counted from itself (review)
    return now
  }

  /**
   * The retention timer's wipe, after a push (a periodic device's edits go
   * first); a failed push is named in the wipe's event
   * (./device-sync/retention.ts), and what the server lacked is kept
   * (./device-sync/retained.ts). Used meanwhile, it does not wipe.
   */
  private async retire(): Promise<void> {
    let note: string | undefined
    if (this.link !== undefined && this.link.state !== 'refused' && this.persisted.offlineReady)
      note = await this.rounds
        .run('delta', true, false)
        .then(() => undefined, retention.pushFailedNote)
    else if (this.link?.state === 'refused') note = retention.REFUSED_NOTE
    if (this.closed || this.persisted.awaitingUse) return
    if (this.options.clock.now() - this.lastUse() < this.options.retentionMs)
      return this.armRetention()
    await this.wipeForRetention(note)
  }

  /** Unused for `retentionMs`: drops roster and local state, waits for a use (then a full sync). */
  private async wipeForRetention(note?: string): Promise<void> {
    const { replica, retentionMs } = this.options
    this.link?.pause()
    this.timers.clearDelta()
    this.timers.clearRetry()
    this.persisted = { ...this.persisted, offlineReady: false, awaitingUse: true }
    // The record goes with the wipe: no crash leaves an empty roster said offline-ready.
    const record = [...RECORD, this.persisted] as const
    await replica.wipe(retention.wipeOptions(replica, record, this.link, note, retentionMs))
    this.persistedUseAt = this.persisted.lastUsedAt
    this.book.reset()
  }

  /**
   * The server's hello named another generation: the move is staged first;
   * the next round (a delta, unless a full sync failed: the move is that
   * one) completes it.
   */
  private async onGeneration(
    statement: GenerationStatement | undefined,
    connection: Connection,
  ): Promise<void> {
    if (!(await this.generation.learnOn(statement, connection)) || this.closed) return
    this.rounds.run(this.fullPending ? 'full' : 'delta', false, true).catch(() => undefined)
  }

  private onConnected(session: SyncSession): void {
    this.server.connected(session, this.generation.current().id)
    // Going online pushes offline changes (and takes what the server has).
    this.auto()
  }

  private onLinkState(state: LinkState, detail?: string, failedAttempt = false): void {
    if (state === 'connected' || state === 'connecting') return
    const error =
      state === 'refused' ? refusedError(detail) : unreachable(state, detail, this.link?.reason)
    const kind = this.persisted.offlineReady ? 'delta' : 'full'
    if (state === 'refused') {
      // For good: both directions say so before whenReady() rejects (logged once).
      if (!this.closed) void this.book.failed(kind, error, () => true)
      for (const w of this.readyWaiters.splice(0)) w.reject(error)
    }
    // Unreachable before any sync ran, or an attempt to reach it failed (a
    // live device retrying on its own): no round reports it, so the status
    // and the log say so (SyncStatusBook.linkFailed; logged once).
    const reported = this.closed || this.server.waiting || this.rounds.busy
    if (state !== 'paused' && state !== 'closed' && state !== 'refused' && !reported)
      void this.book.linkFailed(kind, error, failedAttempt)
    if (this.server.waiting) this.server.rejectWaiters(error)
  }

  private onRemoteError(code: string, message: string): void {
    // The server did not take this device's change: it keeps its value (SEMANTICS.md, "Event log").
    if (this.server.noteRemoteError(code, message))
      void this.log({ type: 'save-to-server-failed', code, message, ...userNamed(message) })
  }

  private async log(event: NewEvent): Promise<void> {
    const deviceId = event.deviceId ?? this.options.replica.writerId // as its user events
    try {
      await this.options.replica.writeMeta((ctx) => ctx.event({ ...event, deviceId }))
    } catch {
      // The log is best effort here: a failing store already fails every write.
    }
  }
}
