/**
 * A device's link to the server over WebSocket, speaking the y-websocket
 * protocol through a sync session. Reconnects with exponential backoff and
 * full jitter, through the injected clock; stops for good when the server
 * refuses the device (bad site key, revoked).
 */
import { retryDelayMs } from '../core/backoff.js'
import type { Clock } from '../core/clock.js'
import type { RostersyncError } from '../core/errors.js'
import { isFinalClose } from '../core/protocol.js'
import type { Connection } from '../core/transport.js'
import { wsConnect } from '../transports/ws-transport.js'
import type { Replica } from './replica.js'
import { startSession, type SyncSession } from './sync-session.js'

/** Connection state, as the device's status reports it. */
export type LinkState = 'connecting' | 'connected' | 'disconnected' | 'refused' | 'closed'

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
  readonly onState?: (state: LinkState, detail?: string) => void
  /** A refusal from the server, or a failure to apply what it sent. */
  readonly onError?: (code: string, message: string) => void
  /** The server's step 2 is durable here. */
  readonly onSynced?: () => void
}

/** A live server link. */
export interface ServerLink {
  readonly state: LinkState
  /** True once this connection's initial exchange is durable here. */
  readonly synced: boolean
  /** The running session, while connected. */
  readonly session: SyncSession | undefined
  /** Reconnects now (a manual retry), resetting the backoff. */
  retry(): void
  close(): void
}

/** The URL a device joins with: room path, device id, name, site key. */
export function joinUrl(
  options: Pick<ServerLinkOptions, 'url' | 'room' | 'deviceId' | 'name' | 'siteKey'>,
): string {
  const url = new URL(
    `${options.url.replace(/\/$/, '')}/${encodeURIComponent(options.room ?? 'roster')}`,
  )
  url.searchParams.set('device', options.deviceId)
  url.searchParams.set('name', options.name)
  if (options.siteKey !== undefined) url.searchParams.set('key', options.siteKey)
  return url.toString()
}

/** Connects (and keeps reconnecting) to the server. */
export function connectToServer(options: ServerLinkOptions): ServerLink {
  let state: LinkState = 'connecting'
  let connection: Connection | undefined
  let session: SyncSession | undefined
  let attempt = 0
  let timer: unknown
  const setState = (next: LinkState, detail?: string): void => {
    state = next
    options.onState?.(next, detail)
  }
  const schedule = (): void => {
    timer = options.clock.setTimeout(() => void open(), retryDelayMs(attempt++, options.random()))
  }
  const open = async (): Promise<void> => {
    setState('connecting')
    let conn: Connection
    try {
      conn = await wsConnect(joinUrl(options))
    } catch (error) {
      if (state === 'closed') return
      setState('disconnected', (error as Error).message)
      schedule()
      return
    }
    if (state === 'closed') {
      conn.close(1000, 'device closing')
      return
    }
    connection = conn
    conn.onClose(({ code, reason }) => {
      session?.stop()
      session = undefined
      connection = undefined
      if (state === 'closed') return
      if (isFinalClose(code)) {
        setState('refused', reason)
        return
      }
      setState('disconnected', reason)
      schedule()
    })
    setState('connected')
    session = startSession({
      replica: options.replica,
      connection: conn,
      onRefused: (error: RostersyncError) => options.onError?.(error.code, error.message),
      onRemoteError: (code, message) => options.onError?.(code, message),
      onSynced: () => {
        attempt = 0
        options.onSynced?.()
      },
    })
  }
  void open()
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
    retry() {
      if (state === 'closed' || state === 'connected' || state === 'connecting') return
      options.clock.clearTimeout(timer)
      attempt = 0
      void open()
    },
    close() {
      setState('closed')
      options.clock.clearTimeout(timer)
      session?.stop()
      connection?.close(1000, 'device closing')
    },
  }
}
