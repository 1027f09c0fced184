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
  /** The rejections of the callers' promises not settled yet (see close). */
  private readonly unsettled = new Set<(error: Error) => void>()

  constructor(
    /** Makes the exchange of a round that started. */
    private readonly exchange: (round: Round) => Promise<void>,
    /** Whether the device is closed (no new round then). */
    private readonly closed: () => boolean,
    /** A sync was asked for by hand (not quiet, not automatic): it shows in progress now. */
    private readonly requested: () => void = () => undefined,
  ) {}

  /**
   * The device closed: every sync queued or running rejects with `error`
   * now, not when its exchange gives up on the closed link (a connect
   * timeout of 30 s, or never once the clock's timers are gone).
   */
  close(error: Error): void {
    for (const reject of this.unsettled) reject(error)
    this.unsettled.clear()
  }

  /** The kind of the round running, else of the one queued (undefined: none). */
  get kind(): Kind | undefined {
    return (this.running ?? this.queued)?.kind
  }

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
    if (!quiet && !automatic) this.requested()
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
          // The server refused the join for this device's clock (or its
          // proof's time, used already), or refused its stamps as ahead of
          // its time, and the link joins again at once with a proof in the
          // server's time (or past it), its stamps rewritten: once more.
          // A round asked for whose connection the server closed for a new
          // generation (4412: a compaction just then) reconnects now and
          // moves, rather than failing and waiting out the move's spread.
          if (!isJoinTimeRefused(error) && !(isGenerationClose(error) && !round.automatic))
            throw error
          await this.exchange(round)
        })
      } finally {
        this.running = undefined
      }
    })
    // The caller's promise: the round's outcome, or the close's if first
    // (no reaction left behind on a promise that settles only at close).
    round.promise = new Promise<void>((resolve, reject) => {
      this.unsettled.add(reject)
      void promise.then(resolve, reject).finally(() => this.unsettled.delete(reject))
    })
    this.queued = round
    this.chain = promise.catch(() => undefined)
    return round.promise
  }
}

/** A round that failed because the server refused the join proof's time, or stamps as ahead of its time (see run). */
function isJoinTimeRefused(error: unknown): boolean {
  return (
    error instanceof RostersyncError &&
    /CLOCK_SKEW|join proof replayed|ahead of this peer's time/.test(
      `${error.code} ${error.message}`,
    )
  )
}

/** A round cut by its connection closing for a new generation of the document (4412). */
function isGenerationClose(error: unknown): boolean {
  return error instanceof RostersyncError && /\(4412: GENERATION_CHANGED/.test(error.message)
}
