/**
 * The server's WebSocket endpoint: the y-websocket protocol on `ws`, one room
 * per site. A device joins with its id and the site key in the URL (the only
 * channel an unmodified y-websocket client has: `params`); every inbound
 * update is size-checked, decoded and authorised before anything is applied.
 *
 * The front door (issue 11) is total: any request target, however broken,
 * is refused with a typed close, and nothing a caller sends makes `accept`
 * throw; a connection still in its handshake is bounded in time and in
 * number (per address and in all). What many connections do together is
 * paced per event-loop turn: upgrades (`UpgradeQueue`) and the answers to
 * peers' close frames (`closesPerTurnMax`, transports/ws-transport.ts).
 */
import * as Y from 'yjs'
import { timingSafeEqual } from 'node:crypto'
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { WebSocketServer } from 'ws'
import { checkUpdate, refusedUserOf } from '../core/authorize.js'
import type { NewEvent } from '../core/events.js'
import {
  AuthFailedError,
  clip,
  excerpt,
  ForbiddenWriteError,
  MalformedRequestError,
  PeerUnknownError,
  RostersyncError,
  SessionReplacedError,
  type ErrorCode,
} from '../core/errors.js'
import { DEVICE_ID_PATTERN } from '../core/ids.js'
import { limits, netLimits } from '../core/limits.js'
import type { Clock } from '../core/clock.js'
import { CloseCode } from '../core/protocol.js'
import { isDerivedClientId, verifyJoinProof } from '../core/signing.js'
import type { Identity } from '../peers/identity.js'
import type { ServerSigning } from '../peers/server-signing.js'
import { scanOrRefuse } from '../peers/signed-link.js'
import { certifyLink, type DeviceKeys } from './device-keys.js'
import type { CloseInfo, Connection } from '../core/transport.js'
import type { RecordSchema } from '../core/schema.js'
import type { Replica } from '../peers/replica.js'
import { startSession } from '../peers/sync-session.js'
import { wrapWebSocket } from '../transports/ws-transport.js'
import { ReceiveBudget } from '../transports/receive-deadline.js'
import type { DeviceRegistry, DirectionState } from './device-registry.js'
import { RefusalTracker } from './refusal-tracker.js'
import { TurnQueue } from './turn-queue.js'
import { Handshakes, RequestsInFlight, UpgradeQueue } from './front-door.js'

export { UpgradeQueue } from './front-door.js'

/** Options of {@link createSyncEndpoint}. */
export interface SyncEndpointOptions {
  readonly replica: Replica
  readonly schema: RecordSchema
  readonly registry: DeviceRegistry
  /** The site key; undefined only for an open site (`open: true`). */
  readonly siteKey: string | undefined
  /** The room name devices use (the y-websocket room). */
  readonly room: string
  /** The server's signed generation statement for each hello (issue 13); undefined at generation 0. */
  readonly generation?: () => Uint8Array | undefined
  /** Signed writes (PROTOCOL.md): the server's keys and its registry of device keys. */
  readonly signing: {
    readonly identity: Identity
    readonly signer: ServerSigning
    readonly keys: DeviceKeys
    readonly clock: Clock
  }
  /**
   * Approval mode: a device id never seen before is registered as pending
   * and refused (`PEER_PENDING`) until the administrator approves it.
   */
  readonly approveDevices?: boolean
  /**
   * The last door of an admitted link, before anything is sent on it (the
   * cap on devices moving to a new generation, generation-moves.ts): the
   * connection to go on with, or undefined once it closed it.
   */
  readonly gate?: (connection: Connection, deviceId: string) => Connection | undefined
}

