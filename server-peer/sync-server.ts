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

/** Options of {@link createSyncEndpoint}. */
export interface SyncEndpointOptions {
  readonly replica: Replica
  readonly schema: RecordSchema
  readonly registry: DeviceRegistry
  readonly siteKey: string | undefined
  /** The room name devices use (the y-websocket room). */
  readonly room: string
}

/** Options of {@link startSyncServer}. */
export interface SyncServerOptions extends SyncEndpointOptions {
  readonly host: string
  readonly port: number
  /** Handles plain HTTP requests (the JSON API); 404 when absent. */
  readonly onHttp?: (req: IncomingMessage, res: ServerResponse) => void
}

/**
 * The server's side of the sync protocol, whatever the transport: admits
 * or refuses a connection by its join URL, then runs a sync session on it.
 * The WebSocket server below feeds it; the simulator feeds it simulated
 * connections.
 */
export interface SyncEndpoint {
  /**
   * Takes a newly opened connection with the URL the device joined with
   * (`/room?device=ID&name=N&key=K`); refuses it with a close code, or
   * syncs on it until it closes.
   */
  accept(connection: Connection, url: string): void
  /** Ids of the devices connected now. */
  connectedDevices(): string[]
  /** Closes every connection of a device (after a revoke). */
  disconnect(deviceId: string, code: number, reason: string): void
  /** Closes every connection. */
  closeAll(code: number, reason: string): void
}

/** A listening sync server. */
export interface SyncServer {
  readonly url: string
  readonly http: string
  readonly httpServer: Server
  close(): Promise<void>
}

interface Member {
  readonly deviceId: string
  readonly connection: Connection
}

/** The transport-independent sync endpoint. */
export function createSyncEndpoint(options: SyncEndpointOptions): SyncEndpoint {
  const members = new Map<string, Member>()
  const { replica, registry } = options
  return {
    accept(connection, rawUrl) {
      const url = new URL(rawUrl, 'http://x')
      const refusal = admit(url, options, members.size)
      if (refusal !== undefined) {
        connection.close(refusal.code, refusal.reason)
        return
      }
      const deviceId = url.searchParams.get('device') ?? ''
      const name = url.searchParams.get('name') ?? deviceId
      members.set(connection.id, { deviceId, connection })
      const serial = url.searchParams.get('serial') ?? deviceId
      if (registry.seen(deviceId, name, connection.remote, serial)) {
        void logEvent(replica, { type: 'device-registered', deviceId })
      }
      const session = startSession({
        replica,
        connection,
        reportErrors: true,
        // Devices learn from the answer what the server holds of theirs
        // (PROTOCOL.md, "Acknowledgement"): every step 1 is answered with
        // step 2 and the server's own step 1.
        answerStep1WithStateVector: true,
        sendStep1OnStart: false,
        // A device in periodic mode takes changes only when it asks (step 1).
        forwardUpdates: url.searchParams.get('mode') !== 'periodic',
        check: (update) =>
          checkUpdate(replica.doc, update, {
            // A device writes its own part and relays other devices' parts
            // (LAN sync); the server's part is the server's alone.
            mayWrite: (owner) => owner !== SERVER_ID,
            schema: options.schema,
            now: replica.now(),
          }),
        onApplied: () => registry.direction(deviceId, 'deviceToServer', 'success'),
        onAnswered: () => registry.direction(deviceId, 'serverToDevice', 'success'),
        onRefused: (error) => {
          registry.direction(deviceId, 'deviceToServer', 'failed', error.code)
          void logEvent(replica, {
            type: error.code === 'STORAGE_FAILED' ? 'save-to-server-failed' : 'write-refused',
            deviceId,
            code: error.code,
            message: error.message,
          })
        },
      })
      connection.onClose(() => {
        session.stop()
        members.delete(connection.id)
        registry.left(deviceId)
      })
    },
    connectedDevices: () => [...members.values()].map((m) => m.deviceId),
    disconnect(deviceId, code, reason) {
      for (const m of members.values())
        if (m.deviceId === deviceId) m.connection.close(code, reason)
    },
    closeAll(code, reason) {
      for (const m of members.values()) m.connection.close(code, reason)
    },
  }
}

/** Starts listening (WebSocket and HTTP on one port); resolves once the port is bound. */
export async function startSyncServer(
  options: SyncServerOptions,
  endpoint: SyncEndpoint,
): Promise<SyncServer> {
  const httpServer = createHttpServer((req, res) =>
    (options.onHttp ?? ((_q, r) => notFound(r)))(req, res),
  )
  const wss = new WebSocketServer({ noServer: true, maxPayload: netLimits.messageBytesMax })
  httpServer.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      endpoint.accept(wrapWebSocket(ws, req.socket.remoteAddress ?? ''), req.url ?? '/')
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
    async close() {
      endpoint.closeAll(CloseCode.serverClosing, 'server closing')
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
  url: URL,
  options: SyncEndpointOptions,
  connections: number,
): { code: number; reason: string } | undefined {
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
    await replica.writeMeta((ctx) => ctx.event(event))
  } catch {
    // Logging the event is best effort: the refusal itself has already been
    // sent to the device, and a failing store is reported on every write.
  }
}
