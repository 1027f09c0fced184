/**
 * A device's link to the server over WebSocket, speaking the y-websocket
 * protocol. Updates from the server go through `replica.applyRemote` (so they
 * are durable before they count); the device's own durable changes, and what
 * it relayed from LAN peers, go to the server. Reconnects with exponential
 * backoff and jitter, through the injected clock; stops for good when the
 * server refuses it (bad site key, revoked).
 */
import WebSocket from 'ws'
import * as Y from 'yjs'
import type { Clock } from '../core/clock.js'
import { netLimits } from '../core/limits.js'
import { decodeMessage, encodeMessage, isFinalClose } from '../core/protocol.js'
import type { Replica } from './replica.js'

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
  readonly onError?: (code: string, message: string) => void
}

/** A live server link. */
export interface ServerLink {
  readonly state: LinkState
  /** True once the first exchange (both step 2s) of this connection is done. */
  readonly synced: boolean
  close(): void
}

const SERVER_LINK = 'server'

/** Connects (and keeps reconnecting) to the server. */
export function connectToServer(options: ServerLinkOptions): ServerLink {
  let socket: WebSocket | undefined
  let state: LinkState = 'connecting'
  let synced = false
  let attempt = 0
  let timer: unknown
  const setState = (next: LinkState, detail?: string): void => {
    state = next
    options.onState?.(next, detail)
  }
  const offUpdate = options.replica.onUpdate(({ update, from }) => {
    if (from !== SERVER_LINK && socket?.readyState === WebSocket.OPEN) {
      socket.send(encodeMessage({ type: 'sync-update', update }))
    }
  })
  const open = (): void => {
    const url = new URL(
      `${options.url.replace(/\/$/, '')}/${encodeURIComponent(options.room ?? 'roster')}`,
    )
    url.searchParams.set('device', options.deviceId)
    url.searchParams.set('name', options.name)
    if (options.siteKey !== undefined) url.searchParams.set('key', options.siteKey)
    setState('connecting')
    const ws = new WebSocket(url, { maxPayload: netLimits.messageBytesMax })
    socket = ws
    ws.binaryType = 'nodebuffer'
    ws.on('open', () => {
      attempt = 0
      setState('connected')
      ws.send(
        encodeMessage({
          type: 'sync-step1',
          stateVector: Y.encodeStateVector(options.replica.doc),
        }),
      )
    })
    ws.on('message', (data: Buffer) => void onMessage(ws, new Uint8Array(data)))
    ws.on('error', () => undefined)
    ws.on('close', (code, reason) => {
      synced = false
      if (state === 'closed') return
      if (isFinalClose(code)) {
        setState('refused', reason.toString())
        return
      }
      setState('disconnected', reason.toString())
      schedule()
    })
  }
  const onMessage = async (ws: WebSocket, bytes: Uint8Array): Promise<void> => {
    try {
      const message = decodeMessage(bytes)
      switch (message.type) {
        case 'sync-step1':
          ws.send(
            encodeMessage({
              type: 'sync-step2',
              update: Y.encodeStateAsUpdate(options.replica.doc, message.stateVector),
            }),
          )
          return
        case 'sync-step2':
          await options.replica.applyRemote(message.update, SERVER_LINK)
          synced = true
          return
        case 'sync-update':
          await options.replica.applyRemote(message.update, SERVER_LINK)
          return
        case 'error':
          options.onError?.(message.code, message.message)
          return
        default:
          return
      }
    } catch (error) {
      options.onError?.(
        (error as { code?: string }).code ?? 'SYNC_FAILED',
        (error as Error).message,
      )
    }
  }
  const schedule = (): void => {
    // Exponential backoff with full jitter: a site's devices coming back
    // after a server restart do not all reconnect in the same instant.
    const cap = Math.min(
      netLimits.retryDelayMsMax,
      netLimits.retryDelayMsMin * 2 ** Math.min(attempt, 20),
    )
    attempt++
    timer = options.clock.setTimeout(
      open,
      Math.max(netLimits.retryDelayMsMin / 2, options.random() * cap),
    )
  }
  open()
  return {
    get state() {
      return state
    },
    get synced() {
      return synced
    },
    close() {
      setState('closed')
      options.clock.clearTimeout(timer)
      offUpdate()
      socket?.close(1000, 'device closing')
    },
  }
}