/** Options of {@link startSyncServer}. */
export interface SyncServerOptions extends SyncEndpointOptions {
  readonly host: string
  readonly port: number
  /** Handles plain HTTP requests (the JSON API); 404 when absent. */
  readonly onHttp?: (req: IncomingMessage, res: ServerResponse) => void
  /** How long a connection may take to send its request head; `netLimits.handshakeTimeoutMs` by default. */
  readonly handshakeTimeoutMs?: number
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
   * syncs on it until it closes. Never throws: whatever the URL, the
   * connection is admitted or closed with a typed code. A second
   * connection with a connected device's id replaces the first, which is
   * closed with `SESSION_REPLACED` (PROTOCOL.md, "Joining").
   */
  accept(connection: Connection, url: string): void
  /** Ids of the devices connected now. */
  connectedDevices(): string[]
  /** Closes every connection of a device (after a revoke). */
  disconnect(deviceId: string, code: number, reason: string): void
  /**
   * Drops what the endpoint remembers of a device the registry forgot (its
   * refusals, its failures logged): nothing of a forgotten id stays.
   */
  forget(deviceId: string): void
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
  // The one connection of each device id (see replaceOlder): a join or a
  // revocation finds it without going through every connection.
  const byDevice = new Map<string, Member>()
  const { replica, registry } = options
  const refusals = new RefusalTracker()
  const syncLog = new ServerSyncLog(replica, registry)
  /** Serves an admitted device's link: registers it, certifies it, syncs. */
  function link(
    connection: Connection,
    url: URL,
    deviceId: string,
    publicKey: Uint8Array | undefined,
  ): void {
    const name = url.searchParams.get('name') ?? deviceId
    replaceOlder(members, byDevice, deviceId)
    const member: Member = { deviceId, connection }
    members.set(connection.id, member)
    byDevice.set(deviceId, member)
    const serial = url.searchParams.get('serial') ?? deviceId
    if (registry.seen(deviceId, name, connection.remote, serial)) {
      void logEvent(replica, { type: 'device-registered', deviceId })
    }
    const { signing } = options
    // The server's key and the device's certificate go first: the device
    // checks everything the server sends with that key. Renewed while
    // the link is open (certifyLink).
    const stopCertifying =
      publicKey === undefined
        ? undefined
        : certifyLink({
            connection,
            key: signing.identity.key,
            keys: signing.keys,
            site: signing.signer.site,
            deviceId,
            publicKey: publicKey,
            clock: signing.clock,
            ...(options.generation === undefined ? {} : { generation: options.generation }),
          })
    const refused = (error: RostersyncError, update?: Uint8Array): void => {
      registry.direction(deviceId, 'deviceToServer', 'failed', error.code)
      // Once per cause: a refused change comes back on every reconnect.
      if (!refusals.refused(deviceId, error.code, update, replica.doc)) return
      syncLog.failed(deviceId, 'deviceToServer', error)
      const userId = refusedUserOf(error)
      void logEvent(replica, {
        type: error.code === 'STORAGE_FAILED' ? 'save-to-server-failed' : 'write-refused',
        deviceId,
        ...(userId === undefined ? {} : { userId }),
        code: error.code,
        message: error.message,
      })
    }
    const session = startSession({
      replica,
      connection,
      peerId: deviceId,
      reportErrors: true,
      // A device with a key speaks signed envelopes; an unmodified
      // y-websocket client (no key) writes plain updates into its own part.
      ...(publicKey === undefined ? {} : { signed: () => signing.signer.link(deviceId) }),
      // Devices learn from the answer what the server holds of theirs
      // (PROTOCOL.md, "Acknowledgement"): every step 1 is answered with
      // step 2 and the server's own step 1.
      answerStep1WithStateVector: true,
      sendStep1OnStart: false,
      // A device in periodic mode takes changes only when it asks (step 1).
      forwardUpdates: url.searchParams.get('mode') !== 'periodic',
      check: (update) => {
        // A plain link (a y-websocket client, no key) writes under random
        // 32-bit clientIDs: one in the derived range is a signing
        // writer's (or will be), and taking it first would make that
        // writer's signed writes no-ops here.
        const ranges = scanOrRefuse(update)
        for (const client of ranges.from.keys()) {
          if (isDerivedClientId(client))
            throw new ForbiddenWriteError(
              `a plain update writes under Yjs client ${client}, in the range of signing writers' clientIDs`,
            )
        }
        checkUpdate(replica.doc, update, {
          // Its own part only: relays travel signed, by their writers.
          mayWrite: (owner) => owner === deviceId,
          schema: options.schema,
          now: replica.stampTime.horizon(),
          time: replica.stampTime.now(),
        })
        // The clientIDs it brings structs of (not those held already: an
        // echo of another plain writer's items is not a write of its own).
        const fresh = [...ranges.to].filter(
          ([client, to]) => to > Y.getState(replica.doc.store, client),
        )
        options.signing.signer.writerClients.admit(
          replica.doc,
          deviceId,
          fresh.map(([client]) => client),
        )
        // The intake uses this scan rather than scanning the update again.
        return ranges
      },
      // A device's link is not trusted: bounded rates, and a refused
      // update closes it with its code (PROTOCOL.md, "Refusals").
      untrusted: true,
      onStep1: (theirs) => {
        syncLog.started(deviceId, connection.id, theirs)
        refusals.step1(deviceId, theirs, replica.doc)
      },
      // Success means the server holds what the device sent: nothing of
      // this link held back, nothing refused before still missing.
      onApplied: () => {
        if (replica.heldBackFrom(connection.id) > 0) return
        if (refusals.settled(deviceId, replica.doc)) syncLog.note(deviceId, 'deviceToServer')
      },
      onAnswered: () => syncLog.note(deviceId, 'serverToDevice', connection.id),
      onRefused: refused,
    })
    connection.onClose((info) => {
      // A frame the transport would not read (too large, not a frame) is
      // a refusal as the session's are: the registry and the log say so.
      if (info.refusedFrame === true) refused(refusedFrameError(info))
      syncLog.closed(connection.id)
      stopCertifying?.()
      session.stop()
      replica.dropHeldBackFrom(connection.id)
      // The update being applied as it closed may be held back after
      // this: dropped too, once the session handled its last message.
      const drop = (): void => replica.dropHeldBackFrom(connection.id)
      void session.idle().then(drop, drop)
      members.delete(connection.id)
      if (byDevice.get(deviceId) === member) byDevice.delete(deviceId)
      registry.left(deviceId)
    })
  }
  const endpoint: SyncEndpoint = {
    accept(connection, rawUrl) {
      const verdict = admit(rawUrl, options, members.size, connection.remote)
      if ('code' in verdict) {
        syncLog.refusedJoin(rawUrl, verdict.reason)
        // A pending device's first proven key is bound while it waits:
        // the administrator approves that device, and no other key can
        // take the id between the approval and its next join.
        if (verdict.code === CloseCode.pending) {
          const url = parseJoinUrl(rawUrl)
          const key =
            url instanceof URL
              ? admitKey(url, url.searchParams.get('device') ?? '', options)
              : undefined
          // A clock days off is said first: waiting, the device would
          // never bind its key (its proofs' time refused) nor learn why.
          // So is a revoked key: it never binds, and waits for nothing.
          if (key !== undefined && 'code' in key && /^(CLOCK_SKEW|PEER_REVOKED)/.test(key.reason)) {
            connection.close(key.code, key.reason)
            return
          }
        }
        connection.close(verdict.code, verdict.reason)
        return
      }
      const { url } = verdict
      const deviceId = url.searchParams.get('device') ?? ''
      const joined = admitKey(url, deviceId, options)
      if ('code' in joined) {
        syncLog.refusedJoin(rawUrl, joined.reason)
        connection.close(joined.code, joined.reason)
        return
      }
      const gated = options.gate === undefined ? connection : options.gate(connection, deviceId)
      if (gated === undefined) return
      link(gated, url, deviceId, joined.publicKey)
    },
    connectedDevices: () => [...members.values()].map((m) => m.deviceId),
    disconnect(deviceId, code, reason) {
      byDevice.get(deviceId)?.connection.close(code, reason)
    },
    forget(deviceId) {
      refusals.forget(deviceId)
      syncLog.forget(deviceId)
    },
    closeAll(code, reason) {
      for (const m of members.values()) m.connection.close(code, reason)
    },
  }
  return {
    ...endpoint,
    accept(connection, rawUrl) {
      try {
        endpoint.accept(connection, rawUrl)
      } catch (error) {
        // No request may take the server down. A failure here is a bug,
        // reported to the device as one (retry with backoff) and closed.
        try {
          connection.close(CloseCode.internal, closeReason('INTERNAL', String(error)))
        } catch {
          // The connection is unusable already; nothing is left to close.
        }
      }
    },
  }
}

