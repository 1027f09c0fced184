/**
 * Who may read the roster over the LAN (PROTOCOL.md, "LAN admission"): a
 * device that has pinned its server's key answers a LAN peer only once the
 * peer has shown a certificate of that server that still speaks for it —
 * its signature good, not expired, its device not revoked, its key not
 * reset — and proved it holds the certificate's key on this very link.
 * Until then nothing of the roster is sent (the sync session has not
 * started) and nothing the peer sends reaches it.
 *
 * The first message each side sends is its `lan-auth` frame: the
 * certificate and an Ed25519 signature, by the certificate's key, over the
 * site and the link's two ends as the transport authenticated them (libp2p
 * peer ids, proven by Noise), prover first. A proof is good for one link
 * only: relayed to another, it names the wrong ends.
 *
 * Once admitted, the link closes when the peer's certificate expires
 * (unless the peer sent a renewed one first: a device sends its new
 * certificate on every open link when its server renews it), or when the
 * server's revocation of the peer (its device or its key) reaches this
 * device.
 */
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { REVOCATIONS_ROOT } from '../core/entries.js'
import {
  AuthFailedError,
  GenerationChangedError,
  MalformedMessageError,
  MessageTooLargeError,
  RostersyncError,
  SignatureInvalidError,
} from '../core/errors.js'
import { limits, netLimits } from '../core/limits.js'
import { CloseCode } from '../core/protocol.js'
import {
  decodeCertificate,
  encodeCertificate,
  signLanProof,
  verifyCertificate,
  verifyLanProof,
  type Certificate,
} from '../core/signing.js'
import type { CloseInfo, Connection } from '../core/transport.js'
import {
  decodeGenerationStatement,
  FIRST_GENERATION,
  sameGeneration,
  verifyGeneration,
  type Generation,
} from '../core/generation-statement.js'
import {
  deviceGeneration,
  deviceGenerationStatement,
  onGenerationNoted,
} from './device-sync/generation-move.js'
import { siteOf } from './identity.js'
import type { DeviceSigning } from './signed-link.js'
import { closeReason, refusalClose } from './sync-session.js'
import type { LinkRates } from './sync-session/inbound.js'

/**
 * The message type of a `lan-auth` frame (a varUint first, as every
 * message's; no other message type uses it: core/protocol.ts).
 */
export const LAN_AUTH_MESSAGE = 110

/** A link's two ends, as its transport authenticated them. */
export interface LinkEnds {
  /** This device's end (its libp2p peer id; its device id on other transports). */
  readonly self: string
  /** The other end (the remote libp2p peer id; the name given to `attachLan`). */
  readonly remote: string
}

/**
 * Encodes a `lan-auth` frame: the certificate, the proof, then the
 * server's statement of the generation this device is on (issue 13), left
 * out for a site's first generation.
 */
export function encodeLanAuth(
  cert: Certificate,
  proof: Uint8Array,
  generation?: Uint8Array,
): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, LAN_AUTH_MESSAGE)
  encoding.writeVarUint8Array(e, encodeCertificate(cert))
  encoding.writeVarUint8Array(e, proof)
  if (generation !== undefined) encoding.writeVarUint8Array(e, generation)
  return encoding.toUint8Array(e)
}

/** Whether `bytes` is a `lan-auth` frame (by its type). */
export function isLanAuthFrame(bytes: Uint8Array): boolean {
  return bytes.byteLength > 0 && bytes[0] === LAN_AUTH_MESSAGE
}

function decodeLanAuth(bytes: Uint8Array): {
  cert: Certificate
  proof: Uint8Array
  generation: Uint8Array | undefined
} {
  try {
    const d = decoding.createDecoder(bytes)
    if (decoding.readVarUint(d) !== LAN_AUTH_MESSAGE)
      throw new MalformedMessageError('not a lan-auth frame')
    const cert = decodeCertificate(decoding.readVarUint8Array(d))
    const proof = decoding.readVarUint8Array(d)
    const generation = decoding.hasContent(d) ? decoding.readVarUint8Array(d) : undefined
    if (decoding.hasContent(d)) throw new MalformedMessageError('lan-auth: trailing bytes')
    return { cert, proof, generation }
  } catch (error) {
    if (error instanceof RostersyncError) throw error
    throw new MalformedMessageError('lan-auth frame does not decode', error)
  }
}

