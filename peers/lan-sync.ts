/**
 * A device's links to other devices on the LAN, over libp2p
 * (transports/libp2p-transport.ts), each running the same sync session as
 * the server link (ws-client): both sides send step 1, answer step 1 with
 * step 2, then forward durable updates. The replica forwards an update to
 * every link but the one it came from, so devices keep syncing while the
 * server is unreachable, and ws-client passes what they exchanged on to the
 * server when it returns.
 *
 * What a LAN peer may write (checked before anything is applied): any
 * device's part, since devices relay each other's; the server's part only as
 * the server wrote it: items from Yjs clients this device already holds as
 * the server's, and deletes of server entries only together with the server
 * entry that replaces them (`serverClients` in core/authorize.ts).
 */
import type { Connection as Libp2pConnection, Libp2p, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { checkUpdate, serverClientsOf } from '../core/authorize.js'
import { retryDelayMs } from '../core/backoff.js'
import type { Clock } from '../core/clock.js'
import {
  HandshakesFullError,
  InvalidOptionsError,
  TooManyLinksError,
  type RostersyncError,
} from '../core/errors.js'
import { limits, netLimits } from '../core/limits.js'
import type { RecordSchema } from '../core/schema.js'
import type { Connection } from '../core/transport.js'
import type * as Libp2pTransport from '../transports/libp2p-transport.js'
import type { LanScope } from '../transports/libp2p-transport.js'
import { ReceiveBudget } from '../transports/receive-deadline.js'
import type { LogLimiter } from './log-limiter.js'
import type { Replica } from './replica.js'
import { guardLanLink, isLanAuthFrame } from './lan-auth.js'
import type { DeviceSigning } from './signed-link.js'
import { refusalClose, startSession } from './sync-session.js'
import { DeviceRates, LinkRates, remoteError, SharedRates } from './sync-session/inbound.js'
import type { Rates } from './sync-session/inbound.js'
import { ConnectionDoor, doorEvictee, hostOf } from './lan-door.js'

/** Options of {@link startLan}. */
export interface LanOptions {
  readonly replica: Replica
  readonly schema: RecordSchema
  readonly deviceId: string
  /** The site key: only devices holding it can connect (it keys the private network). */
  readonly siteKey: string
  /** The seed of the node's libp2p key (`Identity.lanSeed`): a stable peer id. Random without it. */
  readonly identitySeed?: Uint8Array
  readonly clock: Clock
  /** Interface to listen on; loopback by default. */
  readonly host?: string
  /** TCP port to listen on; 0 (default) picks a free one. */
  readonly port?: number
  /** Multiaddrs to dial, and re-dial with backoff whenever they are not linked. */
  readonly peers?: readonly string[]
  /** mDNS discovery of other devices on the LAN; on by default. */
  readonly mdns?: boolean
  /** `lan` (default) admits loopback and private LAN addresses; `loopback` only loopback. */
  readonly scope?: LanScope
  /** A uniform random number in [0, 1) for backoff jitter. */
  readonly random?: () => number
  /**
   * A refused message, a refusal from a peer, or a link closed on an error;
   * `peer` names the link's other end.
   */
  readonly onError?: (code: string, message: string, peer: string) => void
  /** Which refusals are logged as `write-refused` (once per cause, bounded); all by default. */
  readonly log?: LogLimiter
  /**
   * Signed writes (PROTOCOL.md): links speak envelopes only, checked per
   * writer. Without it (tests of the plain protocol) the LAN rule below applies.
   */
  readonly signing?: DeviceSigning
}

/** A running LAN node. */
export interface LanNode {
  /** The node's multiaddrs, each ending in `/p2p/<peer id>`. */
  readonly addresses: string[]
  /** Distinct peers with an open sync link. */
  peerCount(): number
  close(): Promise<void>
}

interface Link {
  readonly connection: Connection
  readonly peer: string
  /** The libp2p connection the link's stream is on. */
  readonly via: string
  /** The host the libp2p connection comes from (its IP address). */
  readonly address: string
  /** Its peer was admitted (or the link needs no admission): the session runs. */
  admitted: boolean
  /** The admitted peer's device, by its certificate. */
  device?: string | undefined
}

/** Starts the LAN node; resolves once it listens. */
export async function startLan(options: LanOptions): Promise<LanNode> {
  if (options.siteKey.length === 0) throw new InvalidOptionsError('LAN sync needs a site key')
  // libp2p is loaded with the first LAN node, not with the module: a
  // device without LAN sync, and every CLI command, start without it.
  const { multiaddr } = await import('@multiformats/multiaddr')
  const peers = (options.peers ?? []).map((addr) => parseAddress(addr, multiaddr))
  const transport = await import('../transports/libp2p-transport.js')
  const node = await transport.createLanNode({
    siteKey: options.siteKey,
    mdns: options.mdns ?? true,
    userAgent: `rostersync/${options.deviceId}`,
    ...(options.identitySeed === undefined ? {} : { identitySeed: options.identitySeed }),
    ...(options.host === undefined ? {} : { host: options.host }),
    ...(options.port === undefined ? {} : { port: options.port }),
    ...(options.scope === undefined ? {} : { scope: options.scope }),
  })
  const lan = new LanLinks(options, node, transport)
  await node.handle(
    transport.LAN_PROTOCOL,
    (stream, connection) => {
      lan.attach(stream, connection)
    },
    // One sync stream per connection suffices; a second covers a re-dial
    // racing the close of the first.
    { maxInboundStreams: 2, maxOutboundStreams: 2 },
  )
  node.addEventListener('connection:open', (event) => lan.watchDoor(event.detail))
  node.addEventListener('connection:close', (event) => lan.door.closed(event.detail.id))
  const stops = peers.map((addr) => lan.keepDialling(addr))
  if (options.mdns ?? true) lan.dialDiscovered()
  return {
    addresses: node.getMultiaddrs().map((ma) => ma.toString()),
    peerCount: () => lan.peerCount(),
    async close() {
      for (const stop of stops) stop()
      await lan.close()
    },
  }
}

/** The sync links of one LAN node. */
class LanLinks {
  private closed = false
  private readonly links = new Map<string, Link>()
  /** The libp2p connections kept (see watchDoor). */
  readonly door: ConnectionDoor
  /** Messages in progress on all of this device's LAN links together (receivingBytesMax). */
  private readonly receiving: ReceiveBudget
  /** Per-second buckets of each admitted device, shared by its links here (SharedRates). */
  private readonly deviceRates: DeviceRates

  constructor(
    private readonly options: LanOptions,
    private readonly node: Libp2p,
    private readonly transport: typeof Libp2pTransport,
  ) {
    this.deviceRates = new DeviceRates(options.clock)
    this.door = new ConnectionDoor(options.clock)
    this.receiving = new ReceiveBudget()
  }

  peerCount(): number {
    return new Set([...this.links.values()].filter((l) => l.admitted).map((l) => l.peer)).size
  }

  private linked(peer: string): boolean {
    return [...this.links.values()].some((link) => link.peer === peer)
  }

  /**
   * Runs a sync session on a stream (inbound or dialled); `onClosed` runs
   * once the link is gone, told whether it got as far as a sync exchange.
   * Returns false when the link is refused.
   */
  attach(stream: Stream, via: Libp2pConnection, onClosed?: (synced: boolean) => void): boolean {
    const peer = via.remotePeer.toString()
    const connection = this.transport.wrapStream(stream, peer, this.receiving)
    if (this.closed) {
      connection.close(1001, 'device closing')
      return false
    }
    if (!this.linked(peer) && this.peerCount() >= netLimits.lanPeersMax) {
      connection.close(1013, 'LAN_PEERS_MAX: this device has as many LAN peers as it takes')
      return false
    }
    // Links at the door are bounded in number: anyone with the site key
    // gets this far, and waits up to the handshake's time. Past the bound a
    // waiting link makes room, not the newcomer (a key holder re-opening
    // links would keep every place), the oldest of the host holding the
    // most (doorEvictee): one opening links fast evicts its own, not a
    // member from another host (admitted within milliseconds).
    const address = hostOf(via.remoteAddr)
    const atDoor = [...this.links.values()].filter((link) => !link.admitted)
    if (atDoor.length >= netLimits.lanHandshakesInFlightMax) {
      const { reason } = refusalClose(new HandshakesFullError(netLimits.lanHandshakesInFlightMax))
      const evicted = doorEvictee(atDoor, address)
      this.links.delete(evicted.connection.id)
      evicted.connection.close(1013, reason)
    }
    const link: Link = { connection, peer, via: via.id, address, admitted: false }
    this.links.set(connection.id, link)
    runLanLink(
      {
        ...this.options,
        selfEnd: this.node.peerId.toString(),
        deviceRates: (deviceId) => this.deviceRates.take(deviceId),
        onAdmitted: (deviceId) => {
          // One device's certificate, shown from many libp2p identities,
          // gets at most lanLinksPerDeviceMax links.
          const links = [...this.links.values()]
          const same = links.filter((l) => l.admitted && l.device === deviceId).length
          if (deviceId !== undefined && same >= netLimits.lanLinksPerDeviceMax) return false
          link.admitted = true
          link.device = deviceId
          this.door.admitted(via.id)
          return true
        },
      },
      connection,
      peer,
      (synced) => {
        this.links.delete(connection.id)
        if (link.admitted) this.door.released(via.id)
        if (link.admitted && link.device !== undefined) this.deviceRates.release(link.device)
        onClosed?.(synced)
      },
      () => this.closed,
    )
    return true
  }

  /**
   * A libp2p connection is kept while it carries an admitted link, and
   * `netLimits.handshakeTimeoutMs` after it opened or its last admitted
   * link closed (ConnectionDoor): a key holder that never shows a
   * certificate, or a device that closes its links and keeps their
   * connections, would otherwise keep the device's `lanPeersMax` slots.
   */
  watchDoor(via: Libp2pConnection): void {
    if (this.closed) return
    this.door.opened(via.id, hostOf(via.remoteAddr), (reason) => via.abort(new Error(reason)))
  }

  /** Dials `addr`, and re-dials it with backoff whenever it is not linked; returns stop. */
  keepDialling(addr: Multiaddr): () => void {
    let attempt = 0
    let timer: unknown
    let waiting = false
    const schedule = (): void => {
      if (this.closed) return
      const random = this.options.random ?? Math.random
      waiting = true
      timer = this.options.clock.setTimeout(
        () => {
          waiting = false
          void dial()
        },
        retryDelayMs(attempt++, random()),
      )
    }
    const dial = async (): Promise<void> => {
      const linked = await this.dial(addr, (synced) => {
        // The backoff only grows until a link succeeds (a sync exchange),
        // as on the server link: a peer that accepts and drops every link
        // at once is not redialled at the shortest delay for ever.
        if (synced) attempt = 0
        schedule()
      })
      if (!linked) schedule()
    }
    // Once this device pins its server's key it can show a certificate:
    // links its peers refused before (PROTOCOL.md, "LAN admission") are
    // worth trying at once.
    const offReady = this.options.signing?.onReady(() => {
      attempt = 0
      if (!waiting || this.closed) return
      this.options.clock.clearTimeout(timer)
      waiting = false
      void dial()
    })
    void dial()
    return () => {
      offReady?.()
      this.options.clock.clearTimeout(timer)
    }
  }

  /** Opens a sync stream to `target` and attaches it; false when it cannot (yet). */
  private async dial(
    target: Multiaddr | Multiaddr[],
    onClosed?: (synced: boolean) => void,
  ): Promise<boolean> {
    if (this.closed) return false
    try {
      const connection = await this.node.dial(target)
      const stream = await connection.newStream(this.transport.LAN_PROTOCOL)
      return this.attach(stream, connection, onClosed)
    } catch {
      // Unreachable, out of scope, or not a member of the site (the pnet
      // handshake fails): nothing was exchanged, and the caller retries.
      return false
    }
  }

  /**
   * Dials devices that mDNS finds. Of two devices that find each other only
   * the one with the smaller peer id dials, so that they share one link.
   */
  dialDiscovered(): void {
    const self = this.node.peerId.toString()
    this.node.addEventListener('peer:discovery', (event) => {
      const peer = event.detail.id.toString()
      if (this.closed || self >= peer || this.linked(peer)) return
      void this.dial(event.detail.multiaddrs)
    })
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.door.close()
    this.deviceRates.close()
    for (const { connection } of this.links.values()) connection.close(1001, 'device closing')
    await this.node.stop()
    this.links.clear()
  }
}

/**
 * Runs the LAN sync session on an open connection to another device, over
 * libp2p or any other transport (the simulator's): inbound updates are
 * checked with the LAN rule before anything is applied, refusals are sent
 * back and logged. `onClosed` runs once the connection is gone, told whether
 * the session got as far as a sync exchange.
 */
export function runLanLink(
  options: Pick<LanOptions, 'replica' | 'schema' | 'onError' | 'signing' | 'log'> & {
    /**
     * This device's end of the link as the transport authenticated it
     * (its libp2p peer id); the device's id by default (in-process links).
     */
    readonly selfEnd?: string
    /**
     * The peer was admitted (as `deviceId`, by its certificate), or the link
     * needs no admission; false refuses the link (`TOO_MANY_LINKS`).
     */
    readonly onAdmitted?: (deviceId: string | undefined) => boolean
    /**
     * The buckets of an admitted device, shared by its links at this peer
     * (each link is charged its own and these); none: the link's own only.
     */
    readonly deviceRates?: (deviceId: string) => Rates
  },
  connection: Connection,
  peer: string,
  onClosed?: (synced: boolean) => void,
  closing: () => boolean = () => false,
): void {
  const { replica, schema, signing } = options
  const refused = (error: RostersyncError): void => {
    options.onError?.(error.code, `LAN peer ${peer}: ${error.message}`, peer)
    // Once per code and device (its certificate's; else the link's end), as
    // the server logs a device's (PROTOCOL.md, "Refusals").
    if (options.log?.admit(`write-refused ${error.code} ${admittedAs ?? peer}`) === false) return
    const notLogged = options.log?.notLogged() ?? ''
    replica
      .write((ctx) =>
        ctx.event({
          type: 'write-refused',
          code: error.code,
          message: `LAN ${peer}: ${error.message}${notLogged}`,
        }),
      )
      .catch(() => {
        // Logging is best effort: the refusal was already reported above.
      })
  }
  let session: ReturnType<typeof startSession> | undefined
  /** The device the peer was admitted as (its certificate's), once it was. */
  let admittedAs: string | undefined
  // One set of per-second buckets for the link's whole life: counted from
  // its first message at the door, not refilled by admission.
  const rates = new LinkRates(() => replica.clock.now())
  const start = (link: Connection, deviceId?: string): void => {
    // Closed meanwhile (its close frame read before the certificate): nothing starts.
    if (!link.open) return
    if (options.onAdmitted?.(deviceId) === false) {
      const error = new TooManyLinksError(deviceId ?? peer, netLimits.lanLinksPerDeviceMax)
      link.close(refusalClose(error).code, refusalClose(error).reason)
      return
    }
    admittedAs = deviceId
    session = startSession({
      replica,
      connection: link,
      reportErrors: true,
      forwardAfterAnswer: true,
      ...(signing === undefined
        ? {}
        : { signed: (send) => signing.link(link.id, send, true, true, false, deviceId) }),
      // Not trusted: bounded rates; a refusal closes it (PROTOCOL.md, "Refusals").
      untrusted: true,
      ...(deviceId === undefined ? {} : { peerId: deviceId }),
      rates:
        deviceId === undefined || options.deviceRates === undefined
          ? rates
          : new SharedRates([rates, options.deviceRates(deviceId)]),
      check: (update) => {
        checkUpdate(replica.doc, update, {
          // Any part (relays); the server's as it wrote it (serverClients).
          mayWrite: () => true,
          schema,
          serverClients: serverClientsOf(replica.doc),
          now: replica.stampTime.horizon(),
          deviceStampSkewMs: limits.lanStampSkewMsMax,
        })
      },
      onRefused: refused,
      onRemoteError: (code, message) =>
        options.onError?.(code, `LAN peer ${peer}: ${message}`, peer),
    })
  }
  // A device that pinned its server's key answers only peers that show a
  // certificate of that server still speaking for them (peers/lan-auth.ts):
  // the session, and with it every byte of the roster, waits for it.
  const guarded = signing !== undefined && signing.ready()
  const link = guarded
    ? guardLanLink(
        signing,
        connection,
        { self: options.selfEnd ?? signing.writerId, remote: peer },
        (cert) => start(link, cert.deviceId),
        // Reported once, by the close below (its reason names the code);
        // not logged as an event: anyone on the LAN could fill the log.
        () => undefined,
        rates,
      )
    : signing === undefined
      ? connection
      : // Not pinned yet: a pinned peer's certificate cannot be checked
        // here; it is dropped, and the link restarts once this device pins.
        dropLanAuth(connection)
  // A link that started plain (no server key yet) restarts once the key is
  // pinned: both sides then speak envelopes and show their certificates.
  const offReady =
    signing === undefined || guarded
      ? () => undefined
      : signing.onReady(() =>
          connection.close(1012, 'SIGNED: this device now checks signed writes; reconnect'),
        )
  link.onClose(({ code, reason, byPeer }) => {
    offReady()
    session?.stop()
    // Now, and once the session handled its last message (held back later).
    const drop = (): void => replica.dropHeldBackFrom(link.id)
    drop()
    void session?.idle().then(drop, drop)
    // Normal, going-away and dropped links are not errors; the rest (too
    // large, malformed, too many peers) carry a code in their reason (a
    // known code only; the peer's own refusal says so: its word, not ours).
    if (code !== 1000 && code !== 1001 && code !== 1006 && code !== 1012 && !closing()) {
      const [named, text] = remoteError(reason.split(':')[0] ?? '', reason)
      const said =
        byPeer === true ? `LAN peer ${peer} closed the link: ${text}` : `LAN peer ${peer}: ${text}`
      options.onError?.(named, said, peer)
    }
    onClosed?.(session?.synced ?? false)
  })
  if (!guarded) start(link)
}

/** `connection` without the `lan-auth` frames it receives. */
function dropLanAuth(connection: Connection): Connection {
  return {
    id: connection.id,
    remote: connection.remote,
    send: (message) => connection.send(message),
    onMessage: (handler) =>
      connection.onMessage((message) => {
        if (!isLanAuthFrame(message)) handler(message)
      }),
    onClose: (handler) => connection.onClose(handler),
    close: (code, reason) => connection.close(code, reason),
    get open() {
      return connection.open
    },
    // The session's outbox paces answers by it (peers/sync-session/outbox.ts).
    get bufferedBytes() {
      return connection.bufferedBytes
    },
  }
}

function parseAddress(addr: string, multiaddr: (addr: string) => Multiaddr): Multiaddr {
  try {
    return multiaddr(addr)
  } catch (cause) {
    throw new InvalidOptionsError(`LAN peer ${JSON.stringify(addr)} is not a multiaddr`, cause)
  }
}