/**
 * Starts listening (WebSocket and HTTP on one port); resolves once the port
 * is bound. Neither an HTTP request nor an upgrade can throw out of here,
 * and a connection that has not sent its request head within
 * `handshakeTimeoutMs` is dropped (slowloris).
 */
export async function startSyncServer(
  options: SyncServerOptions,
  endpoint: SyncEndpoint,
): Promise<SyncServer> {
  const handshakes = new Handshakes(options.handshakeTimeoutMs ?? netLimits.handshakeTimeoutMs)
  const requests = new RequestsInFlight()
  const httpServer = createHttpServer(
    {
      headersTimeout: netLimits.httpHeadersTimeoutMs,
      requestTimeout: netLimits.httpRequestTimeoutMs,
    },
    (req, res) => {
      handshakes.done(req.socket)
      if (!requests.admit(req, res)) return
      try {
        ;(options.onHttp ?? ((_q, r) => notFound(r)))(req, res)
      } catch {
        if (!res.headersSent) res.writeHead(500).end()
      }
    },
  )
  httpServer.on('connection', (socket: Socket) => handshakes.start(socket))
  // Node's own answers to a request it cannot parse had no body; every
  // error the API gives carries { error: { code, message } } (a probe: a
  // 20 kB query string got an empty 431).
  httpServer.on('clientError', (error: Error & { code?: string }, socket: Socket) => {
    // A response already under way on the connection (keep-alive): no
    // second one into its stream, as Node's own handler does (a review).
    const sent = (socket as Socket & { _httpMessage?: { _headerSent?: boolean } })._httpMessage
    if (error.code === 'ECONNRESET' || !socket.writable || sent?._headerSent === true) {
      socket.destroy()
      return
    }
    const [status, reason, code, message] =
      error.code === 'HPE_HEADER_OVERFLOW'
        ? [
            431,
            'Request Header Fields Too Large',
            'MESSAGE_TOO_LARGE',
            'the request line and headers are too large',
          ]
        : error.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW'
          ? [413, 'Content Too Large', 'MESSAGE_TOO_LARGE', 'the chunk extensions are too large']
          : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? [408, 'Request Timeout', 'MALFORMED_REQUEST', 'the request did not arrive in time']
            : [400, 'Bad Request', 'MALFORMED_REQUEST', 'the request does not parse as HTTP/1.1']
    const body = JSON.stringify({ error: { code, message } })
    // Ended and let go: the socket allows half-open, and a client that
    // never closed its side kept a descriptor (a review).
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      () => socket.destroy(),
    )
  })
  // Peers' close handshakes in their turn (closesPerTurnMax).
  const closes = new TurnQueue<() => boolean>(
    (answer) => answer(),
    () => netLimits.closesPerTurnMax,
    () => netLimits.closeTurnMsMax,
  )
  const deferClose = (answer: () => boolean): void => closes.add(answer)
  const wss = new WebSocketServer({ noServer: true, maxPayload: netLimits.messageBytesMax })
  // Messages in progress on all the server's links together (receivingBytesMax).
  const receiving = new ReceiveBudget()
  const upgrades = new UpgradeQueue((req, socket, head) => {
    try {
      wss.handleUpgrade(req, socket, head, (ws) => {
        endpoint.accept(
          wrapWebSocket(ws, req.socket.remoteAddress ?? '', {
            tcp: socket,
            deferClose,
            messageBytesMax: netLimits.messageBytesMax,
            receiving,
          }),
          req.url ?? '/',
        )
      })
    } catch {
      socket.destroy()
    }
  })
  httpServer.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    handshakes.done(socket)
    // An error on a socket nobody listens to would be thrown as an
    // 'error' event: the process would exit.
    socket.on('error', () => socket.destroy())
    upgrades.add(req, socket, head)
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
      // A link closed by this side stops reading (a refused flood's backlog
      // is never parsed) and lets go of its socket when the peer ends it or
      // `closedLinkLingerMs` later. Shutting down, read on: the peer's answer
      // and end arrive at once, and the server does not wait out the linger.
      for (const ws of wss.clients) ws.resume()
      upgrades.close()
      closes.close()
      handshakes.close()
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

