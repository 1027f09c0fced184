/**
 * The device's exchanges with its server over the link's session: waiting
 * for the link to connect (bounded), one step-1 exchange (bounded), the
 * push that repeats until the server's answer covers this device's
 * changes, and the fetch of a full sync. It keeps the last refusal the
 * server sent, which names the cause when an exchange fails.
 *
 * Invariant: `connectWaiters` is empty whenever the link is connected (each
 * waiter is settled by `connected` or `rejectWaiters`).
 */
import * as Y from 'yjs'
import type { Clock } from '../../core/clock.js'
import { epochAheadWriter, writersOfClients } from '../../core/authorize.js'
import { SyncError, withoutStack } from '../../core/errors.js'
import { SERVER_ID } from '../../core/ids.js'
import { netLimits } from '../../core/limits.js'
import { TokenBucket } from '../../core/token-bucket.js'
import type { Replica } from '../replica.js'
import { systemClock } from '../system-clock.js'
import type { SyncAnswer, SyncSession } from '../sync-session.js'
import type { ServerLink } from '../ws-client.js'
import { covers, PUSH_ROUNDS_MAX, refusedError, unreachable } from './sync-errors.js'
import { withoutUser } from '../sync-session/inbound.js'
import { heardOverLan, noteLostClocks, settleLostClocks } from './lost-clocks.js'

/**
 * Whether every client `theirs` lacks of `wanted` writes for a writer
 * other than this device (by the root of its first item; a client with no
 * item left counts as this device's, to be safe).
 */
function onlyOthersLacking(
  replica: Replica,
  theirs: Map<number, number>,
  wanted: Map<number, number>,
): boolean {
  const lacking = aheadOf(wanted, theirs).keys()
  for (const writer of writersOfClients(replica.doc, lacking).values())
    if (writer === undefined || writer === replica.writerId) return false
  return true
}

/** The clients `ours` holds more of than `theirs`, with how many more operations. */
function aheadOf(
  ours: ReadonlyMap<number, number>,
  theirs: ReadonlyMap<number, number>,
): Map<number, number> {
  const ahead = new Map<number, number>()
  for (const [client, clock] of ours) {
    const held = theirs.get(client) ?? 0
    if (clock > held) ahead.set(client, clock - held)
  }
  return ahead
}

/** Codes with which the server refuses a change the device sent (PROTOCOL.md, "Refusals"). */
const OWN_CHANGE_REFUSALS = new Set(['STORAGE_FAILED', 'INVALID_RECORD', 'FORBIDDEN_WRITE'])

/** The exchanges of one device with its server. */

export class ServerExchange {
  private lastRemoteError: { code: string; message: string } | undefined
  /** This device's step 1s to its server (paced). */
  private readonly asks = new TokenBucket(
    netLimits.deviceStep1sPerSecondMax,
    netLimits.deviceStep1sBurstMax,
  )
  /** Codes of this device's changes the server refused, logged since the last success. */
  private readonly savesRefused = new Set<string>()
  /** What the device held when the link's session opened (serverLost). */
  private opened:
    | {
        readonly session: SyncSession
        readonly held: Map<number, number>
        readonly generation: string
      }
    | undefined
  private connectWaiters: Array<{
    resolve: (s: SyncSession) => void
    reject: (e: Error) => void
  }> = []

  constructor(
    private readonly link: ServerLink | undefined,
    private readonly options: { readonly clock: Clock; readonly replica: Replica },
  ) {}

  /** The refusal the server sent last (an error message before it closes the link). */
  get remoteError(): { code: string; message: string } | undefined {
    return this.lastRemoteError
  }

  /**
   * Waits, when needed, so that this device asks its server at most
   * `netLimits.deviceStep1sPerSecondMax` a second (burst
   * `deviceStep1sBurstMax`), under the server's answered-step-1 bound: a
   * caller running `whenIdle()` after each of 300 writes was closed
   * `RATE_LIMITED` by its server (a probe). On the real clock only: an
   * injected one (a test's, the simulator's) may never move.
   */
  private async paced(): Promise<void> {
    if (this.options.clock !== systemClock) return
    while (!this.asks.take(1, performance.now()))
      await new Promise((resolve) => setTimeout(resolve, 1000 / netLimits.deviceStep1sPerSecondMax))
  }

