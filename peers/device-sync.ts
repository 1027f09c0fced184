/**
 * The device's sync lifecycle (SEMANTICS.md, "Sync lifecycle"): full and
 * delta syncs with the server, the offline gate, status per direction,
 * retries with backoff, and the retention wipe. Every timer goes through the
 * injected clock.
 *
 * One exchange is: send step 1 (our state vector); the server answers with
 * step 2 (what we lack; durable here before we go on) and its own step 1
 * (what it now holds); we answer that with step 2 (what it lacks). Our
 * changes have arrived once a later answer of the server covers our state
 * vector (PROTOCOL.md, "Acknowledgement").
 */
import * as Y from 'yjs'
import { retryDelayMs } from '../core/backoff.js'
import type { Clock } from '../core/clock.js'
import { RostersyncError, SyncError } from '../core/errors.js'
import type { NewEvent } from '../core/events.js'
import { netLimits } from '../core/limits.js'
import { WipeSkippedError, type Replica } from './replica.js'
import type { SyncAnswer, SyncSession } from './sync-session.js'
import type { LinkState, ServerLink, ServerLinkOptions } from './ws-client.js'

/** State of one sync direction (API.md). */
export type SyncState = 'not-started' | 'in-progress' | 'success' | 'failed'

/** One direction's status. */
export interface DirectionStatus {
  readonly state: SyncState
  /** When it reached this state, ms since the epoch. */
  readonly at?: number
  readonly error?: { readonly code: string; readonly message: string }
}

/** `device.sync.status()`. */
export interface SyncStatus {
  readonly serverToDevice: DirectionStatus
  readonly deviceToServer: DirectionStatus
  /** True once a full sync has succeeded (and no wipe since): the device may work offline. */
  readonly offlineReady: boolean
  /** The link to the server: connected, or why not. */
  readonly link: LinkState | 'none'
  /**
   * While the link is not connected: why (the last attempt's error, or the
   * close code and reason: `connect ECONNREFUSED …`, `1006`, `1008: …`).
   */
  readonly waiting?: string
  /** While the link waits to reconnect: when its next attempt is due, ms since the epoch. */
  readonly nextAttemptAt?: number
  readonly lastFullSyncAt?: number
  /** When the device was last used (API call or sign-in). */
  readonly lastUsedAt: number
  /**
   * Set while what the device serves may be incomplete: it has not finished
   * a full sync and is not connected to the server (online only).
   */
  readonly warning?: string
}

/** `device.sync` (API.md). */
export interface DeviceSyncApi {
  /** Pushes unsent changes, clears the replicated roster, fetches it whole. */
  full(): Promise<void>
  /** Exchanges only what each side lacks. */
  delta(): Promise<void>
  status(): SyncStatus
  /** Resolves when nothing is left to send to or receive from the server. */
  whenIdle(): Promise<void>
  /**
   * Resolves once the device is offline-ready: its first full sync has
   * succeeded (at once if it already has). Rejects if the device closes
   * first (`SYNC_FAILED`), has no server (`NO_SERVER`), or is refused by
   * the server for good (`AUTH_FAILED`, `PEER_REVOKED`). A failed attempt
   * does not reject it: the sync retries with its backoff. Counts as use
   * (retention), so a device wiped for retention starts its full sync.
   */
  whenReady(): Promise<void>
}

/** The link handlers the controller needs; createDevice builds the link with them. */
export type LinkFactory = (
  handlers: Pick<ServerLinkOptions, 'onState' | 'onConnected' | 'onError' | 'paused'>,
) => ServerLink

/** Options of {@link DeviceSync}. */
export interface DeviceSyncOptions {
  readonly replica: Replica
  readonly clock: Clock
  readonly random: () => number
  /** Builds the server link; undefined when the device has no server. */
  readonly link: LinkFactory | undefined
  readonly mode: 'live' | 'periodic'
  readonly deltaIntervalMs: number
  readonly retentionMs: number
}

/** What the controller keeps across restarts (a peer-local record). */
interface Persisted {
  readonly offlineReady: boolean
  readonly lastFullSyncAt?: number
  readonly lastUsedAt: number
  /** Wiped for retention: no sync until the device is used again. */
  readonly awaitingUse: boolean
}

const RECORD = ['sync', 'state'] as const
const NOT_STARTED: DirectionStatus = { state: 'not-started' }
const ONLINE_ONLY =
  'ONLINE_ONLY: this device has not completed a full sync; what it serves offline may be incomplete'