/** A refusal: the close code and its reason (`CODE: message`). */
interface Refusal {
  readonly code: number
  readonly reason: string
}

/** The close code of each refusal a device can get at the door (PROTOCOL.md, "Joining"). */
const closeCodeOf: Partial<Record<ErrorCode, number>> = {
  MALFORMED_REQUEST: CloseCode.malformedRequest,
  AUTH_FAILED: CloseCode.authFailed,
  PEER_UNKNOWN: CloseCode.authFailed,
  PEER_REVOKED: CloseCode.revoked,
  ID_CONFLICT: CloseCode.idConflict,
  PEER_PENDING: CloseCode.pending,
  REGISTRY_FULL: CloseCode.registryFull,
  SESSION_REPLACED: CloseCode.replaced,
}

/**
 * A close reason within the WebSocket limit (123 bytes: `ws` throws on
 * more): the code, then as much of the message as fits.
 */
function closeReason(code: string, message: string): string {
  let reason = `${code}: ${message}`
  while (Buffer.byteLength(reason) > netLimits.closeReasonBytesMax) {
    reason = reason.slice(0, Math.max(code.length, reason.length - 8))
  }
  return reason
}

/** The error a transport's refused frame stands for: its reason is `CODE: message`. */
function refusedFrameError(info: CloseInfo): RostersyncError {
  const at = info.reason.indexOf(': ')
  const code = info.reason.slice(0, at)
  return code === 'MESSAGE_TOO_LARGE'
    ? new RostersyncError('MESSAGE_TOO_LARGE', info.reason.slice(at + 2))
    : new RostersyncError('MALFORMED_MESSAGE', at < 0 ? info.reason : info.reason.slice(at + 2))
}

