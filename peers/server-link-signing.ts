/**
 * The device's side of a server link's signed writes (PROTOCOL.md,
 * "Joining" and "Signed writes"): the join proof in each connection's URL,
 * the signed sessions, and the checks of the server's hello.
 */
import { netLimits } from '../core/limits.js'
import { CloseCode } from '../core/protocol.js'
import type { Connection } from '../core/transport.js'
import { SignatureInvalidError } from '../core/errors.js'
import {
  decodeCertificate,
  keyFingerprint,
  signJoinProof,
  verifyCertificate,
} from '../core/signing.js'
import {
  decodeGenerationStatement,
  verifyGeneration,
  type GenerationStatement,
} from '../core/generation-statement.js'
import { siteOf, type Identity } from './identity.js'
import type { DeviceSigning, SignedLink } from './signed-link.js'
/**
 * What a device's server link needs for signed writes: its key and join
 * proof in the join URL (made afresh per connection), signed sessions, and
 * the server's hello — its key, pinned on first admission (a different key
 * later closes the link: `SERVER_KEY_CHANGED`), and this device's
 * certificate, which must name this device and its key.
 */
export function serverLinkSigning(options: {
  readonly identity: Identity
  readonly signing: DeviceSigning
  /** The fingerprint the server's key must have when none is pinned yet (a provisioned device). */
  readonly expectedServerKey?: string | undefined
  readonly deviceId: string
  readonly room: string
  readonly now: () => number
  /** Relay what LAN neighbours send as it comes (false: a periodic device's server link). */
  readonly relays: boolean
  /** The server's time offset this device confirmed before (a restart's): its first proofs use it. */
  readonly offsetMs?: number
  /**
   * The server took a join whose proof named its time as this device's
   * clock plus `offsetMs` (its hello came, signed): the device stamps in
   * that time from now on (StampTime.setOffset). Awaited before anything
   * else of the connection is handled.
   */
  readonly onTimeConfirmed?: (offsetMs: number) => Promise<void>
}): {
  joinParams: () => Record<string, string>
  onServerTime: (serverTimeMs: number) => boolean
  onJoinReplayed: (latest: number) => boolean
  /** The device's clock was set back and its stamp offset moved with it (StampTime.onStepBack): proofs follow. */
  clockSteppedBack: (offsetMs: number) => void
  signed: (connectionId: string) => (send: (envelopes: Uint8Array[]) => void) => SignedLink
  onHello: (
    serverKey: Uint8Array,
    certificate: Uint8Array,
    connection: Connection,
    generation: Uint8Array | undefined,
  ) => Promise<GenerationStatement | undefined>
} {
  const { identity, deviceId } = options
  /**
   * How far the server's time is from this device's clock, once the server
   * refused a join for it (`CLOCK_SKEW`); 0 until then (or the offset
   * confirmed before a restart). Join proofs name the server's time. The
   * time comes unauthenticated, and the server judges the proof by its own
   * clock anyway: only once a join made with it is taken (the signed hello
   * comes) does the device stamp with it (`onTimeConfirmed`), and then it
   * is within `joinSkewMsMax` of the server's.
   */
  let offsetMs = options.offsetMs ?? 0
  /** The offset the latest join proof was made with (a reused join URL keeps its own). */
  let proofOffsetMs = offsetMs
  return {
    onServerTime: (serverTimeMs) => {
      // Whole milliseconds: an injected clock may read fractions, and an
      // offset that is not a safe integer was never taken (every join of
      // such a device refused for good: a probe).
      const off = Math.round(serverTimeMs - options.now())
      // A clock well within the hour of the server's joins with its own
      // time (offset 0): the time comes unsigned, and an offset within the
      // hour would be taken by the server, so a forged one could stick; one
      // past the hour is refused by the server unless it is the truth. Not
      // the hour itself: a clock just past it when the server judged the
      // proof may be just within it when the refusal arrives (a round trip
      // later), and would retry with its own time for good (acceptance
      // probe: a clock 60 minutes behind never joined).
      const offset = Math.abs(off) > netLimits.joinTimeTakenPastMs ? off : 0
      // Only a real change: the same refusal again waits on the backoff.
      if (!Number.isSafeInteger(offset) || Math.abs(offset - offsetMs) < 60_000) return false
      offsetMs = offset
      return true
    },
    clockSteppedBack: (offset) => {
      offsetMs = offset
    },
    onJoinReplayed: (latest) => {
      identity.joinAfter(latest)
      return true
    },
    joinParams: () => {
      proofOffsetMs = offsetMs
      const at = identity.nextJoinAt(options.now() + offsetMs)
      const proof = signJoinProof(identity.key, options.room, deviceId, at)
      return {
        pub: Buffer.from(identity.publicKey).toString('base64url'),
        at: String(at),
        proof: Buffer.from(proof).toString('base64url'),
      }
    },
    signed: (connectionId) => (send) =>
      options.signing.link(connectionId, send, false, options.relays, true),
    async onHello(serverKey, certificate, connection, generation) {
      const pinned = identity.serverKey
      const expected = options.expectedServerKey
      if (
        (pinned !== undefined && !Buffer.from(pinned).equals(Buffer.from(serverKey))) ||
        (pinned === undefined && expected !== undefined && keyFingerprint(serverKey) !== expected)
      ) {
        const message =
          'SERVER_KEY_CHANGED: the server presents another key than the one this device pinned; reset the device to join another site'
        connection.close(CloseCode.authFailed, message)
        throw new SignatureInvalidError(message)
      }
      const cert = decodeCertificate(certificate)
      verifyCertificate(cert, serverKey, siteOf(serverKey))
      if (
        cert.deviceId !== deviceId ||
        !Buffer.from(cert.publicKey).equals(Buffer.from(identity.publicKey))
      )
        throw new SignatureInvalidError("the server's certificate is not this device's")
      await identity.pinServer(serverKey, cert)
      // Stamps take it only past the hour: one within it is no more than
      // the skew every stamp may have, and the server would have taken a
      // proof in a forged one (review: a forged 58 minutes stuck).
      const taken = Math.abs(proofOffsetMs) > netLimits.joinSkewMsMax ? proofOffsetMs : 0
      await options.onTimeConfirmed?.(taken)
      if (generation === undefined) return undefined
      // The server's generation (issue 13), checked with the key pinned.
      const statement = decodeGenerationStatement(generation)
      verifyGeneration(statement, serverKey, siteOf(serverKey))
      return statement
    },
  }
}