  /**
   * Whether the server's last refusal says an entry of this device's own
   * part names an epoch above the server's for that user: the server lost
   * a delete this device had seen (its data directory was restored from a
   * backup taken before it), the only way an honest device gets there.
   * Every push would be refused the same way, for good: the device fetches
   * the roster again, its entries carried on the users the server holds
   * (GenerationMove.refetch).
   */
  refusedOwnEpoch(writer: string): boolean {
    const refusal = this.lastRemoteError
    if (refusal?.code !== 'FORBIDDEN_WRITE') return false
    const part = epochAheadWriter(refusal.message)
    // Taken once: rounds that fail before the next session (a server down
    // meanwhile) found it again and refetched each time (a review).
    if (part === writer) this.lastRemoteError = undefined
    return part === writer
  }

  /**
   * Notes a refusal the server sent; true the first time since a success
   * that it refused this device's own change with `code` (it could not
   * save it, or the change is not one it takes): `save-to-server-failed`,
   * once per code, not once per retry.
   */
  noteRemoteError(code: string, message: string): boolean {
    this.lastRemoteError = { code, message }
    // Another writer's envelope it relayed is not its change.
    if (!OWN_CHANGE_REFUSALS.has(code) || /relayed envelope/.test(withoutUser(message)))
      return false
    if (this.savesRefused.has(code)) return false
    this.savesRefused.add(code)
    return true
  }

  /**
   * The operations of the server's own this device held when it asked
   * for `answer` (an answer on `session`, the device on generation
   * `generation`) past what that answer says the server holds: per
   * clientID, the server's clock there (lostClocks), and how many
   * operations past it (`operations`, 0 nearly always). The server sends
   * only what is durable, and answers a step 1 with what it holds after
   * it, so those are operations the server lost since (its data directory
   * restored from a backup taken before them, or a crash). What the
   * device held when the session opened counts, and what it heard over
   * the LAN since, up to when it asked (baseline); not what it holds now:
   * it may have heard since what the server wrote after its answer
   * (PROTOCOL.md, "A restored server").
   */
  serverLost(
    session: SyncSession,
    answer: SyncAnswer,
    generation: string,
  ): { readonly operations: number; readonly clocks: Map<number, number> } {
    const clocks = new Map<number, number>()
    const opened = this.opened
    if (opened?.session !== session || opened.generation !== generation)
      return { operations: 0, clocks }
    const ahead = aheadOf(this.baseline(answer, opened.held), answer.theirs)
    let operations = 0
    if (ahead.size === 0) return { operations, clocks }
    for (const [client, writer] of writersOfClients(this.options.replica.doc, ahead.keys()))
      if (writer === SERVER_ID) {
        operations += ahead.get(client) ?? 0
        clocks.set(client, answer.theirs.get(client) ?? 0)
      }
    return { operations, clocks }
  }

  /**
   * serverLost, with the clocks it found noted (lostClocks: not taken again
   * from a LAN peer still behind). Returns how many operations were lost.
   */
  async lostSince(session: SyncSession, answer: SyncAnswer, generation: string): Promise<number> {
    const lost = this.serverLost(session, answer, generation)
    if (lost.operations > 0) await noteLostClocks(this.options.replica, lost.clocks)
    return lost.operations
  }

  /**
   * What this device held when the session opened (`held`), and more of
   * what it heard over the LAN since, up to what it held when it sent the
   * step 1 `answer` answers (SyncAnswer.asked), less what it no longer
   * holds (a refetch or a move took it away). A LAN peer still on a
   * restored server's rolled-back state relays it after the session
   * opened (PROTOCOL.md, "A restored server"). Only what came over the LAN
   * counts past the open: answers are matched to step 1s by arrival order,
   * and on a network that duplicates or reorders them (the simulator's) an
   * older answer can be matched to a later step 1, one stating what the
   * server sent directly since.
   */
  private baseline(answer: SyncAnswer, held: ReadonlyMap<number, number>): Map<number, number> {
    const baseline = new Map(held)
    if (answer.asked === undefined) return baseline
    const lan = heardOverLan(this.options.replica)
    const { store } = this.options.replica.doc
    for (const [client, clock] of Y.decodeStateVector(answer.asked)) {
      const late = Math.min(clock, lan.get(client) ?? 0, Y.getState(store, client))
      if (late > (baseline.get(client) ?? 0)) baseline.set(client, late)
    }
    return baseline
  }