function refusalOf(error: RostersyncError): Refusal {
  return {
    code: closeCodeOf[error.code] ?? CloseCode.internal,
    reason: closeReason(error.code, error.message),
  }
}

/**
 * Parses a join URL (a request target: anything a client put on the
 * request line). Total: a target that does not parse as a URL, or whose
 * room does not decode, is `MALFORMED_REQUEST`, never an exception.
 */
export function parseJoinUrl(rawUrl: string): URL | MalformedRequestError {
  if (rawUrl.length > netLimits.joinUrlCharsMax)
    return new MalformedRequestError(`join URL over ${netLimits.joinUrlCharsMax} characters`)
  // A refusal quotes the path only: the query holds the site key, and a
  // close reason ends up in proxies' and clients' logs.
  const path = rawUrl.split('?', 1)[0] ?? ''
  // A path (the WebSocket request target), or a whole URL (what other
  // transports hand over); never `//host…`, which the URL parser would
  // read as a host.
  if (rawUrl.startsWith('//'))
    return new MalformedRequestError(`join URL ${excerpt(path, 32)} is not a path`)
  try {
    const url = new URL(rawUrl, 'http://x')
    decodeURIComponent(url.pathname)
    return url
  } catch {
    return new MalformedRequestError(`join URL ${excerpt(path, 32)} does not parse`)
  }
}

/**
 * Decides whether a connection may join: the parsed URL, or a refusal. The
 * order matters: nothing about the registry (revoked, pending, an id's
 * other case) is told to a caller without the site key.
 */
