/**
 * A device's link to the server, speaking the y-websocket protocol through a
 * sync session: over WebSocket by default, or over any transport passed in
 * (the simulator's). Reconnects with exponential backoff and jitter,
 * through the injected clock; stops for good when the server refuses the
 * device (bad site key, revoked). What runs on the link once it is up (full
 * and delta syncs) is the sync controller's business (device-sync.ts).
 *
 * The backoff only grows until a connection succeeds: it is reset when a
 * connection that completed its initial exchange closes for a reason other
 * than a refusal, never by a retry. A connection the server closed on a
 * refusal (1007, 1008, 1009, 1011: its change was refused, a limit was hit)
 * is not a success, however far it got: reconnecting at once would send the
 * same refused change again, in a loop. After a 1001 (the server is
 * restarting) the device reconnects after a delay drawn over
 * `reconnectAfterRestartSpreadMs`, so a site's devices do not all come back
 * in the same second.
 */
import { generationMoveDelayMs, restartReconnectDelayMs, retryDelayMs } from '../core/backoff.js'
import type { GenerationStatement } from '../core/generation-statement.js'
import type { Clock } from '../core/clock.js'
import type { RostersyncError } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import { CloseCode, isFinalClose } from '../core/protocol.js'
import type { Connection } from '../core/transport.js'
import { wsConnect } from '../transports/ws-transport.js'
import type { Replica } from './replica.js'
import { startSession, type SessionOptions, type SyncSession } from './sync-session.js'
import { withoutUser } from './sync-session/inbound.js'

/** Connection state, as the device's status reports it. */
export type LinkState =
  'connecting' | 'connected' | 'disconnected' | 'refused' | 'paused' | 'closed'

/** Options of {@link connectToServer}. */
export interface ServerLinkOptions {
  readonly replica: Replica
  readonly url: string
  readonly room?: string
  readonly deviceId: string
  readonly name: string
  readonly siteKey: string | undefined
  readonly clock: Clock
  /** A uniform random number in [0, 1) for backoff jitter. */
  readonly random: () => number
  /** Opens a connection to a join URL; WebSocket by default. */
  readonly connect?: (url: string) => Promise<Connection>
  /**
   * `live` (default) forwards changes both ways as they happen; `periodic`
   * leaves them for the next exchange (the server is told, and forwards
   * nothing to this device between exchanges).
   */
  readonly mode?: 'live' | 'periodic'
  /** Start paused (no connection until `resume()`). */
  readonly paused?: boolean
  /**
   * The link's state changed; `failedAttempt` when it is `disconnected`
   * because an attempt to reach the server failed (no connection, or one
   * closed before its first sync), not because a synced connection ended.
   */
  readonly onState?: (state: LinkState, detail?: string, failedAttempt?: boolean) => void
  /** A session is up on a new connection (the controller runs its exchange). */
  readonly onConnected?: (session: SyncSession) => void
  /** A refusal from the server, or a failure to apply what it sent. */
  readonly onError?: (code: string, message: string) => void
  /** The server's step 2 is durable here. */
  readonly onSynced?: () => void
  /**
   * The server refused a join for its time (`CLOCK_SKEW`) and said its own:
   * true when the next join's proof will name another time (then the link
   * tries again at once).
   */
  readonly onServerTime?: (serverTimeMs: number) => boolean
  /**
   * The server refused a join proof as one it accepted already and said the
   * latest it accepted (a clock held still or stepped back, across a
   * restart): true when the next proof will name a later time (then the
   * link tries again at once, as after `CLOCK_SKEW`).
   */
  readonly onJoinReplayed?: (latest: number) => boolean
  /**
   * Extra join parameters made afresh for each connection: the device's key
   * and its join proof (PROTOCOL.md, "Signed writes").
   */
  readonly joinParams?: () => Record<string, string>
  /** Signed writes on each connection (see SessionOptions.signed), by connection id. */
  readonly signed?: (connectionId: string) => NonNullable<SessionOptions['signed']>
  /**
   * The server's hello: checks its key and this device's certificate, and
   * returns the server's generation statement (checked), if it sent one.
   */
  readonly onHello?: (
    serverKey: Uint8Array,
    certificate: Uint8Array,
    connection: Connection,
    generation: Uint8Array | undefined,
  ) => Promise<GenerationStatement | undefined>
  /**
   * The generation the server is on, from its hello (issue 13), handled
   * before anything else of the connection: a device on another one moves.
   */
  readonly onGeneration?: (
    statement: GenerationStatement | undefined,
    connection: Connection,
  ) => Promise<void>
  /**
   * Whether a close for a new generation (4412) waits out this device's
   * point of the spread (`generationMoveDelayMs`): true for a device with a
   * roster to carry over; a device whose first full sync it cut comes back
   * after its usual backoff instead (it has nothing to move, and would
   * otherwise go without a roster for up to two minutes). Default: true.
   */
  readonly spreadsMove?: () => boolean
}