/** The most exchanges one sync makes to get its changes acknowledged. */
const PUSH_ROUNDS_MAX = 3

type Kind = 'full' | 'delta'

interface Round {
  kind: Kind
  quiet: boolean
  /**
   * Started by the controller itself (delta timer, retry, going online):
   * it never makes the link try before its backoff says so.
   */
  automatic: boolean
  started: boolean
  promise: Promise<void>
}

/** The device's sync controller. */
export class DeviceSync implements DeviceSyncApi {
  private persisted: Persisted
  private serverToDevice: DirectionStatus = NOT_STARTED
  private deviceToServer: DirectionStatus = NOT_STARTED
  private readonly link: ServerLink | undefined
  private chain: Promise<void> = Promise.resolve()
  private queued: Round | undefined
  private running: Round | undefined
  private attempt = 0
  private deltaTimer: unknown
  private retryTimer: unknown
  private retentionTimer: unknown
  private persistedUseAt: number
  private lastRemoteError: { code: string; message: string } | undefined
  private connectWaiters: Array<{
    resolve: (s: SyncSession) => void
    reject: (e: Error) => void
  }> = []
  private closed = false
  /** Callers of `whenReady` waiting for the first full sync. */
  private readyWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = []
  /** A full sync failed: the retry is a full sync too. */
  private fullPending = false
  /**
   * The code of the failure logged last, until a sync succeeds: the syncs
   * of an outage (a retry every minute, for days) log `sync-started` and
   * `sync-failed` once, and again only when the error changes; the
   * `sync-succeeded` that ends it is always logged. The status shows every
   * attempt.
   */
  private failingWith: string | undefined = undefined

  private constructor(
    private readonly options: DeviceSyncOptions,
    persisted: Persisted,
  ) {
    this.persisted = persisted
    this.persistedUseAt = persisted.lastUsedAt
    this.link = options.link?.({
      paused: persisted.awaitingUse,
      onState: (state, detail) => this.onLinkState(state, detail),
      onConnected: (session) => this.onConnected(session),
      onError: (code, message) => this.onRemoteError(code, message),
    })
  }

  /**
   * Starts the controller: wipes at once if the device was unused for
   * `retentionMs` while it was off, then arms the retention timer.
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
    const expired = !persisted.awaitingUse && now - persisted.lastUsedAt >= options.retentionMs
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
    return this.run('full', false)
  }

  delta(): Promise<void> {
    this.touch()
    return this.run(this.persisted.offlineReady ? 'delta' : 'full', false)
  }

  status(): SyncStatus {
    const link = this.link?.state ?? 'none'
    const warning = !this.persisted.offlineReady && link !== 'connected' ? ONLINE_ONLY : undefined
    return {
      serverToDevice: this.serverToDevice,
      deviceToServer: this.deviceToServer,
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
    if (this.link === undefined) return
    await this.run(this.persisted.offlineReady ? 'delta' : 'full', true)
  }

  whenReady(): Promise<void> {
    if (this.closed) return Promise.reject(new SyncError('SYNC_FAILED', 'the device is closed'))
    if (this.persisted.offlineReady) return Promise.resolve()
    if (this.link === undefined)
      return Promise.reject(
        new SyncError('NO_SERVER', 'this device has no server: it never runs a full sync'),
      )
    if (this.link.state === 'refused')
      return Promise.reject(refusedError(this.link.reason?.replace(/^\d+: /, '')))
    this.touch()
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }))
  }

  /**
   * Marks the device used (any API call, a sign-in): resets the retention
   * countdown, and after a retention wipe starts the full sync it needs.
   */
  touch(): void {
    if (this.closed) return
    const now = this.options.clock.now()
    this.persisted = { ...this.persisted, lastUsedAt: now }
    if (this.persisted.awaitingUse) {
      this.persisted = { ...this.persisted, awaitingUse: false }
      this.persist()
      this.link?.resume()
    } else if (now - this.persistedUseAt >= this.usePersistEveryMs()) {
      // Writing the time on every call would cost a durable write per read;
      // the countdown is days long, so an hour's lag is harmless.
      this.persist()
    }
    this.armRetention()
  }