function admit(
  rawUrl: string,
  options: SyncEndpointOptions,
  connections: number,
  address: string,
): { url: URL } | Refusal {
  const url = parseJoinUrl(rawUrl)
  if (url instanceof MalformedRequestError) return refusalOf(url)
  // Decodes: parseJoinUrl checked that it does.
  if (decodeURIComponent(url.pathname.slice(1)) !== options.room) {
    return {
      code: CloseCode.unknownRoom,
      reason: closeReason('UNKNOWN_ROOM', `this site's room is ${options.room}`),
    }
  }
  if (connections >= netLimits.connectionsMax) return { code: 1013, reason: 'TOO_MANY_CONNECTIONS' }
  const deviceId = url.searchParams.get('device') ?? ''
  if (!DEVICE_ID_PATTERN.test(deviceId) || deviceId.length > limits.writerIdCharsMax) {
    return refusalOf(new PeerUnknownError(deviceId === '' ? '(none: ?device=ID)' : deviceId))
  }
  if (
    options.siteKey !== undefined &&
    !sameSecret(url.searchParams.get('key') ?? '', options.siteKey)
  ) {
    return refusalOf(new AuthFailedError())
  }
  const name = url.searchParams.get('name') ?? deviceId
  const serial = url.searchParams.get('serial') ?? deviceId
  const known = options.registry.get(deviceId) !== undefined
  // A revoked key registers no new id: it stood in the registry, and in
  // approval mode waited keyless, so that approving it bound the next key
  // that came with the site key (a probe).
  if (!known && url.searchParams.get('pub') !== null) {
    const checked = checkKey(url, deviceId, options)
    if ('code' in checked && checked.code === CloseCode.revoked) return checked
  }
  const refused = options.registry.admission(
    deviceId,
    { name, serial, address },
    options.approveDevices === true,
    // Only a join whose proof holds may make room (forget a device).
    () => {
      const checked = checkKey(url, deviceId, options)
      return !('code' in checked) && checked.publicKey !== undefined
    },
  )
  if (refused === undefined) return { url }
  // A device now waiting for approval is new to the registry: the
  // administrator learns of it the way they learn of any new device.
  if (!known && refused.code === 'PEER_PENDING') {
    void logEvent(options.replica, {
      type: 'device-registered',
      deviceId,
      code: refused.code,
    })
  }
  return refusalOf(refused)
}

/**
 * One connection per device id: a newer connection replaces an older one
 * (as MQTT brokers do with a client id). A device that reconnects after a
 * half-open link is never locked out by its own stale connection, and two
 * devices sharing an id do not both write under it: the older is closed
 * with `SESSION_REPLACED`, which a device does not retry on its own.
 */
function replaceOlder(
  members: Map<string, Member>,
  byDevice: Map<string, Member>,
  deviceId: string,
): void {
  const m = byDevice.get(deviceId)
  if (m !== undefined) {
    members.delete(m.connection.id)
    byDevice.delete(deviceId)
    m.connection.close(
      CloseCode.replaced,
      closeReason('SESSION_REPLACED', new SessionReplacedError(deviceId).message),
    )
  }
}

/**
 * A device that joins with a key proves it (its join proof); the first
 * proof binds the key to the device id, later joins must use that key, and
 * an id with a key may not join without it (the site key alone would then
 * let anyone holding it speak as that device). Returns the admitted key
 * (undefined: a plain client) or a refusal.
 */
function admitKey(
  url: URL,
  deviceId: string,
  options: SyncEndpointOptions,
): { publicKey: Uint8Array | undefined } | { code: number; reason: string } {
  const checked = checkKey(url, deviceId, options)
  if ('code' in checked) return checked
  const { publicKey, at } = checked
  if (publicKey === undefined) return { publicKey }
  const { keys, clock } = options.signing
  if (keys.get(deviceId) === undefined) void keys.bind(deviceId, publicKey).catch(() => undefined)
  keys.noteJoin(deviceId, at, clock.now())
  return { publicKey }
}