/**
 * Checks a peer's `lan-auth` frame; returns its certificate, or throws a
 * typed error: `MALFORMED_MESSAGE`, `SIGNATURE_INVALID` (not the server's
 * certificate, or no proof of its key on this link), `PEER_REVOKED`,
 * `CERTIFICATE_REVOKED`, `CERTIFICATE_EXPIRED`.
 */
export function checkLanAuth(
  signing: DeviceSigning,
  bytes: Uint8Array,
  ends: LinkEnds,
): Certificate {
  const serverKey = signing.identity.serverKey
  if (serverKey === undefined)
    throw new SignatureInvalidError('no server key pinned yet: certificates cannot be checked')
  const site = siteOf(serverKey)
  const { cert, proof } = decodeLanAuth(bytes)
  verifyCertificate(cert, serverKey, site)
  signing.checkStanding(cert)
  if (!verifyLanProof(cert.publicKey, site, ends.remote, ends.self, proof))
    throw new SignatureInvalidError(
      `the LAN peer does not prove it holds the key of device ${JSON.stringify(cert.deviceId.slice(0, limits.writerIdCharsMax))} on this link`,
    )
  return cert
}

/**
 * Checks that a LAN peer (its `lan-auth` frame, admitted) is on this
 * device's generation (issue 13): nothing is exchanged across generations,
 * nor with a device in the middle of its move (`GENERATION_CHANGED`, close
 * 4412). The peer's statement must be its server's (`SIGNATURE_INVALID`).
 * The older side moves when it reaches its server (its hello says so).
 * Returns the peer's generation.
 */
export function checkLanGeneration(signing: DeviceSigning, bytes: Uint8Array): Generation {
  const serverKey = signing.identity.serverKey
  if (serverKey === undefined) return FIRST_GENERATION
  const { generation } = decodeLanAuth(bytes)
  let theirs: Generation = FIRST_GENERATION
  if (generation !== undefined) {
    const statement = decodeGenerationStatement(generation)
    verifyGeneration(statement, serverKey, siteOf(serverKey))
    theirs = { n: statement.n, id: statement.id }
  }
  checkSameGeneration(signing, theirs)
  return theirs
}

/**
 * Throws `GENERATION_CHANGED` unless this device is on `theirs` (and not
 * in the middle of its move).
 */
function checkSameGeneration(signing: DeviceSigning, theirs: Generation): void {
  const { replica } = signing
  if (replica.movingGeneration)
    throw new GenerationChangedError('this device is moving to a new generation')
  const ours = deviceGeneration(replica)
  if (!sameGeneration(ours, theirs))
    throw new GenerationChangedError(
      `the LAN peer is on generation ${theirs.n}, this device on ${ours.n}: the older one moves when it reaches its server`,
    )
}

/** This device's `lan-auth` frame for a link, or undefined without a certificate. */
function ownFrame(signing: DeviceSigning, ends: LinkEnds): Uint8Array | undefined {
  const { identity } = signing
  const cert = identity.certificate
  const serverKey = identity.serverKey
  if (cert === undefined || serverKey === undefined) return undefined
  const proof = signLanProof(identity.key, siteOf(serverKey), ends.self, ends.remote)
  return encodeLanAuth(cert, proof, deviceGenerationStatement(signing.replica))
}