  /**
   * The device fetched its restored server's roster again on `session`:
   * what it holds now is what later answers on the session are compared
   * with. Its document may still hold operations of a clientID the server
   * lost some of (a backup taken while the server ran): compared with the
   * session's open, every later round found the loss again and refetched.
   */
  refetched(session: SyncSession): void {
    if (this.opened?.session !== session) return
    const held = Y.decodeStateVector(Y.encodeStateVector(this.options.replica.doc))
    this.opened = { ...this.opened, held }
  }

  /** A sync succeeded: a refusal of the device's changes is logged again when it comes. */
  saved(): void {
    this.savesRefused.clear()
  }

  /** A session started: forgets the refusal noted before it. */
  clearRemoteError(): void {
    this.lastRemoteError = undefined
  }

  /**
   * The link connected (the device on generation `generation`): the syncs
   * waiting for it go on. What the device holds now is kept for
   * `serverLost`.
   */
  connected(session: SyncSession, generation: string): void {
    const held = Y.decodeStateVector(Y.encodeStateVector(this.options.replica.doc))
    this.opened = { session, held, generation }
    for (const w of this.connectWaiters.splice(0)) w.resolve(session)
  }

  /** Whether a sync waits for the link to connect. */
  get waiting(): boolean {
    return this.connectWaiters.length > 0
  }

  /** Fails the syncs waiting for the link to connect. */
  rejectWaiters(error: Error): void {
    for (const w of this.connectWaiters.splice(0)) w.reject(error)
  }