/** A live server link. */
export interface ServerLink {
  readonly state: LinkState
  /** True once this connection's initial exchange is durable here. */
  readonly synced: boolean
  /** The running session, while connected. */
  readonly session: SyncSession | undefined
  /**
   * While waiting to reconnect: when the next attempt is due, ms since the
   * epoch (the link's clock); undefined while connecting, connected,
   * refused, paused or closed.
   */
  readonly nextAttemptAt?: number | undefined
  /**
   * Why the link is not connected: the last attempt's error, or the close
   * code and reason of the last connection (`1006`, `1008: AUTH_FAILED: …`).
   * Undefined while connected.
   */
  readonly reason?: string | undefined
  /**
   * Connects now (a manual sync, or a connected link that stopped
   * answering). The backoff is not reset: if this attempt fails, the next
   * automatic one comes after a delay at least as long as the last.
   * `refused`: a link the server refused for good connects too (a sync
   * asked for by hand); else it stays refused.
   */
  retry(refused?: boolean): void
  /** Closes the connection and stops reconnecting until `resume()` (after a retention wipe). */
  pause(): void
  /** Connects again after `pause()`. */
  resume(): void
  close(): void
}

/** The URL a device joins with: room path, device id, name, site key, mode. */
export function joinUrl(
  options: Pick<
    ServerLinkOptions,
    'url' | 'room' | 'deviceId' | 'name' | 'siteKey' | 'mode' | 'joinParams'
  >,
): string {
  const url = new URL(
    `${options.url.replace(/\/$/, '')}/${encodeURIComponent(options.room ?? 'roster')}`,
  )
  // The query built apart and set once: each `url.searchParams.set`
  // serializes and parses the whole URL again, on every reconnection.
  const query = new URLSearchParams(url.search)
  query.set('device', options.deviceId)
  query.set('name', options.name)
  if (options.siteKey !== undefined) query.set('key', options.siteKey)
  if (options.mode === 'periodic') query.set('mode', 'periodic')
  for (const [name, value] of Object.entries(options.joinParams?.() ?? {})) query.set(name, value)
  url.search = query.toString()
  return url.toString()
}