  /** Stops every timer and the link. */
  close(): void {
    this.closed = true
    const { clock } = this.options
    clock.clearTimeout(this.deltaTimer)
    clock.clearTimeout(this.retryTimer)
    clock.clearTimeout(this.retentionTimer)
    this.link?.close()
    this.rejectConnectWaiters(new SyncError('SYNC_FAILED', 'the device is closing'))
    const closing = new SyncError('SYNC_FAILED', 'the device closed before its first full sync')
    for (const w of this.readyWaiters.splice(0)) w.reject(closing)
  }

  private usePersistEveryMs(): number {
    return Math.min(3_600_000, Math.floor(this.options.retentionMs / 10))
  }

  private persist(): void {
    this.persistedUseAt = this.persisted.lastUsedAt
    this.options.replica.setRecord(...RECORD, this.persisted).catch(() => {
      // A failing store fails every write; the state is kept in memory and
      // stored with its next change.
    })
  }

  // ---- rounds -------------------------------------------------------------

  /**
   * Queues a sync. Syncs run one at a time; a request made while one is
   * queued but not started joins it (a full sync absorbs a delta).
   */
  private run(kind: Kind, quiet: boolean, automatic = false): Promise<void> {
    if (this.closed) return Promise.reject(new SyncError('SYNC_FAILED', 'the device is closed'))
    const queued = this.queued
    if (queued !== undefined && !queued.started) {
      if (kind === 'full') queued.kind = 'full'
      if (!quiet) queued.quiet = false
      if (!automatic) queued.automatic = false
      return queued.promise
    }
    const round: Round = { kind, quiet, automatic, started: false, promise: Promise.resolve() }
    const promise = this.chain.then(async () => {
      round.started = true
      if (this.queued === round) this.queued = undefined
      this.running = round
      try {
        await this.exchange(round.kind, round.quiet, round.automatic)
      } finally {
        this.running = undefined
      }
    })
    round.promise = promise
    this.queued = round
    this.chain = promise.catch(() => undefined)
    return promise
  }

  /** A sync started by the controller itself: failures are in the status and the log. */
  private auto(): void {
    if (this.closed || this.link === undefined || this.persisted.awaitingUse) return
    if (this.running !== undefined || this.queued !== undefined) return
    const kind = this.persisted.offlineReady && !this.fullPending ? 'delta' : 'full'
    this.run(kind, false, true).catch(() => undefined)
  }

  private async exchange(kind: Kind, quiet: boolean, automatic: boolean): Promise<void> {
    const { clock } = this.options
    this.options.clock.clearTimeout(this.retryTimer)
    this.serverToDevice = { state: 'in-progress', at: clock.now() }
    this.deviceToServer = { state: 'in-progress', at: clock.now() }
    const outage = this.failingWith !== undefined
    if (!quiet && !outage) await this.log({ type: 'sync-started', kind })
    try {
      const session = await this.session(automatic)
      this.lastRemoteError = undefined
      const { replica } = this.options
      // A device that holds nothing yet gets the whole roster from the
      // first answer: clearing and fetching again would only repeat it.
      const empty = replica.doc.store.clients.size === 0
      // Push first: a full sync must not clear changes the server lacks.
      const pushed = await this.push(session, () => {
        // A delta has what it lacked once the first answer is durable here.
        if (kind === 'delta') this.serverToDevice = { state: 'success', at: clock.now() }
      })
      this.deviceToServer = { state: 'success', at: clock.now() }
      if (kind === 'full') {
        // One reading of the clock: the status and the record say the same time.
        const at = empty ? this.fullSyncFetched() : await this.refetch(session, pushed)
        this.fullPending = false
        // The fetch is durable and the device offline-ready: whenReady() holds.
        for (const w of this.readyWaiters.splice(0)) w.resolve()
        this.serverToDevice = { state: 'success', at }
      }
      this.attempt = 0
      this.failingWith = undefined
      if (!quiet || outage) await this.log({ type: 'sync-succeeded', kind })
      this.scheduleDelta()
    } catch (cause) {
      // A refusal from the server (it closes the link with the error's
      // code, after an error message) is the cause: say which.
      const refusal = this.lastRemoteError
      const error = asSyncError(cause, refusal)
      const shown =
        refusal === undefined || refusal.code === 'STORAGE_FAILED'
          ? { code: error.code, message: error.message }
          : refusal
      const failed: DirectionStatus = { state: 'failed', at: clock.now(), error: shown }
      const direction =
        this.deviceToServer.state === 'in-progress'
          ? this.serverToDevice.state === 'in-progress'
            ? undefined
            : 'deviceToServer'
          : 'serverToDevice'
      if (this.deviceToServer.state === 'in-progress') this.deviceToServer = failed
      if (this.serverToDevice.state === 'in-progress') this.serverToDevice = failed
      if (this.failingWith !== shown.code) {
        await this.log({
          type: 'sync-failed',
          kind,
          code: shown.code,
          message: shown.message,
          ...(direction === undefined ? {} : { direction }),
        })
      }
      this.failingWith = shown.code
      if (kind === 'full') this.fullPending = true
      this.scheduleRetry(error)
      throw error
    }
  }

