/**
 * The device's sync rounds: syncs run one at a time, in order; a request
 * made while one is queued but not started joins it (a full sync absorbs a
 * delta, a loud request makes it loud, a manual one makes it manual).
 *
 * Invariant: `queued` is a round not started yet, or undefined; `running`
 * is the round whose exchange is under way, or undefined.
 */
import { RostersyncError, SyncError } from '../../core/errors.js'

/** Which sync a round makes. */
export type Kind = 'full' | 'delta'

/** One queued or running sync. */
export interface Round {
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

/** The queue of one device's syncs. */
export class SyncRounds {
  private chain: Promise<void> = Promise.resolve()
  private queued: Round | undefined
  private running: Round | undefined

  constructor(
    /** Makes the exchange of a round that started. */
    private readonly exchange: (round: Round) => Promise<void>,
    /** Whether the device is closed (no new round then). */
    private readonly closed: () => boolean,
  ) {}

  /** Whether a round is queued or running. */
  get busy(): boolean {
    return this.running !== undefined || this.queued !== undefined
  }

  /**
   * Queues a sync. Syncs run one at a time; a request made while one is
   * queued but not started joins it (a full sync absorbs a delta).
   */
  run(kind: Kind, quiet: boolean, automatic = false): Promise<void> {
    if (this.closed()) return Promise.reject(new SyncError('SYNC_FAILED', 'the device is closed'))
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
        await this.exchange(round).catch(async (error: unknown) => {
          // The server refused the join for this device's clock and the
          // link joins again at once in the server's time: once more.
          if (!isClockSkew(error)) throw error
          await this.exchange(round)
        })
      } finally {
        this.running = undefined
      }
    })
    round.promise = promise
    this.queued = round
    this.chain = promise.catch(() => undefined)
    return promise
  }
}

/** A round that failed because the server refused the join for the device's clock. */
function isClockSkew(error: unknown): boolean {
  return error instanceof RostersyncError && /CLOCK_SKEW/.test(`${error.code} ${error.message}`)
}
