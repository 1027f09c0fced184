/**
 * The server's WebSocket endpoint: the y-websocket protocol on `ws`, one room
 * per site. A device joins with its id and the site key in the URL (the only
 * channel an unmodified y-websocket client has: `params`); every inbound
 * update is size-checked, decoded and authorised before anything is applied.
 */
import { timingSafeEqual } from 'node:crypto'
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'
import { checkUpdate } from '../core/authorize.js'
import type { NewEvent } from '../core/events.js'
import { SERVER_ID } from '../core/ids.js'
import { limits, netLimits } from '../core/limits.js'
import { CloseCode } from '../core/protocol.js'
import type { Connection } from '../core/transport.js'
import type { RecordSchema } from '../core/schema.js'
import type { Replica } from '../peers/replica.js'
import { startSession } from '../peers/sync-session.js'
import { wrapWebSocket } from '../transports/ws-transport.js'
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
  /** Handles plain HTTP requests (the JSON API); 404 when absent. */
  readonly onHttp?: (req: IncomingMessage, res: ServerResponse) => void
}

/** A listening sync server. */
export interface SyncServer {
  readonly url: string
  readonly http: string
  readonly httpServer: Server
  /** Ids of the devices connected now. */
  connectedDevices(): string[]
  /** Closes every connection of a device (after a revoke). */
  disconnect(deviceId: string, code: number, reason: string): void
  close(): Promise<void>
}

interface Member {
  readonly deviceId: string
  readonly connection: Connection
}

/** Starts listening; resolves once the port is bound. */
export async function startSyncServer(options: SyncServerOptions): Promise<SyncServer> {
  const httpServer = createHttpServer((req, res) =>
    (options.onHttp ?? ((_q, r) => notFound(r)))(req, res),
  )
  const wss = new WebSocketServer({ noServer: true, maxPayload: netLimits.messageBytesMax })
  const members = new Map<string, Member>()
  httpServer.on('upgrade', (req, socket, head) => {
    const refusal = admit(req, options, members.size)
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (refusal !== undefined) {
        ws.close(refusal.code, refusal.reason)
        return
      }
      const url = new URL(req.url ?? '/', 'http://x')
      const deviceId = url.searchParams.get('device') ?? ''
      const connection = wrapWebSocket(ws, req.socket.remoteAddress ?? '')
      members.set(connection.id, { deviceId, connection })
      const name = url.searchParams.get('name') ?? deviceId
      if (options.registry.seen(deviceId, name, connection.remote)) {
        void logEvent(options.replica, { type: 'device-registered', deviceId })
      }
      const session = startSession({
        replica: options.replica,
        connection,
        reportErrors: true,
        check: (update) =>
          checkUpdate(options.replica.doc, update, {
            // A device writes its own part and relays other devices' parts
            // (LAN sync); the server's part is the server's alone.
            mayWrite: (owner) => owner !== SERVER_ID,
            schema: options.schema,
          }),
        onRefused: (error) =>
          void logEvent(options.replica, {
            type: 'write-refused',
            deviceId,
            code: error.code,
            message: error.message,
          }),
      })
      connection.onClose(() => {
        session.stop()
        members.delete(connection.id)
        options.registry.left(deviceId)
      })
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
    connectedDevices: () => [...members.values()].map((m) => m.deviceId),
    disconnect(deviceId, code, reason) {
      for (const m of members.values())
        if (m.deviceId === deviceId) m.connection.close(code, reason)
    },
    async close() {
      for (const m of members.values())
        m.connection.close(CloseCode.serverClosing, 'server closing')
      wss.close()
      httpServer.closeAllConnections()
      await new Promise<void>((resolve) => httpServer.close(() => resolve()))
    },
  }
}

function notFound(res: ServerResponse): void {
  res.writeHead(404, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ error: { code: 'NOT_FOUND', message: 'no such endpoint' } }))
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

async function logEvent(replica: Replica, event: NewEvent): Promise<void> {
  try {
    await replica.write((ctx) => ctx.event(event))
  } catch {
    // Logging the event is best effort: the refusal itself has already been
    // sent to the device, and a failing store is reported on every write.
  }
}