  /**
   * The rest of a full sync once the push is acknowledged: clears the
   * replicated roster and fetches it whole. Only if this device wrote
   * nothing since the server acknowledged the push (else it pushes again);
   * what other devices relayed meanwhile is still on them, and they push it
   * themselves. The wipe is staged: the store keeps the roster until the
   * fetched one replaces it in one batch, with the cleared deletes (rule 3:
   * a full sync shows the user again) and the record that says the full
   * sync succeeded, so a crash at any point restarts the device as it was
   * before or as it is after. This device's own writes wait in the queue
   * until then: written into the emptied document they would not carry the
   * device's own latest entry for the user. Returns the time of completion.
   */
  private async refetch(session: SyncSession, acknowledged: SyncAnswer): Promise<number> {
    const { replica, clock } = this.options
    let pushed = acknowledged
    for (let attempt = 1; ; attempt++) {
      const theirs = pushed.theirs
      try {
        await replica.wipe({
          local: false,
          deletes: true,
          staged: true,
          onlyIf: (doc) => (theirs.get(doc.clientID) ?? 0) >= Y.getState(doc.store, doc.clientID),
        })
        break
      } catch (error) {
        if (!(error instanceof WipeSkippedError) || attempt >= PUSH_ROUNDS_MAX) throw error
        pushed = await this.push(session, () => undefined)
      }
    }
    let committed = false
    try {
      await this.fetch(session)
      const at = clock.now()
      const done = this.afterFullSync(at)
      await replica.commitWipe([[...RECORD, done]])
      committed = true
      this.persistedUseAt = done.lastUsedAt
      // A use meanwhile is kept; a retention wipe queued meanwhile (it runs
      // after the commit) stores its own state.
      if (!this.persisted.awaitingUse) this.persisted = this.afterFullSync(at)
      return at
    } finally {
      if (!committed) await replica.abandonWipe()
    }
  }

  /** A first full sync is done (the first answer brought the roster): records it. */
  private fullSyncFetched(): number {
    const at = this.options.clock.now()
    this.persisted = this.afterFullSync(at)
    this.persist()
    return at
  }

  /** The persisted state after a full sync completed at `at`. */
  private afterFullSync(at: number): Persisted {
    return { ...this.persisted, offlineReady: true, lastFullSyncAt: at }
  }

  /**
   * Sends what the server lacks until an answer shows it holds all of it.
   * The first answer also brings what this device lacked.
   */
  private async push(session: SyncSession, afterFirst: () => void): Promise<SyncAnswer> {
    let answer = await this.answer(session)
    afterFirst()
    const wanted = answer.ours
    for (let round = 1; !covers(answer.theirs, wanted); round++) {
      if (round >= PUSH_ROUNDS_MAX) {
        const remote = this.lastRemoteError
        throw remote?.code === 'STORAGE_FAILED'
          ? new SyncError('SAVE_TO_SERVER_FAILED', `the server could not save: ${remote.message}`)
          : new SyncError(
              'SYNC_FAILED',
              remote === undefined
                ? 'the server did not take every change of this device'
                : `the server refused a change: ${remote.code} ${remote.message}`,
            )
      }
      // Our step 2 answering its step 1 is on its way; ask again to learn
      // whether it landed.
      answer = await this.answer(session)
    }
    return answer
  }

  /**
   * The fetch of a full sync: exchanges until this device holds everything
   * the server's answer says it holds. An answer that does not bring that
   * (a stale or duplicated answer to an earlier request, matched to this one
   * by arrival order) is followed by another request.
   */
  private async fetch(session: SyncSession): Promise<void> {
    for (let round = 1; ; round++) {
      const answer = await this.answer(session)
      const ours = Y.decodeStateVector(Y.encodeStateVector(this.options.replica.doc))
      if (covers(ours, answer.theirs)) return
      if (round >= PUSH_ROUNDS_MAX)
        throw new SyncError('SYNC_FAILED', 'the roster fetched from the server is incomplete')
    }
  }