/** The close code of a refusal at the LAN's door. */
function closeCodeOf(error: RostersyncError): number {
  if (error.code === 'PEER_REVOKED') return CloseCode.revoked
  if (error.code === 'GENERATION_CHANGED') return CloseCode.generationChanged
  if (
    error.code === 'AUTH_FAILED' ||
    error.code === 'SIGNATURE_INVALID' ||
    error.code === 'CERTIFICATE_EXPIRED' ||
    error.code === 'CERTIFICATE_REVOKED'
  )
    return CloseCode.authFailed
  // A broken bound (RATE_LIMITED 1008, MESSAGE_TOO_LARGE 1009), or a frame
  // that does not decode (MALFORMED_MESSAGE 1007): as on any link.
  return refusalClose(error).code
}

/**
 * Holds a LAN link at the door: sends this device's `lan-auth` frame,
 * waits (at most `netLimits.handshakeTimeoutMs`) for the peer's, and calls
 * `admitted` with the peer's certificate. Returns the connection to run
 * the session on: it carries no message before the peer is admitted, and
 * after that every message but `lan-auth` frames (a renewed certificate of
 * the same device is taken in passing); its close handler runs whenever
 * the link closes, admitted or not. Any fault closes the link with its
 * code; `onRefused` hears of it first.
 *
 * A peer at the door is bounded like any untrusted link, from its first
 * byte (PROTOCOL.md, "LAN admission"): `rates` counts every message it
 * sends (the session goes on with the same buckets once it is admitted),
 * and it reads at most `netLimits.lanHandshakeMessageBytesMax` a message
 * until then (a transport that frames messages refuses a longer one before
 * buffering it).
 */
