/**
 * libp2p as a transport, for device-to-device sync on the LAN: TCP, a
 * private network (pnet) keyed by the site key, Noise, yamux, and optional
 * mDNS discovery. A sync link is one `/rostersync/sync/1` stream; a stream
 * carries bytes, so each message travels in a length-prefixed frame, and a
 * close travels as a frame too, so that the other side hears its code and
 * reason after the messages sent before it (the transport contract).
 */
import './polyfills.js'
import { hkdfSync } from 'node:crypto'
import { addressInScope, listenAddress, type LanScope } from './lan-addresses.js'
export { addressInScope, type LanScope } from './lan-addresses.js'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { ConnectionGater, Libp2p, Stream } from '@libp2p/interface'
import { mdns } from '@libp2p/mdns'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import { InvalidOptionsError, RostersyncError } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import type { CloseInfo, Connection } from '../core/transport.js'
import { frame, FrameReader } from './length-prefixed.js'
import { ReceiveBudget, ReceiveDeadline } from './receive-deadline.js'
import { fixXsalsa20 } from './xsalsa20-fix.js'

// Before any connection exists: pnet's cipher otherwise crashes the process
// after enough traffic on two links (see xsalsa20-fix.ts).
fixXsalsa20()

/** The libp2p protocol id of roster sync. */
export const LAN_PROTOCOL = '/rostersync/sync/1'

/** Options of {@link createLanNode}. */
export interface LanNodeOptions {
  /** The site key: only nodes holding it can complete a connection (pnet). */
  readonly siteKey: string
  /** Interface to listen on; loopback by default. */
  readonly host?: string
  /** TCP port; 0 (default) picks a free one. */
  readonly port?: number
  /** mDNS discovery; off unless asked for (it multicasts on the network). */
  readonly mdns?: boolean
  /** `lan` (default) admits loopback and private LAN addresses; `loopback` only loopback. */
  readonly scope?: LanScope
  /** Most simultaneous connections. */
  readonly connectionsMax?: number
  /** Told to other nodes (libp2p identify), for their logs. */
  readonly userAgent?: string
  /** 32 bytes the node's Ed25519 key is made from: the same peer id every start. Random without it. */
  readonly identitySeed?: Uint8Array
}

/**
 * The pnet pre-shared key of a site, in the format `@libp2p/pnet` reads:
 * 32 bytes derived from the site key with HKDF-SHA256, so every device of
 * the site derives the same key and the site key itself never travels.
 */