  /** One step-1 exchange, bounded in time. */
  private answer(session: SyncSession): Promise<SyncAnswer> {
    return this.within(
      session.requestSync(),
      netLimits.syncAnswerTimeoutMs,
      () => new SyncError('SYNC_TIMEOUT', 'the server did not answer in time'),
      () => this.link?.retry(),
    )
  }

  /**
   * The running session, connecting first when needed. An automatic sync
   * does not make a disconnected link try now: the link reconnects on its
   * own backoff (and a sync runs when it does), so retries of both never
   * add up to more attempts than the backoff allows. A manual one tries
   * once now, without resetting the backoff.
   */
  private session(automatic: boolean): Promise<SyncSession> {
    const link = this.link
    if (link === undefined)
      return Promise.reject(new SyncError('NO_SERVER', 'this device has no server configured'))
    const current = link.session
    if (current !== undefined && link.state === 'connected') return Promise.resolve(current)
    if (link.state === 'refused')
      return Promise.reject(new SyncError('SYNC_FAILED', 'the server refused this device'))
    if (automatic && link.state === 'disconnected')
      return Promise.reject(
        new SyncError('SYNC_FAILED', 'the server is unreachable (waiting to reconnect)'),
      )
    const waiting = new Promise<SyncSession>((resolve, reject) =>
      this.connectWaiters.push({ resolve, reject }),
    )
    if (link.state === 'paused') link.resume()
    else link.retry()
    return this.within(
      waiting,
      netLimits.syncConnectTimeoutMs,
      () => new SyncError('SYNC_FAILED', 'the server is unreachable'),
    )
  }

  private within<T>(
    promise: Promise<T>,
    ms: number,
    timeoutError: () => Error,
    onTimeout?: () => void,
  ): Promise<T> {
    const { clock } = this.options
    return new Promise<T>((resolve, reject) => {
      const timer = clock.setTimeout(() => {
        onTimeout?.()
        reject(timeoutError())
      }, ms)
      promise.then(
        (value) => {
          clock.clearTimeout(timer)
          resolve(value)
        },
        (error: unknown) => {
          clock.clearTimeout(timer)
          reject(error instanceof Error ? error : new Error(String(error)))
        },
      )
    })
  }

  // ---- timers -------------------------------------------------------------

  /** The next delta sync, `deltaIntervalMs` after this completion. */
  private scheduleDelta(): void {
    const { clock } = this.options
    clock.clearTimeout(this.deltaTimer)
    if (this.closed) return
    this.deltaTimer = clock.setTimeout(() => this.auto(), this.options.deltaIntervalMs)
  }

  /** A failed sync comes back after a backoff with jitter, up to a bound. */
  private scheduleRetry(error: SyncError): void {
    const { clock } = this.options
    clock.clearTimeout(this.retryTimer)
    // The server refusing the device is final; a retry cannot change it.
    if (this.closed || this.link === undefined || this.link.state === 'refused') return
    if (error.code === 'NO_SERVER') return
    const delay = Math.min(
      netLimits.syncRetryDelayMsMax,
      retryDelayMs(this.attempt++, this.options.random()),
    )
    this.retryTimer = clock.setTimeout(() => this.auto(), delay)
  }

  private armRetention(): void {
    const { clock, retentionMs } = this.options
    clock.clearTimeout(this.retentionTimer)
    if (this.closed || this.persisted.awaitingUse) return
    const due = this.persisted.lastUsedAt + retentionMs - clock.now()
    this.retentionTimer = clock.setTimeout(
      () => {
        const idle = clock.now() - this.persisted.lastUsedAt
        if (idle >= retentionMs) void this.wipeForRetention().catch(() => undefined)
        else this.armRetention()
      },
      Math.max(0, due),
    )
  }