/** admitKey's checks, with nothing bound nor noted: the key and the proof's time, or a refusal. */
function checkKey(
  url: URL,
  deviceId: string,
  options: SyncEndpointOptions,
): { publicKey: Uint8Array | undefined; at: number } | { code: number; reason: string } {
  const { keys, clock } = options.signing
  const bound = keys.get(deviceId)
  const pub = url.searchParams.get('pub')
  if (pub === null) {
    return bound === undefined
      ? { publicKey: undefined, at: 0 }
      : {
          code: CloseCode.authFailed,
          reason: 'AUTH_FAILED: this device signs its writes; join with its key (pub, at, proof)',
        }
  }
  const publicKey = new Uint8Array(Buffer.from(pub, 'base64url'))
  const at = Number(url.searchParams.get('at'))
  const signature = new Uint8Array(Buffer.from(url.searchParams.get('proof') ?? '', 'base64url'))
  try {
    verifyJoinProof(publicKey, { site: options.room, deviceId, at, signature })
  } catch {
    return { code: CloseCode.authFailed, reason: 'AUTH_FAILED: join proof does not verify' }
  }
  if (keys.keyRefused(deviceId, publicKey))
    return {
      code: CloseCode.revoked,
      reason: 'PEER_REVOKED: this key was revoked (its device revoked, or its key reset)',
    }
  // Before anything about the id's joins is said: only its own key learns
  // of them (the replay refusal names the latest accepted time).
  if (bound !== undefined && !Buffer.from(bound).equals(Buffer.from(publicKey))) {
    return {
      code: CloseCode.authFailed,
      reason: 'AUTH_FAILED: this device id is bound to another key',
    }
  }
  // Replays: a proof is good within the skew bound of the server's clock,
  // and only once (a captured join URL is worthless, and never good for
  // long). Not "later than the last": a device's clock may step back.
  if (keys.joinSeen(deviceId, at)) {
    // Not final (1008): a restarted device may name a time again (a clock
    // held still in a test, a clock stepped back). The reason says the
    // latest accepted, and the device joins again at once past it.
    return {
      code: CloseCode.refused,
      reason: `AUTH_FAILED: join proof replayed (this proof was used already); latest ${keys.latestJoin(deviceId) ?? at}`,
    }
  }
  if (!Number.isSafeInteger(at)) {
    return { code: CloseCode.authFailed, reason: "AUTH_FAILED: join proof's time is not a time" }
  }
  if (Math.abs(at - clock.now()) > netLimits.joinSkewMsMax) {
    // Not final: the device's clock is wrong (a flat RTC battery, a test's
    // clock moved days ahead). It learns the server's time here and joins
    // again with a proof in that time (the bound still holds: the server
    // judges the proof by its own clock, and each once; PROTOCOL.md,
    // "Joining").
    const now = clock.now()
    return {
      code: CloseCode.refused,
      reason: `CLOCK_SKEW: proof ${Math.round((at - now) / 60_000)} min off; server time ${now}`,
    }
  }
  return { publicKey, at }
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

/**
 * The server's side of the sync events (SEMANTICS.md: `sync-failed` and
 * `sync-succeeded` on every peer): a registered device's refused update
 * (once per cause, as `write-refused`) or a revoked device's knock at the
 * door (once: its retries log nothing more) is logged as `sync-failed`
 * with the device and the code, and the next success of that direction as
 * `sync-succeeded`. Devices never registered, and knocks that prove
 * nothing (a wrong site key), log nothing: a flood does not fill the log.
 */
class ServerSyncLog {
  /** Device and direction pairs whose failure was logged and whose recovery was not. */
  private readonly failing = new Set<string>()
  /**
   * Links whose `sync-started` was logged and whose answer was not sent
   * yet, with the device and the kind (by link: a device's old link closing
   * after its new one asked must not end the new one's; a review).
   */
  private readonly running = new Map<string, { deviceId: string; kind: 'full' | 'delta' }>()
  /** When each device's last sync was logged (see started). */
  private readonly loggedAt = new Map<string, number>()

  constructor(
    private readonly replica: Replica,
    private readonly registry: DeviceRegistry,
  ) {}

  /**
   * A registered device's step 1: `sync-started` with the device and its
   * kind (`full` when it holds nothing of the document: a first sync, a
   * full sync's fetch, a generation move), and `sync-succeeded` once the
   * answer is sent (note). A device's full syncs are logged at most once
   * per `limits.serverSyncFullLogIntervalMs`, its deltas at most once per
   * `limits.serverSyncDeltaLogIntervalMs` after its last logged sync: a thousand
   * devices' half-hourly deltas would fill the log. (A probe: the server's
   * log held no sync of any device.)
   */
  started(deviceId: string, link: string, theirs: ReadonlyMap<number, number>): void {
    if (this.running.has(link) || this.registry.get(deviceId) === undefined) return
    const kind = theirs.size === 0 ? 'full' : 'delta'
    const now = this.replica.clock.now()
    // Deltas after the last logged sync of either kind, full syncs after the last full one.
    const key = kind === 'full' ? `full ${deviceId}` : deviceId
    const last = this.loggedAt.get(key)
    const spacing =
      kind === 'full' ? limits.serverSyncFullLogIntervalMs : limits.serverSyncDeltaLogIntervalMs
    if (last !== undefined && now - last < spacing) return
    this.loggedAt.set(deviceId, now)
    if (kind === 'full') this.loggedAt.set(key, now)
    this.running.set(link, { deviceId, kind })
    void logEvent(this.replica, { type: 'sync-started', deviceId, kind })
  }

  /**
   * A direction succeeded: noted; logged when it ends a logged start (the
   * answer on `link`) or a logged failure.
   */
  note(deviceId: string, direction: 'serverToDevice' | 'deviceToServer', link?: string): void {
    this.registry.direction(deviceId, direction, 'success')
    const run = link === undefined ? undefined : this.running.get(link)
    if (run !== undefined && link !== undefined) {
      this.running.delete(link)
      void logEvent(this.replica, { type: 'sync-succeeded', deviceId, kind: run.kind })
      this.failing.delete(`${direction} ${deviceId}`)
      return
    }
    if (!this.failing.delete(`${direction} ${deviceId}`)) return
    void logEvent(this.replica, { type: 'sync-succeeded', deviceId, direction })
  }

  /** Drops what is noted of a device the registry forgot. */
  forget(deviceId: string): void {
    this.failing.delete(`serverToDevice ${deviceId}`)
    this.failing.delete(`deviceToServer ${deviceId}`)
    for (const [link, run] of this.running) if (run.deviceId === deviceId) this.running.delete(link)
    this.loggedAt.delete(deviceId)
    this.loggedAt.delete(`full ${deviceId}`)
  }

  /** A link closed: a start whose answer never went out stays open no longer. */
  closed(link: string): void {
    this.running.delete(link)
  }

  /** A refused update of a registered device, new in its cause. */
  failed(deviceId: string, direction: 'deviceToServer', error: RostersyncError): void {
    if (this.registry.get(deviceId) === undefined) return
    this.failing.add(`${direction} ${deviceId}`)
    void logEvent(this.replica, {
      type: 'sync-failed',
      deviceId,
      direction,
      code: error.code,
      // The error's own message (its excerpts of the peer's input are
      // bounded already), cut to 200 characters, not quoted again.
      message: clip(error.message, 200),
    })
  }

  /** A revoked device refused at the door: both directions failed, `PEER_REVOKED`, logged once. */
  refusedJoin(rawUrl: string, reason: string): void {
    // A revoked device's knock only: other refusals at the door come
    // before anything proves who knocks (a wrong site key, a made-up room),
    // and logging them let anyone fill the log and mark a healthy device
    // failed. A revoked device stays revoked: this is logged once.
    if (!reason.startsWith('PEER_REVOKED')) return
    const url = parseJoinUrl(rawUrl)
    const deviceId = url instanceof URL ? url.searchParams.get('device') : null
    if (deviceId === null || !this.registry.isRevoked(deviceId)) return
    const before = this.registry.get(deviceId)?.sync
    if (before === undefined) return
    const code = 'PEER_REVOKED'
    const same = (d: DirectionState): boolean => d.state === 'failed' && d.error === code
    if (same(before.serverToDevice) && same(before.deviceToServer)) return
    this.registry.direction(deviceId, 'serverToDevice', 'failed', code)
    this.registry.direction(deviceId, 'deviceToServer', 'failed', code)
    void logEvent(this.replica, { type: 'sync-failed', deviceId, code, message: reason })
  }
}
