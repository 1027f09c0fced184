/**
 * The server's WebSocket endpoint: the y-websocket protocol on `ws`, one room
 * per site. A device joins with its id and the site key in the URL (the only
 * channel an unmodified y-websocket client has: `params`); every inbound
 * update is size-checked, decoded and authorised before anything is applied.
 */
import { timingSafeEqual } from 'node:crypto'
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import * as Y from 'yjs'
import { WebSocketServer, type WebSocket } from 'ws'
import { checkUpdate } from '../core/authorize.js'
import { RostersyncError } from '../core/errors.js'
import type { NewEvent } from '../core/events.js'
import { SERVER_ID } from '../core/ids.js'
import { limits, netLimits } from '../core/limits.js'
import { CloseCode, decodeMessage, encodeMessage, type Message } from '../core/protocol.js'
import type { RecordSchema } from '../core/schema.js'
import type { Replica } from '../peers/replica.js'
import type { DeviceRegistry } from './device-registry.js'

/** Options of {@link startSyncServer}. */
export interface SyncServerOptions {
  readonly replica: Replica
  readonly schema: RecordSchema
  readonly registry: DeviceRegistry
  readonly host: string
  readonly port: number
  readonly siteKey: string | undefined
  /** The room name devices use (the y-websocket room). */
  readonly room: string
}

/** A listening sync server. */
export interface SyncServer {
  readonly url: string
  readonly http: string
  readonly httpServer: Server
  /** Closes every connection of a device (after a revoke). */
  disconnect(deviceId: string, code: number, reason: string): void
  close(): Promise<void>
}

interface Connection {
  readonly id: string
  readonly deviceId: string
  readonly socket: WebSocket
}

let nextConnection = 1

/** Starts listening; resolves once the port is bound. */
export async function startSyncServer(options: SyncServerOptions): Promise<SyncServer> {
  const httpServer = createHttpServer((_req, res) => {
    res.writeHead(404, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: 'NOT_FOUND' }))
  })
  const wss = new WebSocketServer({ noServer: true, maxPayload: netLimits.messageBytesMax })
  const connections = new Map<string, Connection>()
  const offUpdate = options.replica.onUpdate(({ update, from }) => {
    const bytes = encodeMessage({ type: 'sync-update', update })
    for (const conn of connections.values()) {
      if (conn.id !== from) send(conn, bytes)
    }
  })
  httpServer.on('upgrade', (req, socket, head) => {
    const refusal = admit(req, options, connections.size)
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (refusal !== undefined) {
        ws.close(refusal.code, refusal.reason)
        return
      }
      const url = new URL(req.url ?? '/', 'http://x')
      const deviceId = url.searchParams.get('device') ?? ''
      const conn: Connection = { id: `ws-${nextConnection++}`, deviceId, socket: ws }
      connections.set(conn.id, conn)
      const isNew = options.registry.seen(
        deviceId,
        url.searchParams.get('name') ?? deviceId,
        req.socket.remoteAddress ?? '',
      )
      if (isNew) void logEvent(options.replica, { type: 'device-registered', deviceId })
      ws.on('message', (data: Buffer) => void onMessage(conn, new Uint8Array(data), options))
      ws.on('close', () => {
        connections.delete(conn.id)
        options.registry.left(deviceId)
      })
      ws.on('error', () => ws.terminate())
      send(
        conn,
        encodeMessage({
          type: 'sync-step1',
          stateVector: Y.encodeStateVector(options.replica.doc),
        }),
      )
    })
  })
  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject)
    httpServer.listen(options.port, options.host, () => resolve())
  })
  const address = httpServer.address() as AddressInfo
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return {
    url: `ws://${host}:${address.port}`,
    http: `http://${host}:${address.port}`,
    httpServer,
    disconnect(deviceId, code, reason) {
      for (const conn of connections.values())
        if (conn.deviceId === deviceId) conn.socket.close(code, reason)
    },
    async close() {
      offUpdate()
      for (const conn of connections.values())
        conn.socket.close(CloseCode.serverClosing, 'server closing')
      wss.close()
      await new Promise<void>((resolve) => httpServer.close(() => resolve()))
    },
  }
}

/** Decides whether a connection may join; undefined admits it. */
function admit(
  req: IncomingMessage,
  options: SyncServerOptions,
  connections: number,
): { code: number; reason: string } | undefined {
  const url = new URL(req.url ?? '/', 'http://x')
  if (decodeURIComponent(url.pathname.slice(1)) !== options.room) {
    return {
      code: CloseCode.unknownRoom,
      reason: `UNKNOWN_ROOM: this site's room is ${options.room}`,
    }
  }
  if (connections >= netLimits.connectionsMax) return { code: 1013, reason: 'TOO_MANY_CONNECTIONS' }
  const deviceId = url.searchParams.get('device') ?? ''
  if (
    !/^[A-Za-z0-9][A-Za-z0-9._:-]*$/.test(deviceId) ||
    deviceId.length > limits.writerIdCharsMax ||
    deviceId === SERVER_ID
  ) {
    return {
      code: CloseCode.authFailed,
      reason: 'PEER_UNKNOWN: a device id is required (?device=ID)',
    }
  }
  if (
    options.siteKey !== undefined &&
    !sameSecret(url.searchParams.get('key') ?? '', options.siteKey)
  ) {
    return { code: CloseCode.authFailed, reason: 'AUTH_FAILED: site key rejected' }
  }
  if (options.registry.isRevoked(deviceId))
    return { code: CloseCode.revoked, reason: 'PEER_REVOKED' }
  return undefined
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

function send(conn: Connection, bytes: Uint8Array): void {
  if (conn.socket.readyState !== conn.socket.OPEN) return
  if (conn.socket.bufferedAmount > netLimits.sendBufferBytesMax) {
    conn.socket.terminate()
    return
  }
  conn.socket.send(bytes)
}

async function onMessage(
  conn: Connection,
  bytes: Uint8Array,
  options: SyncServerOptions,
): Promise<void> {
  let message: Message
  try {
    message = decodeMessage(bytes)
    await handle(conn, message, options)
  } catch (error) {
    if (!(error instanceof RostersyncError)) throw error
    send(conn, encodeMessage({ type: 'error', code: error.code, message: error.message }))
    await logEvent(options.replica, {
      type: 'write-refused',
      deviceId: conn.deviceId,
      code: error.code,
      message: error.message,
    })
  }
}

async function handle(
  conn: Connection,
  message: Message,
  options: SyncServerOptions,
): Promise<void> {
  const replica = options.replica
  switch (message.type) {
    case 'sync-step1': {
      const update = Y.encodeStateAsUpdate(replica.doc, message.stateVector)
      send(conn, encodeMessage({ type: 'sync-step2', update }))
      return
    }
    case 'sync-step2':
    case 'sync-update': {
      checkUpdate(replica.doc, message.update, {
        // A device writes its own part and relays other devices' parts
        // (LAN sync); the server's part is the server's alone.
        mayWrite: (owner) => owner !== SERVER_ID,
        schema: options.schema,
      })
      await replica.applyRemote(message.update, conn.id)
      return
    }
    case 'awareness':
    case 'query-awareness':
    case 'auth':
      // Presence is not part of the roster; rostersync neither stores nor relays it.
      return
    case 'error':
      return
  }
}

async function logEvent(replica: Replica, event: NewEvent): Promise<void> {
  try {
    await replica.write((ctx) => ctx.event(event))
  } catch {
    // Logging the event is best effort: the refusal itself has already been
    // sent to the device, and a failing store is reported on every write.
  }
}