  /**
   * Unused for `retentionMs`: drop the roster (and local state), stop
   * syncing, and wait to be used again, which starts a full sync.
   */
  private async wipeForRetention(): Promise<void> {
    const { clock } = this.options
    this.link?.pause()
    clock.clearTimeout(this.deltaTimer)
    clock.clearTimeout(this.retryTimer)
    const days = Math.round((this.options.retentionMs / 86_400_000) * 10) / 10
    this.persisted = { ...this.persisted, offlineReady: false, awaitingUse: true }
    // The record goes with the wipe: a crash right after it must not leave
    // an empty roster that says it is offline-ready.
    await this.options.replica.wipe({
      local: true,
      event: { type: 'roster-wiped', message: `unused for ${days} days (retention)` },
      records: [[...RECORD, this.persisted]],
    })
    this.persistedUseAt = this.persisted.lastUsedAt
    this.serverToDevice = NOT_STARTED
    this.deviceToServer = NOT_STARTED
  }

  // ---- link events ----------------------------------------------------------

  private onConnected(session: SyncSession): void {
    for (const w of this.connectWaiters.splice(0)) w.resolve(session)
    // Going online pushes offline changes (and takes what the server has).
    this.auto()
  }

  private onLinkState(state: LinkState, detail?: string): void {
    if (state === 'connected' || state === 'connecting') return
    // Refused for good: the first full sync can never come.
    if (state === 'refused')
      for (const w of this.readyWaiters.splice(0)) w.reject(refusedError(detail))
    if (this.connectWaiters.length === 0) return
    const reason = detail === undefined || detail === '' ? state : `${state}: ${detail}`
    this.rejectConnectWaiters(
      state === 'refused'
        ? new SyncError(
            detail?.startsWith('PEER_REVOKED') === true ? 'PEER_REVOKED' : 'AUTH_FAILED',
            `the server refused this device (${reason})`,
          )
        : new SyncError('SYNC_FAILED', `the server is unreachable (${reason})`),
    )
  }

  private onRemoteError(code: string, message: string): void {
    this.lastRemoteError = { code, message }
    if (code === 'STORAGE_FAILED') {
      // The server could not save this device's change; the device keeps its
      // value and retries (SEMANTICS.md, "Event log").
      void this.log({ type: 'save-to-server-failed', code, message })
    }
  }

  private rejectConnectWaiters(error: Error): void {
    for (const w of this.connectWaiters.splice(0)) w.reject(error)
  }

  private async log(event: NewEvent): Promise<void> {
    try {
      await this.options.replica.writeMeta((ctx) => ctx.event(event))
    } catch {
      // The log is best effort here: a failing store already fails every write.
    }
  }
}

/** The link's wait, for the status: why it is not connected and when it tries next. */
function linkWait(link: ServerLink | undefined): { waiting?: string; nextAttemptAt?: number } {
  const waiting = link?.reason
  const next = link?.nextAttemptAt
  return {
    ...(waiting === undefined || link?.state === 'connected' ? {} : { waiting }),
    ...(next === undefined ? {} : { nextAttemptAt: next }),
  }
}

/** The server refused the device for good (the link's close reason, when known). */
function refusedError(detail: string | undefined): SyncError {
  const reason = detail === undefined || detail === '' ? 'refused' : `refused: ${detail}`
  return new SyncError(
    detail?.startsWith('PEER_REVOKED') === true ? 'PEER_REVOKED' : 'AUTH_FAILED',
    `the server refused this device (${reason})`,
  )
}

/** True when `theirs` holds every operation `ours` holds. */
function covers(theirs: Map<number, number>, ours: Map<number, number>): boolean {
  for (const [client, clock] of ours) if ((theirs.get(client) ?? 0) < clock) return false
  return true
}

function asSyncError(error: unknown, refusal?: { code: string; message: string }): SyncError {
  if (
    refusal?.code === 'STORAGE_FAILED' &&
    !(error instanceof SyncError && error.code !== 'SYNC_FAILED')
  )
    return new SyncError('SAVE_TO_SERVER_FAILED', `the server could not save: ${refusal.message}`, {
      cause: error,
    })
  if (refusal !== undefined && !(error instanceof SyncError && error.code !== 'SYNC_FAILED'))
    return new SyncError(
      'SYNC_FAILED',
      `the server refused a change: ${refusal.code}: ${refusal.message}`,
      { cause: error },
    )
  if (error instanceof SyncError) return error
  if (error instanceof RostersyncError)
    return new SyncError('SYNC_FAILED', `${error.code}: ${error.message}`, { cause: error })
  return new SyncError('SYNC_FAILED', error instanceof Error ? error.message : String(error), {
    cause: error,
  })
}