  /**
   * Sends what the server lacks until an answer shows it holds all of it.
   * The first answer also brings what this device lacked.
   */
  async push(session: SyncSession, afterFirst: () => void): Promise<SyncAnswer> {
    // Its writes made while its clock ran ahead, rewritten before they go
    // (a hello rewrites them too, unless a round held own writes then).
    await this.options.replica.stampTime.restamp()
    let answer = await this.answer(session)
    afterFirst()
    const wanted = answer.ours
    for (let round = 1; !covers(answer.theirs, wanted); round++) {
      // What it still lacks after a whole round is another writer's, which
      // this device relayed (a LAN peer's) and the server refused (a
      // revoked or forgotten device): not this device's to deliver. Its
      // own changes are in; waiting for the rest would fail every sync of
      // this device for good, a full sync's included.
      if (round > 1 && onlyOthersLacking(this.options.replica, answer.theirs, wanted)) break
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
  async fetch(session: SyncSession): Promise<void> {
    for (let round = 1; ; round++) {
      const answer = await this.answer(session)
      const ours = Y.decodeStateVector(Y.encodeStateVector(this.options.replica.doc))
      if (covers(ours, answer.theirs)) return
      if (round >= PUSH_ROUNDS_MAX)
        throw new SyncError('SYNC_FAILED', 'the roster fetched from the server is incomplete')
    }
  }

  /**
   * One step-1 exchange, bounded in time. While it waits, a connection
   * silent for `netLimits.syncAskAgainSilenceMs` is asked again on the same
   * connection (PROTOCOL.md, "Acknowledgement"): each time the silence
   * lasts while no part of the answer came (the step 1 or the answer was
   * lost), once when the answer began (its step 2 may be lost, or a large
   * one still on its way: one message can take longer than the silence to
   * arrive whole). Without an answer within `netLimits.syncAnswerTimeoutMs`,
   * plus `netLimits.syncAnswerMsPerOperation` for each operation the
   * answer brings once the server's step 1 says how many
   * (`SyncSession.answerSize`), the link reconnects: a large answer on a
   * slow link is not cut short, a small one keeps the fixed bound.
   */
  async answer(session: SyncSession): Promise<SyncAnswer> {
    await this.paced()
    const { clock } = this.options
    const silenceMs = netLimits.syncAskAgainSilenceMs
    let askedAt = clock.now()
    let askedWhileAnswering = false
    let timer: unknown
    const check = (): void => {
      const now = clock.now()
      const last = Math.max(askedAt, session.heardAt)
      // (A clock set back meanwhile reads as silence: asked again now.)
      if (now - last >= silenceMs || now < last) {
        if (session.answering) {
          if (askedWhileAnswering) return
          askedWhileAnswering = true
        }
        session.askAgain()
        askedAt = now
      }
      const due = Math.max(askedAt, session.heardAt) + silenceMs
      timer = clock.setTimeout(check, Math.max(1, due - now))
    }
    timer = clock.setTimeout(check, silenceMs)
    // A server that states more of a clientID a loss was noted of holds it after all.
    const request = session.requestSync().then(async (answer) => {
      await settleLostClocks(this.options.replica, answer.theirs)
      return answer
    })
    const stop = (): void => clock.clearTimeout(timer)
    request.then(stop, stop)
    return this.within(
      request,
      netLimits.syncAnswerTimeoutMs,
      // Made by a timer: a stack would show only the timer.
      () => withoutStack(() => new SyncError('SYNC_TIMEOUT', 'the server did not answer in time')),
      () => {
        stop()
        this.link?.retry()
      },
      () => session.answerSize * netLimits.syncAnswerMsPerOperation,
    )
  }

  /**
   * The running session, connecting first when needed. An automatic sync
   * does not make a disconnected link try now: the link reconnects on its
   * own backoff (and a sync runs when it does), so retries of both never
   * add up to more attempts than the backoff allows. A manual one tries
   * once now, without resetting the backoff.
   */
  session(automatic: boolean): Promise<SyncSession> {
    const link = this.link
    if (link === undefined)
      return Promise.reject(new SyncError('NO_SERVER', 'this device has no server configured'))
    const current = link.session
    if (current !== undefined && link.state === 'connected') return Promise.resolve(current)
    // Refused for good: the refusal's own code (AUTH_FAILED, PEER_REVOKED),
    // until a caller tries again by hand (SEMANTICS.md: a failed sync "can
    // be retried by hand"): a server that refused the device for a
    // mistake of its own (started with another site key) takes it back.
    if (link.state === 'refused' && automatic) return Promise.reject(refusedError(link.reason))
    if (automatic && link.state === 'disconnected')
      return Promise.reject(unreachable('waiting to reconnect', undefined, link.reason))
    // Paused by a retention wipe: only a use (a caller's round) resumes it.
    if (automatic && link.state === 'paused')
      return Promise.reject(new SyncError('SYNC_FAILED', 'wiped for retention: waiting to be used'))
    const waiting = new Promise<SyncSession>((resolve, reject) =>
      this.connectWaiters.push({ resolve, reject }),
    )
    if (link.state === 'paused') link.resume()
    else link.retry(link.state === 'refused')
    return this.within(
      waiting,
      netLimits.syncConnectTimeoutMs,
      () => new SyncError('SYNC_FAILED', 'the server is unreachable'),
    )
  }

  /**
   * `promise`, or `timeoutError` once `ms` pass, plus `extraMs()` as it is
   * when that time comes (it may grow meanwhile: checked again then).
   */
  private within<T>(
    promise: Promise<T>,
    ms: number,
    timeoutError: () => Error,
    onTimeout?: () => void,
    extraMs?: () => number,
  ): Promise<T> {
    const { clock } = this.options
    return new Promise<T>((resolve, reject) => {
      let timer: unknown
      // Time waited, counted in the timers' own delays, never read off the
      // clock: a clock set back by a day while the exchange waited made
      // the bound a day longer (the simulator, a clock step: the round
      // hung past the convergence bound).
      let waited = ms
      const expire = (): void => {
        const bound = ms + (extraMs?.() ?? 0)
        if (waited < bound) {
          timer = clock.setTimeout(expire, bound - waited)
          waited = bound
          return
        }
        onTimeout?.()
        reject(timeoutError())
      }
      timer = clock.setTimeout(expire, ms)
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
}