export function guardLanLink(
  signing: DeviceSigning,
  connection: Connection,
  ends: LinkEnds,
  admitted: (cert: Certificate) => void,
  onRefused: (error: RostersyncError) => void,
  rates?: LinkRates,
): Connection {
  const { clock, replica } = signing
  connection.limitMessageBytes?.(netLimits.lanHandshakeMessageBytesMax)
  let peer: Certificate | undefined
  /** The generation the admitted peer showed (its latest frame). */
  let peerGeneration: Generation = FIRST_GENERATION
  let handler: ((message: Uint8Array) => void) | undefined
  let closeHandler: ((info: CloseInfo) => void) | undefined
  let expiry: unknown
  const refuse = (error: RostersyncError): void => {
    onRefused(error)
    connection.close(closeCodeOf(error), closeReason(`${error.code}: ${error.message}`))
  }
  const handshake = clock.setTimeout(
    () =>
      refuse(
        new AuthFailedError(
          `this device answers only LAN peers that show a valid certificate of its server; none came within ${netLimits.handshakeTimeoutMs} ms`,
        ),
      ),
    netLimits.handshakeTimeoutMs,
  )
  // Closes the link when the peer's certificate expires (checked again on
  // the timer: a timer's range is about 24 days).
  const watchExpiry = (): void => {
    clock.clearTimeout(expiry)
    if (peer === undefined) return
    const cert = peer
    const left = cert.expiresAt + limits.certificateSkewMsMax - clock.now()
    expiry = clock.setTimeout(
      () => {
        try {
          signing.checkStanding(cert)
          watchExpiry()
        } catch (error) {
          if (error instanceof RostersyncError) refuse(error)
        }
      },
      Math.min(Math.max(left + 1, 0), 2 ** 31 - 1),
    )
  }
  // The server's revocations reach this device in its document: a link
  // to a peer revoked since (its device or its key) closes.
  // A wipe or a full sync replaces the document: watch the new one's.
  let revocations = replica.doc.getMap(REVOCATIONS_ROOT)
  const onRevocation = (): void => {
    if (peer === undefined) return
    try {
      signing.checkStanding(peer)
    } catch (error) {
      if (error instanceof RostersyncError) refuse(error)
    }
  }
  // This device's generation changing (a move staged, undone or committed;
  // a device that held nothing noting its server's) closes a link admitted
  // on another: nothing of the old generation may reach the new document,
  // nor the other way round. Checked again on every message in and out,
  // whatever path changed it. True while the link may go on.
  const generationHolds = (): boolean => {
    if (peer === undefined || !connection.open) return connection.open
    try {
      checkSameGeneration(signing, peerGeneration)
      return true
    } catch (error) {
      if (error instanceof RostersyncError) refuse(error)
      return false
    }
  }
  const onReset = (): void => void generationHolds()
  const offNoted = onGenerationNoted(replica, onReset)
  revocations.observe(onRevocation)
  const offReset = replica.onReset(() => {
    revocations.unobserve(onRevocation)
    revocations = replica.doc.getMap(REVOCATIONS_ROOT)
    revocations.observe(onRevocation)
    onRevocation()
    onReset()
  })
  // This device's renewed certificate goes to the peer on the open link.
  const offCertificate = signing.identity.onCertificate(() => {
    const frame = ownFrame(signing, ends)
    if (frame !== undefined && connection.open) connection.send(frame)
  })

  const gated: Connection = {
    id: connection.id,
    remote: connection.remote,
    send: (message) => {
      if (generationHolds()) connection.send(message)
    },
    onMessage: (next) => {
      handler = next
    },
    onClose: (next) => {
      closeHandler = next
    },
    close: (code, reason) => connection.close(code, reason),
    get open() {
      return connection.open
    },
    // The session's outbox paces answers by it (peers/sync-session/outbox.ts).
    get bufferedBytes() {
      return connection.bufferedBytes
    },
  }
  connection.onClose((info) => {
    clock.clearTimeout(handshake)
    clock.clearTimeout(expiry)
    revocations.unobserve(onRevocation)
    offReset()
    offNoted()
    offCertificate()
    closeHandler?.(info)
  })
  connection.onMessage((bytes) => {
    if (peer === undefined) {
      // Counted and bounded in size, whatever it is: holding the site key
      // is all it took to get here.
      const limited =
        bytes.byteLength > netLimits.lanHandshakeMessageBytesMax
          ? new MessageTooLargeError(
              'message before LAN admission',
              bytes.byteLength,
              netLimits.lanHandshakeMessageBytesMax,
            )
          : rates?.message(bytes.byteLength)
      if (limited !== undefined) {
        refuse(limited)
        return
      }
      // Anything before the peer's certificate is dropped, unread and
      // unanswered: a peer that has not pinned its server's key yet speaks
      // the plain protocol until it does (and then restarts the link), and
      // the handshake's time bounds how long it may wait.
      if (!isLanAuthFrame(bytes)) return
      try {
        const admitted = checkLanAuth(signing, bytes, ends)
        peerGeneration = checkLanGeneration(signing, bytes)
        peer = admitted
      } catch (error) {
        if (error instanceof RostersyncError) refuse(error)
        else refuse(new MalformedMessageError('lan-auth frame does not decode', error))
        return
      }
      clock.clearTimeout(handshake)
      connection.limitMessageBytes?.(netLimits.messageBytesMax)
      watchExpiry()
      admitted(peer)
      return
    }
    if (isLanAuthFrame(bytes)) {
      // A renewed certificate: the same device, checked as the first, and
      // counted as any message is (the session never sees it; each costs
      // signature checks: a peer sent 8,400 a second, never rate-limited).
      const limited = rates?.message(bytes.byteLength)
      if (limited !== undefined) {
        refuse(limited)
        return
      }
      try {
        const renewed = checkLanAuth(signing, bytes, ends)
        if (renewed.deviceId !== peer.deviceId)
          throw new SignatureInvalidError('a LAN peer cannot change its device on an open link')
        // Its generation too: a peer on another one now is refused (4412).
        peerGeneration = checkLanGeneration(signing, bytes)
        peer = renewed
        watchExpiry()
      } catch (error) {
        if (error instanceof RostersyncError) refuse(error)
      }
      return
    }
    if (generationHolds()) handler?.(bytes)
  })
  const frame = ownFrame(signing, ends)
  if (frame !== undefined) connection.send(frame)
  return gated
}