/** Connects (and keeps reconnecting) to the server. */
export function connectToServer(options: ServerLinkOptions): ServerLink {
  let state: LinkState = options.paused === true ? 'paused' : 'connecting'
  let connection: Connection | undefined
  let session: SyncSession | undefined
  let attempt = 0
  let timer: unknown
  let nextAttemptAt: number | undefined
  let lastFailure: string | undefined
  /** The server's time, from its refusal of this device's stamps as ahead of it (see onRemoteError). */
  let stampsAheadAt: number | undefined
  /** An immediate rejoin after CLOCK_SKEW was made, and no connection got through since. */
  let skewRejoined = false
  /**
   * A link refused for good, tried again by hand (retry(true)): the
   * refusal's reason, to go back to if the attempt does not get through
   * (unreachable, or closed before a sync). It does not start the backoff's
   * retries: a refused device retries only when asked (a review).
   */
  let refusedBefore: string | undefined
  /** Bumped by pause/retry so that a stale attempt's outcome is ignored. */
  let generation = 0
  /**
   * The join URL of the last attempt, while no attempt connected since:
   * its proof never reached the server, so the next attempt sends it again
   * while it is fresh (`netLimits.joinUrlReuseMsMax`) instead of signing
   * a new one each retry.
   */
  let unsent: { readonly url: string; readonly madeAt: number } | undefined
  const nextUrl = (): { readonly url: string; readonly madeAt: number } => {
    const now = options.clock.now()
    const last = unsent
    unsent = undefined
    if (last !== undefined && now >= last.madeAt && now - last.madeAt < netLimits.joinUrlReuseMsMax)
      return last
    return { url: joinUrl(options), madeAt: now }
  }
  const connect = options.connect ?? wsConnect
  const setState = (next: LinkState, detail?: string, failedAttempt = false): void => {
    state = next
    if (next !== 'disconnected') nextAttemptAt = undefined
    if (next === 'connected') lastFailure = undefined
    options.onState?.(next, detail, failedAttempt)
  }
  /** The next attempt, after `delayMs` (by default the backoff's next delay). */
  const schedule = (delayMs?: number): void => {
    const gen = generation
    options.clock.clearTimeout(timer)
    const delay = delayMs ?? retryDelayMs(attempt++, options.random())
    nextAttemptAt = Math.round(options.clock.now() + delay) // ms since the epoch, as documented
    timer = options.clock.setTimeout(() => {
      if (gen === generation) void open()
    }, delay)
  }
  const open = async (): Promise<void> => {
    const gen = generation
    setState('connecting')
    const join = nextUrl()
    let conn: Connection
    try {
      conn = await connect(join.url)
    } catch (error) {
      if (gen !== generation || state === 'closed' || state === 'paused') return
      unsent = join
      if (backToRefused()) return
      lastFailure = (error as Error).message
      setState('disconnected', (error as Error).message, true)
      schedule()
      return
    }
    if (gen !== generation || state === 'closed' || state === 'paused') {
      conn.close(1000, 'device closing')
      return
    }
    connection = conn
    /** Error codes the server sent on this connection (its close repeats one). */
    const reported = new Set<string>()
    conn.onClose(({ code, reason }) => {
      // A connection this link already left (retry, pause, close dropped
      // it, its session stopped then) can report its close late, once the
      // next one is up (a WebSocket's closing handshake, or the server's
      // 4410 SESSION_REPLACED to the old one): it must not stop the
      // current session. It did, and a round then found the link
      // "connected" with no session, retried, and the server replaced the
      // older connection again, for ever (issue 13, the aging bench).
      if (connection !== conn) return
      const wasSynced = session?.synced === true
      session?.stop()
      session = undefined
      connection = undefined
      if (state === 'closed' || state === 'paused' || gen !== generation) return
      lastFailure = reason === '' ? String(code) : `${code}: ${reason}`
      if (isFinalClose(code)) {
        refusedBefore = undefined
        setState('refused', reason)
        return
      }
      // A try by hand that did not get a verdict (dropped, the server
      // going away) is refused as before; a coded close (CLOCK_SKEW to
      // rejoin in the server's time, PEER_PENDING to wait with the
      // backoff, ...) takes its usual way (a review).
      if (code === 1006 || code === 1001 || !/^[A-Z_]+: /.test(reason)) {
        if (backToRefused()) return
      } else refusedBefore = undefined
      const skewed = /^CLOCK_SKEW: .*server time (\d+)$/.exec(reason)
      const replayed = /^AUTH_FAILED: join proof replayed.*; latest (\d+)$/.exec(reason)
      const ahead = stampsAheadAt
      stampsAheadAt = undefined
      // The time a refusal names is taken each time, for the next attempt:
      // a clock set right after an immediate rejoin (which the network then
      // lost) otherwise joined with the offset of before for good, each
      // attempt refused (the simulator, a clock step).
      const moved =
        (skewed !== null && options.onServerTime?.(Number(skewed[1])) === true) ||
        (replayed !== null && options.onJoinReplayed?.(Number(replayed[1])) === true) ||
        (ahead !== undefined && options.onServerTime?.(ahead) === true)
      if (moved && !skewRejoined) {
        // Joined again at once, in the server's time or past the proof it
        // accepted last (once until a connection gets through: the time is
        // unauthenticated, and a second refusal waits on the backoff); a
        // sync round waiting for the link runs again on the new connection
        // (device-sync/rounds.ts).
        skewRejoined = true
        void open()
        return
      }
      const refusal = refusalOf(code, reason)
      if (refusal === undefined) {
        if (wasSynced) attempt = 0
      } else if (!reported.has(refusal.code)) {
        options.onError?.(refusal.code, refusal.message)
      }
      setState('disconnected', reason, !wasSynced)
      schedule(
        code === CloseCode.serverClosing
          ? restartReconnectDelayMs(options.random())
          : code === CloseCode.generationChanged && options.spreadsMove?.() !== false
            ? generationMoveDelayMs(options.deviceId)
            : undefined,
      )
    })
    session = startSession({
      replica: options.replica,
      connection: conn,
      // The controller sends step 1 itself, to learn from the answer.
      sendStep1OnStart: false,
      forwardUpdates: options.mode !== 'periodic',
      forwardAfterAnswer: true,
      ...(options.signed === undefined ? {} : { signed: options.signed(conn.id) }),
      ...(options.onHello === undefined
        ? {}
        : {
            onHello: async (key: Uint8Array, cert: Uint8Array, gen: Uint8Array | undefined) => {
              const hello = options.onHello as NonNullable<ServerLinkOptions['onHello']>
              const statement = await hello(key, cert, conn, gen)
              await options.onGeneration?.(statement, conn)
            },
          }),
      onRefused: (error: RostersyncError) => {
        // Reported once: a refused hello closes the link with the same code.
        reported.add(error.code)
        options.onError?.(error.code, error.message)
      },
      onRemoteError: (code, message) => {
        reported.add(code)
        // This device's stamps ran ahead of the server's time (its clock
        // moved ahead while connected): the server said its time, and the
        // link joins again at once in it, as after CLOCK_SKEW (the device
        // rewrites those stamps at the hello: StampTime.setOffset).
        // Read without the user the server names after it (a user id may
        // hold any text, "; peer time 5" included).
        const ahead =
          /^update holds a stamp .* ahead of this peer's time .*; peer time (\d+)$/.exec(
            withoutUser(message),
          )
        if (code === 'INVALID_RECORD' && ahead !== null) stampsAheadAt = Number(ahead[1])
        options.onError?.(code, message)
      },
      onSynced: () => {
        skewRejoined = false
        refusedBefore = undefined
        options.onSynced?.()
      },
    })
    setState('connected')
    options.onConnected?.(session)
  }
  /** A refused link's attempt by hand failed: refused again, with the refusal's reason. */
  const backToRefused = (): boolean => {
    if (refusedBefore === undefined) return false
    lastFailure = refusedBefore
    refusedBefore = undefined
    setState('refused', lastFailure.replace(/^\d+: /, ''))
    return true
  }
  if (state !== 'paused') void open()
  const drop = (): void => {
    generation++
    options.clock.clearTimeout(timer)
    session?.stop()
    session = undefined
    connection?.close(1000, 'device closing')
    connection = undefined
  }
  return {
    get state() {
      return state
    },
    get synced() {
      return session?.synced === true
    },
    get session() {
      return session
    },
    get nextAttemptAt() {
      return state === 'disconnected' ? nextAttemptAt : undefined
    },
    get reason() {
      return state === 'connected' ? undefined : lastFailure
    },
    retry(refused = false) {
      if (state !== 'disconnected' && state !== 'connected' && !(refused && state === 'refused'))
        return
      if (state === 'refused') refusedBefore = lastFailure ?? 'refused'
      // A connected link is retried when its answers stopped coming (the
      // controller's answer timeout): the session may be waiting for an
      // answer that was lost, and every later request would be matched
      // with the answer to the one before it. A new connection starts a
      // clean session.
      drop()
      void open()
    },
    pause() {
      if (state === 'closed' || state === 'refused') return
      setState('paused')
      drop()
    },
    resume() {
      if (state !== 'paused') return
      generation++
      attempt = 0
      void open()
    },
    close() {
      setState('closed')
      drop()
    },
  }
}

/**
 * The error a close reports when the server closed on a refusal (its
 * reason starts with the error code: `INVALID_RECORD: ...`).
 */
function refusalOf(code: number, reason: string): { code: string; message: string } | undefined {
  if (
    code !== CloseCode.refused &&
    code !== CloseCode.malformed &&
    code !== CloseCode.tooLarge &&
    code !== CloseCode.internal
  )
    return undefined
  const match = /^([A-Z][A-Z0-9_]*)(?::\s*(.*))?$/s.exec(reason)
  if (match === null)
    return { code: 'SYNC_FAILED', message: `closed by the server: ${code} ${reason}` }
  return { code: match[1] ?? 'SYNC_FAILED', message: match[2] ?? reason }
}
