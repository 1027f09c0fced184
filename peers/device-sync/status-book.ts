/**
 * The device's sync status per direction (API.md, `device.sync.status()`)
 * and the log of its failures: during an outage (a retry every minute, for
 * days) `sync-failed` is logged once, and again only when the error changes;
 * the status shows every attempt.
 */
import type { Clock } from '../../core/clock.js'
import type { SyncError } from '../../core/errors.js'
import type { NewEvent, RosterEvent } from '../../core/events.js'
import type { DirectionStatus } from './types.js'

export const NOT_STARTED: DirectionStatus = { state: 'not-started' }

type Kind = 'full' | 'delta'

export class SyncStatusBook {
  serverToDevice: DirectionStatus = NOT_STARTED
  deviceToServer: DirectionStatus = NOT_STARTED
  /** The code of the failure logged last, until a sync succeeds (see the module comment). */
  failingWith: string | undefined = undefined
  /** `sync-started` was logged since the last `sync-succeeded` (see logStarted). */
  private startLogged = false

  constructor(
    private readonly clock: Clock,
    private readonly log: (event: NewEvent) => Promise<void>,
  ) {}

  /**
   * A reopened device's statuses, from the last sync it logged
   * (`sync-succeeded`, `sync-failed`, or a `sync-started` with no end
   * after a success; `logged`: the last two, oldest first; none since a
   * `roster-wiped`): the
   * status of a stopped device (`rostersync device --status`) says how its
   * last sync ended, not `not-started`.
   */
  restore(logged: readonly RosterEvent[]): void {
    const last = logged.at(-1)
    if (last === undefined || last.type === 'roster-wiped') return
    if (last.type === 'sync-started') {
      // After a failure it may be a retry whose failure, the same, was not
      // logged again: that failure says how it ended.
      const before = logged.at(-2)
      if (before?.type === 'sync-failed') return this.restore([before])
      // Else it never ended: the device stopped during it (a probe: the
      // status showed the sync before it, though this one had pushed).
      const error = {
        code: 'SYNC_FAILED',
        message: `the ${last.kind ?? 'delta'} sync started at ${new Date(last.at).toISOString()} did not end: this device stopped during it`,
      }
      this.serverToDevice = { state: 'failed', at: last.at, error }
      this.deviceToServer = { state: 'failed', at: last.at, error }
      return
    }
    const success: DirectionStatus = { state: 'success', at: last.at }
    if (last.type === 'sync-succeeded') {
      this.serverToDevice = success
      this.deviceToServer = success
      return
    }
    const failed: DirectionStatus = {
      state: 'failed',
      at: last.at,
      error: { code: last.code ?? 'SYNC_FAILED', message: last.message ?? '' },
    }
    this.serverToDevice = last.direction === 'deviceToServer' ? success : failed
    this.deviceToServer = last.direction === 'serverToDevice' ? success : failed
    // The outage goes on across the restart: the same failure (a revoked
    // device, a wrong site key, a server down) is not logged again at every
    // open (a probe: one more `sync-failed` per open).
    this.failingWith = failed.error?.code
    this.startLogged = true
  }

  /** A sync is under way (or asked for by hand, to run once the one running ends). */
  started(at: number): void {
    this.serverToDevice = { state: 'in-progress', at }
    this.deviceToServer = { state: 'in-progress', at }
  }

  /**
   * Logs `sync-started` for a round, but not for each retry of an outage
   * once said: an outage that began without it (the link failed before any
   * round) logs it at its first round, so every `sync-succeeded` follows a
   * `sync-started` (a probe: a device created before its server listened
   * logged a success with no start).
   */
  logStarted(kind: Kind, outage: boolean): Promise<void> | undefined {
    if (this.failingWith !== undefined && this.startLogged) return undefined
    this.startLogged = true
    const logged = this.log({ type: 'sync-started', kind })
    // An outage's round goes on at once (its failure shows as soon as a
    // refused link's waiters hear of it); the log keeps its order.
    return outage ? undefined : logged
  }

  /** A round succeeded: the next logs its start again. */
  succeeded(): void {
    this.failingWith = undefined
    this.startLogged = false
  }

  /** Both directions back to `not-started` (a retention wipe). */
  reset(): void {
    this.serverToDevice = NOT_STARTED
    this.deviceToServer = NOT_STARTED
    // A new start: its first sync logs its start (and a failure) again.
    this.failingWith = undefined
    this.startLogged = false
  }

  /**
   * Marks `failed` with `error` each direction `hit` selects, and logs
   * `sync-failed` (with the direction when only one failed) unless this
   * code was the last logged. Returns false when no direction was hit.
   */
  async failed(
    kind: Kind,
    error: { code: string; message: string },
    hit: (status: DirectionStatus) => boolean,
  ): Promise<boolean> {
    const toServer = hit(this.deviceToServer)
    const toDevice = hit(this.serverToDevice)
    if (!toServer && !toDevice) return false
    // A plain copy: given an Error (a refusal), its message is not an own
    // enumerable key, and the status a caller reads (a copy) lost it.
    const shown = { code: error.code, message: error.message }
    const failed: DirectionStatus = { state: 'failed', at: this.clock.now(), error: shown }
    if (toServer) this.deviceToServer = failed
    if (toDevice) this.serverToDevice = failed
    if (this.failingWith === error.code) return true
    this.failingWith = error.code
    await this.log({
      type: 'sync-failed',
      kind,
      code: error.code,
      message: error.message,
      ...(toServer && toDevice
        ? {}
        : { direction: toServer ? 'deviceToServer' : 'serverToDevice' }),
    })
    return true
  }

  /**
   * The device closed while a sync ran: each direction in progress is
   * `failed` with `error`, and `sync-failed` logged (queued before the
   * replica closes, so stored with its last batch). It stayed
   * `in-progress` for good, and a reopened device restored the sync before
   * it as its last (a black-box probe).
   */
  closed(kind: Kind, error: SyncError): void {
    const cut = { code: error.code, message: error.message }
    void this.failed(kind, cut, (status) => status.state === 'in-progress')
  }

  /**
   * A link failure no sync round reports (none waits for the link; a
   * round's own failure says it): each direction that has not started,
   * or, when the server refused the device for good or an attempt to reach
   * it failed (`attempt`), each one not in progress, is `failed` with
   * `error`. A connection that ends is not yet a failure: the next attempt
   * says whether the server is still there.
   */
  linkFailed(kind: Kind, error: SyncError, attempt: boolean): Promise<boolean> {
    return this.failed(
      kind,
      { code: error.code, message: error.message },
      (status) => status.state === 'not-started' || (attempt && status.state !== 'in-progress'),
    )
  }
}