export function lanPsk(siteKey: string): Uint8Array {
  const key = Buffer.from(
    hkdfSync('sha256', siteKey, 'rostersync', 'rostersync lan psk v1', 32),
  ).toString('hex')
  return new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${key}`)
}

/** Starts a libp2p node for LAN sync; resolves once it listens. */
export async function createLanNode(options: LanNodeOptions): Promise<Libp2p> {
  const host = options.host ?? '127.0.0.1'
  const listen = listenAddress(host, options.port)
  // Room past lanPeersMax for a newcomer to complete its handshake: the
  // device's door (peers/lan-door.ts, ConnectionDoor) then closes one that
  // carries no admitted link, or the newcomer, back to lanPeersMax.
  const connectionsMax =
    options.connectionsMax ?? netLimits.lanPeersMax + netLimits.lanHandshakesInFlightMax
  const privateKey =
    options.identitySeed === undefined
      ? undefined
      : await generateKeyPairFromSeed('Ed25519', options.identitySeed)
  const node: Libp2p = await listenOn(listen, {
    ...(privateKey === undefined ? {} : { privateKey }),
    addresses: { listen: [listen] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionProtector: preSharedKey({ psk: lanPsk(options.siteKey) }),
    connectionGater: gater(
      options.scope ?? 'lan',
      () => node.getConnections().length,
      connectionsMax,
    ),
    connectionManager: { maxConnections: connectionsMax },
    peerDiscovery: options.mdns === true ? [mdns({ serviceTag: '_rostersync._udp.local' })] : [],
    ...(options.userAgent === undefined ? {} : { nodeInfo: { userAgent: options.userAgent } }),
  })
  return node
}

/**
 * `createLibp2p`, its failure to listen (an address this host lacks, a
 * port in use) as `INVALID_OPTIONS` naming the address, as the server's
 * own listen failure is, rather than libp2p's error and stack.
 */
async function listenOn(listen: string, init: Libp2pOptions): Promise<Libp2p> {
  try {
    return await createLibp2p(init)
  } catch (error) {
    // libp2p's words name its own setting first; the system's reason
    // ("listen EADDRINUSE: address already in use ...") is inside.
    const message = (error as Error).message
    const why = /listen (E[A-Z]+: [^\n]*)/.exec(message)?.[1] ?? message.split('\n')[0] ?? ''
    throw new InvalidOptionsError(`cannot listen on the LAN at ${listen}: ${why}`.slice(0, 300))
  }
}

/**
 * Admits connections only to and from addresses in scope, and no more than
 * `connectionsMax`. Membership itself is proven by the pnet handshake: a
 * node without the site key cannot complete a connection.
 */
function gater(
  scope: LanScope,
  connections: () => number,
  connectionsMax: number,
): ConnectionGater {
  return {
    denyDialMultiaddr: (ma) => !addressInScope(ma, scope),
    denyInboundConnection: (maConn) =>
      !addressInScope(maConn.remoteAddr, scope) || connections() >= connectionsMax,
  }
}

/** Frame kinds on a sync stream. */
const FrameKind = { message: 0, close: 1 } as const

/** Close code of a stream that ended without a close frame (WebSocket's "abnormal closure"). */
const ABNORMAL_CLOSE = 1006

let nextId = 1

/**
 * Turns an open sync stream into a `Connection`; `remote` names the other
 * node, `receiving` bounds messages in progress with the device's other links.
 */
export function wrapStream(
  stream: Stream,
  remote: string,
  receiving: ReceiveBudget = new ReceiveBudget(),
): Connection {
  const id = `lan-${nextId++}`
  const reader = new FrameReader(netLimits.messageBytesMax + 1)
  const early: Uint8Array[] = []
  let messageHandler: ((message: Uint8Array) => void) | undefined
  let closeHandler: ((info: CloseInfo) => void) | undefined
  let closed: CloseInfo | undefined
  let told = false
  stream.maxWriteBufferLength = netLimits.sendBufferBytesMax
  // A message begun and not finished is closed on (RECEIVE_STALLED).
  const deadline = new ReceiveDeadline((reason) => close(1008, reason), receiving)
  const tell = (info: CloseInfo): void => {
    deadline.stop()
    reader.clear()
    closed ??= info
    if (told || closeHandler === undefined) return
    told = true
    closeHandler(closed)
  }
  const writeFrame = (kind: number, body: (e: encoding.Encoder) => void): void => {
    if (stream.status !== 'open' || stream.writeStatus !== 'writable') return
    const e = encoding.createEncoder()
    encoding.writeUint8(e, kind)
    body(e)
    try {
      stream.send(frame(encoding.toUint8Array(e)))
    } catch {
      // The stream closed or its send buffer overflowed (which aborts it);
      // its 'close' event tells the handler.
    }
  }
  const close = (code: number, reason: string, refusedFrame = false): void => {
    if (closed !== undefined) return
    closed = refusedFrame ? { code, reason, refusedFrame } : { code, reason }
    deadline.stop()
    // Nothing more is read: a message in progress (a stalled one) is let go.
    reader.clear()
    writeFrame(FrameKind.close, (e) => {
      encoding.writeVarUint(e, code)
      encoding.writeVarString(e, reason)
    })
    stream.close().then(
      () => tell(closed as CloseInfo),
      () => tell(closed as CloseInfo),
    )
    lingerThenAbort(`closed: ${code} ${reason}`)
  }
  // A peer that keeps its half open does not keep the stream: it is
  // aborted `closedLinkLingerMs` after either side's close frame, as a
  // WebSocket is.
  const lingerThenAbort = (why: string): void => {
    const linger = setTimeout(() => {
      if (stream.status === 'open' || stream.status === 'closing') stream.abort(new Error(why))
    }, netLimits.closedLinkLingerMs)
    linger.unref?.()
    stream.addEventListener('close', () => clearTimeout(linger))
  }
  const onFrame = (bytes: Uint8Array): void => {
    const d = decoding.createDecoder(bytes)
    const kind = decoding.readUint8(d)
    if (kind === FrameKind.close) {
      const info = {
        code: decoding.readVarUint(d),
        reason: decoding.readVarString(d),
        byPeer: true,
      }
      closed ??= info
      void stream.close().catch(() => undefined)
      lingerThenAbort(`closed by the peer: ${info.code}`)
      tell(info)
    } else if (kind === FrameKind.message) {
      const message = bytes.subarray(1)
      if (messageHandler === undefined) early.push(message)
      else messageHandler(message)
    } else {
      throw new RostersyncError('MALFORMED_MESSAGE', `unknown frame kind ${kind}`)
    }
  }
  stream.addEventListener('message', (event) => {
    if (closed !== undefined) return
    try {
      // Nothing after a close, the peer's (a frame) or this side's (a
      // refusal): frames read together with it are not handed on.
      for (const bytes of reader.push(event.data)) {
        if (closed !== undefined) break
        onFrame(bytes)
      }
      if (closed === undefined)
        deadline.observe(reader.pendingBytes > 0, reader.pendingBytes, reader.messagesEnded)
    } catch (error) {
      // After a bad or oversized frame the byte stream cannot be resynchronised.
      const code = error instanceof RostersyncError ? error.code : 'MALFORMED_MESSAGE'
      close(
        code === 'MESSAGE_TOO_LARGE' ? 1009 : 1002,
        `${code}: ${(error as Error).message}`,
        true,
      )
    }
  })
  stream.addEventListener('close', () =>
    tell(closed ?? { code: ABNORMAL_CLOSE, reason: 'stream ended without a close' }),
  )
  return {
    id,
    remote,
    get open() {
      return closed === undefined && stream.status === 'open'
    },
    // What waits to go out on the stream: yamux hands the muxer only what
    // the peer's window admits, so this grows while the peer does not read.
    get bufferedBytes() {
      return stream.writeBufferLength
    },
    send(message) {
      if (closed !== undefined) return
      writeFrame(FrameKind.message, (e) => encoding.writeUint8Array(e, message))
    },
    onMessage(handler) {
      messageHandler = handler
      for (const message of early.splice(0)) handler(message)
    },
    onClose(handler) {
      closeHandler = handler
      if (closed !== undefined && stream.status !== 'open') tell(closed)
    },
    close(code = 1000, reason = '') {
      close(code, reason)
    },
    // A frame is its kind byte, then the message.
    limitMessageBytes: (messageBytesMax) => reader.limit(messageBytesMax + 1),
  }
}
