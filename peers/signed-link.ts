/**
 * Signed writes on a sync link (PROTOCOL.md, "Signed writes"): what a
 * session sends and accepts in place of plain Yjs updates.
 *
 * - A device signs only what it authored: the structs of its own clientIDs
 *   and the deletes of its own items (core/update-parts.ts), afresh each
 *   time it sends them; what it relays of others goes out as the envelopes
 *   their writers signed (peers/envelope-log.ts).
 * - The server signs what it sends, merged: it checked everything it
 *   merged, and every device holds its key.
 * - A receiver opens an envelope before anything of it is applied: the
 *   signature against the writer's key (the pinned server key; a device's
 *   key from its certificate, or from the server's registry), every struct
 *   under a clientID derived from that key, then the update check for that
 *   writer's part.
 */
import * as Y from 'yjs'
import type { Clock } from '../core/clock.js'
import {
  CertificateRevokedError,
  ForbiddenWriteError,
  MalformedMessageError,
  PeerRevokedError,
  SignatureInvalidError,
} from '../core/errors.js'
import { SERVER_ID } from '../core/ids.js'
import { netLimits } from '../core/limits.js'
import {
  checkCertificateTime,
  decodeEnvelope,
  keyRevocationId,
  encodeEnvelope,
  envelopeClients,
  sealEnvelope,
  verifyCertificate,
  verifyEnvelope,
  type Certificate,
  type Envelope,
} from '../core/signing.js'
import { encodeClientsDiff, restrictUpdate } from '../core/update-parts.js'
import { scanUpdate, type UpdateRanges } from '../core/update-scan.js'
import { documentGeneration, onGenerationNoted } from './device-sync/generation-move.js'
import { within, type EnvelopeLog } from './envelope-log.js'
import { bringsNews, deletesAhead, untakenOverLan } from './envelope-news.js'
import { noteHeardOverLan } from './device-sync/lost-clocks.js'
import { RelayMemo } from './relay-memo.js'
import { WriterClients } from './writer-clients.js'
import { siteOf, type Identity } from './identity.js'
import type { Replica, ReplicaUpdate } from './replica.js'
import type { AnswerStream } from './replica/answer-stream.js'
import {
  answerMessages,
  envelopeMessages,
  type AnswerMessages,
} from './sync-session/answer-messages.js'

export {
  answerMessages,
  envelopeMessages,
  type AnswerMessages,
} from './sync-session/answer-messages.js'

/** An envelope that passed every check, ready to apply. */
export interface OpenedEnvelope {
  readonly bytes: Uint8Array
  readonly writer: string
  /** The writer's certificate, when the envelope carries one (a device's, relayed). */
  readonly cert?: Certificate | undefined
  readonly update: Uint8Array
  /** The strict scan of `update` (core/update-scan.ts), done once for every check and the intake. */
  readonly ranges: UpdateRanges
  /**
   * It holds structs this peer lacked, or deletes items it held (else it
   * is not relayed; only envelopes with structs are logged).
   */
  readonly fresh: boolean
  /**
   * It brings nothing (bringsNothing): its writer and clientIDs were
   * checked, its signature was not, and it is not applied.
   */
  readonly nothing?: true
}

/** What a session (peers/sync-session.ts) asks of a signed link. */
export interface SignedLink {
  /**
   * Whether the link speaks envelopes now. A device that has never been
   * admitted by a server has no key to check anything with: until it pins
   * one, its LAN links speak the plain protocol (PROTOCOL.md, "Signed
   * writes", "Before the first admission").
   */
  active(): boolean
  /**
   * Whether the link may speak the plain protocol while not active (a LAN
   * link of a device with no server key yet); a device's server link may
   * not: until the server's hello it sends no change at all.
   */
  readonly plainAllowed: boolean
  /**
   * The messages answering a step 1 with this state vector, in the order
   * they go out (read inside whenDurable; each may be made, and sealed,
   * only when it goes out): each message
   * within `netLimits.answerChunkBytesMax` unless one envelope is larger
   * (PROTOCOL.md, "Answers in chunks").
   */
  answer(theirStateVector: Uint8Array): AnswerMessages
  /**
   * The messages of an answer made of the replica's parts (`answer` is
   * then `answerParts(replica.answers.parts(theirs))`): the server's, so
   * that a costly one may be made in turns (peers/replica/answer-turns.ts).
   */
  answerParts?(parts: AnswerStream): AnswerMessages
  /** The envelopes that carry a durable change to the other side, if any. */
  forward(update: ReplicaUpdate): Uint8Array[]
  /**
   * Checks an inbound envelope; throws (or rejects with) a typed error to
   * refuse it. A promise when the signature is verified off the main thread
   * (the server's verification pool): what reads the document is checked
   * once the signature is known good.
   */
  open(bytes: Uint8Array): OpenedEnvelope | Promise<OpenedEnvelope>
  /** An inbound envelope is durable here (log it; relay it at `flush`). */
  applied(opened: OpenedEnvelope): void
  /**
   * The inbound message is handled: relays what it brought, in one message
   * per link (one per envelope made a LAN step 2 of 2,100 envelopes 2,100
   * messages to the server, past its link's message rate).
   */
  flush?(): void
  /** This link is gone. */
  stop(): void
  /**
   * True when `bytes` is an envelope another writer than the link's own
   * peer signed, relayed by it (the server's links only): a refusal of it
   * is reported and the link goes on — the relaying device is not at
   * fault, and closing its link would cut it off for as long as it holds
   * the envelope (PROTOCOL.md, "Signed writes").
   */
  relayed?(bytes: Uint8Array): boolean
  /**
   * Most envelopes `relayed` may excuse in one message (a device's links:
   * `netLimits.staleEnvelopesPerMessageMax`; the server's: no number, its
   * message rate); past it the refusal closes the link. Each excused one
   * that cost a signature check (see `checked`) counts as a message
   * against the link's rates (ExcusedRefusals).
   */
  readonly relayedPerMessageMax: number
  /**
   * False for a refusal made before any signature was checked (a writer the
   * server holds no key for: a map lookup); such refusals do not count
   * against the link's rates (an honest device may offer thousands of a
   * forgotten writer's envelopes on every exchange). True by default.
   */
  checked?(error: Error): boolean
}

/** Checks an update as `writer`'s (the update check, core/authorize.ts, for that writer's part). */
/** `fromServer`: the envelope came on the server link (else a LAN peer's). */
export type WriterCheck = (update: Uint8Array, writer: string, fromServer: boolean) => void

const EMPTY_UPDATE_BYTES = 2

/**
 * `scanUpdate`, with malformed bytes (or nesting too deep to read) refused
 * as `MALFORMED_MESSAGE`, as every other decode failure of a peer's input.
 */
export function scanOrRefuse(update: Uint8Array): UpdateRanges {
  try {
    return scanUpdate(update)
  } catch (cause) {
    throw new MalformedMessageError('update does not decode', cause)
  }
}

/** Refuses structs under clientIDs the envelope's writer cannot prove its own. */
export function checkClients(
  envelope: Envelope,
  publicKey: Uint8Array,
  ranges: UpdateRanges,
): void {
  const allowed = envelopeClients(envelope, publicKey)
  for (const client of ranges.from.keys()) {
    if (!allowed.has(client))
      throw new ForbiddenWriteError(
        `update of ${JSON.stringify(envelope.writer)} writes under Yjs client ${client}, not one of its own`,
      )
  }
}

/** The device's side: its own envelopes, the relay log and the links it relays between. */
export class DeviceSigning {
  private readonly links = new Map<string, (envelopes: Uint8Array[]) => void>()
  private readonly serverLinks = new Set<string>() // those of `links` to this device's server
  /** Envelopes relayed lately: each is logged and relayed once (peers/relay-memo.ts). */
  private readonly relayed = new RelayMemo()
  /** Each opened envelope's key in `relayed`. */
  private readonly relayKeys = new WeakMap<OpenedEnvelope, string>()
  /** The clientIDs each other device writes under (peers/writer-clients.ts). */
  private readonly writerClients = new WriterClients()

  constructor(
    private readonly options: {
      readonly identity: Identity
      readonly replica: Replica
      readonly writerId: string
      readonly log: EnvelopeLog
      readonly check: WriterCheck
      /** The device's clock: certificates' expiry, LAN links' timers. */
      readonly clock: Clock
    },
  ) {
    const forget = (): void => {
      options.log.clear()
      this.relayed.clear()
    }
    options.replica.onReset(forget)
    // A device that held nothing notes a new generation without replacing
    // its document: what it logged for relay belongs to the one it left.
    onGenerationNoted(options.replica, forget)
  }

  /** This device's identity (its key, the pinned server key, its certificate). */
  get identity(): Identity {
    return this.options.identity
  }

  /** This device's id. */
  get writerId(): string {
    return this.options.writerId
  }

  /** The device's clock. */
  get clock(): Clock {
    return this.options.clock
  }

  /** The replica (revocations are read from its document). */
  get replica(): Replica {
    return this.options.replica
  }

  /**
   * Refuses a certificate that no longer speaks for its device here,
   * after its signature was checked: its device revoked (`PEER_REVOKED`),
   * its key reset by the server (`CERTIFICATE_REVOKED`), or expired by
   * this device's clock (`CERTIFICATE_EXPIRED`).
   */
  checkStanding(cert: Certificate): void {
    const { replica } = this.options
    if (replica.isRevoked(cert.deviceId)) throw new PeerRevokedError(cert.deviceId)
    if (replica.hasRevocations() && replica.isRevoked(keyRevocationId(cert.publicKey)))
      throw new CertificateRevokedError(cert.deviceId)
    checkCertificateTime(cert, this.options.clock.now())
  }

  /** True once the server's key is pinned (signed links speak envelopes from then on). */
  ready(): boolean {
    return this.options.identity.serverKey !== undefined
  }

  /** Calls `listener` when the server's key gets pinned. */
  onReady(listener: () => void): () => void {
    return this.options.identity.onPinned(listener)
  }

  /** The site, once the server's key is pinned. */
  private site(): string | undefined {
    const key = this.options.identity.serverKey
    return key === undefined ? undefined : siteOf(key)
  }

  /** Signs this device's part of `update` (nothing when it holds none, or before the server's key is known). */
  private sealOwn(update: Uint8Array): Uint8Array[] {
    const site = this.site()
    if (site === undefined || update.byteLength <= EMPTY_UPDATE_BYTES) return []
    const { identity, writerId } = this.options
    const clients = [...scanOrRefuse(update).from.keys()]
    const nonces = clients.map((c) => identity.nonceOf(c))
    if (nonces.some((n) => n === undefined)) return []
    const cert = identity.certificate
    const envelope = sealEnvelope(
      identity.key,
      site,
      {
        writer: writerId,
        nonces: nonces as number[],
        update,
        ...(cert === undefined ? {} : { cert }),
      },
      documentGeneration(this.options.replica).id,
    )
    return [encodeEnvelope(envelope)]
  }

  /**
   * A signed link for one connection; `send` sends envelopes as a signed
   * update; `peer`, the device its certificate names (a LAN link).
   */
  link(
    connectionId: string,
    send: (envelopes: Uint8Array[]) => void,
    plainAllowed = true,
    relays = true,
    fromServer = false,
    peer?: string,
  ): SignedLink {
    const { identity, replica, log } = this.options
    if (relays) this.links.set(connectionId, send)
    if (fromServer) this.serverLinks.add(connectionId)
    /** What this link's inbound message brought, relayed once it is handled (flush). */
    const brought: Uint8Array[] = []
    const broughtNotServer: Uint8Array[] = [] // less the server's own (see answer)
    const heldHere = (client: number): number => Y.getState(replica.doc.store, client)
    return {
      active: () => identity.serverKey !== undefined,
      plainAllowed,
      // A revoked writer's envelope, or one whose certificate expired or
      // whose key was reset, is refused by name and the link goes on: a
      // peer that logged it before must not lose its LAN links over it.
      relayed: (bytes) => this.stale(bytes),
      relayedPerMessageMax: netLimits.staleEnvelopesPerMessageMax,
      answer: (theirs) => {
        const target = Y.decodeStateVector(theirs)
        const own = encodeClientsDiff(replica.doc, target, identity.ownClients())
        // Not offered: envelopes of writers revoked since they were logged,
        // or whose certificates were revoked or (to a LAN peer) expired: the
        // server checks its registry, not the time (a writer off for 8 days
        // had its writes never delivered; a probe). To the server, neither
        // its own (it lacks them only when restored: each refused and
        // charged, RATE_LIMITED) nor what waits here for a gap (it would
        // there too: TOO_MANY_HELD_BACK at every sync; probes).
        const offered: Uint8Array[] = []
        for (const entry of log.beyond(target, fromServer ? heldHere : undefined))
          if (fromServer && entry.writer === SERVER_ID) continue
          else if (!this.staleHead(entry.writer, entry.cert, fromServer)) offered.push(entry.bytes)
        return answerMessages(envelopeMessages([...this.sealOwn(own), ...offered]))
      },
      forward: (told) => {
        // Remote changes travel as their writers signed them (relayed by
        // applied()); a local change is this device's own part.
        if (told.origin !== 'local') return []
        return this.sealOwn(restrictUpdate(told.update, identity.ownClients()))
      },
      open: (bytes) => this.open(bytes, fromServer, peer),
      applied: (opened) => {
        if (!opened.fresh || opened.writer === this.options.writerId) return
        // What the server must hold by its next answer (ServerExchange.serverLost).
        if (!fromServer && opened.writer === SERVER_ID) noteHeardOverLan(replica, opened.ranges)
        // A move to a new generation stores nothing it receives before its
        // commit (a crash would leave the new generation's envelopes beside
        // the old document, offered to old-generation LAN peers).
        if (replica.movingGeneration) return
        // Heard before: an envelope held back (a gap before it) stays
        // new to the state vector, and relaying every copy made LAN
        // neighbours relay it back and forth without end.
        const key = this.relayKeys.get(opened)
        if (key !== undefined && !this.relayed.first(key)) return
        // One the log lets go is forgotten too: heard again, it is logged
        // again (for the LAN peers that ask later).
        for (const gone of log.add(opened.bytes, opened, opened.ranges.to, key))
          this.relayed.forget(gone)
        brought.push(opened.bytes)
        if (opened.writer !== SERVER_ID && within(opened.ranges.to, heldHere))
          broughtNotServer.push(opened.bytes)
      },
      flush: () => {
        if (brought.length === 0) return
        const batch = brought.splice(0)
        const toServer = broughtNotServer.splice(0)
        for (const [id, relay] of this.links) {
          if (id === connectionId) continue
          if (!this.serverLinks.has(id)) relay(batch)
          else if (toServer.length > 0) relay(toServer)
        }
      },
      stop: () => {
        this.links.delete(connectionId)
        this.serverLinks.delete(connectionId)
      },
    }
  }

  /**
   * True when `bytes` is a device's envelope that no longer speaks for its
   * writer: the writer revoked, or its certificate expired or revoked.
   */
  private stale(bytes: Uint8Array): boolean {
    let envelope: Envelope
    try {
      envelope = decodeEnvelope(bytes)
    } catch {
      // Not an envelope: open() refuses it, and the link closes.
      return false
    }
    if (envelope.writer !== SERVER_ID && !this.options.replica.isRevoked(envelope.writer)) {
      // Only a certificate the server did sign can be out of standing: a
      // made-up one (expired, to pass as stale) is a forgery, and the link
      // closes on it instead of checking the next of thousands.
      const serverKey = this.options.identity.serverKey
      const site = this.site()
      if (serverKey === undefined || site === undefined) return false
      try {
        deviceKey(envelope, serverKey, site)
      } catch {
        return false
      }
    }
    return this.staleHead(envelope.writer, envelope.cert)
  }

  /**
   * stale() of an envelope already decoded: its writer and certificate;
   * `toServer`: its time is not checked (an expired certificate of a
   * writer in standing still speaks for it to the server).
   */
  private staleHead(writer: string, cert: Certificate | undefined, toServer = false): boolean {
    if (writer === SERVER_ID) return false
    if (this.options.replica.isRevoked(writer)) return true
    if (cert === undefined) return false
    try {
      if (toServer) {
        const { replica } = this.options
        return replica.hasRevocations() && replica.isRevoked(keyRevocationId(cert.publicKey))
      }
      this.checkStanding(cert)
      return false
    } catch {
      return true
    }
  }

  /** Opens an envelope that came from the server (`fromServer`) or a LAN peer (`peer`, when known). */
  private open(bytes: Uint8Array, fromServer: boolean, peer?: string): OpenedEnvelope {
    const serverKey = this.options.identity.serverKey
    const site = this.site()
    if (serverKey === undefined || site === undefined)
      throw new SignatureInvalidError('no server key pinned yet: signed updates cannot be checked')
    const envelope = decodeEnvelope(bytes)
    // One strict scan serves every check below and the replica's intake.
    const ranges = scanOrRefuse(envelope.update)
    // What a LAN peer offers is not always taken (./envelope-news.ts).
    const skipped = !fromServer && untakenOverLan(this.options.replica, envelope, ranges, peer)
    // Before it is applied: a delete-only envelope (no structs) is news
    // when it deletes what this device holds, and is relayed like any.
    const fresh = !skipped && bringsNews(this.options.replica.doc, ranges)
    // Nothing to apply: checked below as any other, but not its signature.
    const nothing = skipped || (!fresh && !deletesAhead(this.options.replica.doc, ranges))
    // Signed for the generation of the document it would go into: one of
    // another generation (a retired history replayed) fails.
    const generation = documentGeneration(this.options.replica).id
    if (envelope.writer === SERVER_ID) {
      // The server's content is trusted as it always was on the server
      // link (it checked what it merged); its signature proves it the
      // server's, whoever relayed it.
      if (!nothing) verifyEnvelope(envelope, serverKey, site, generation)
    } else {
      // The server's revocations reach devices in the document: from then
      // on the revoked device's certificate no longer speaks for it here.
      if (this.options.replica.isRevoked(envelope.writer))
        throw new PeerRevokedError(envelope.writer)
      const key = deviceKey(envelope, serverKey, site)
      // Its certificate must still speak for it: not expired, its key not
      // reset by the server since.
      if (envelope.cert !== undefined) this.checkStanding(envelope.cert)
      if (!nothing) verifyEnvelope(envelope, key, site, generation)
      checkClients(envelope, key, ranges)
      this.options.check(envelope.update, envelope.writer, fromServer)
      // The server's bound too: what it refuses, devices do not keep (not
      // counted unsigned: see ServerSigning.admit).
      if (!nothing)
        this.writerClients.admit(this.options.replica.doc, envelope.writer, ranges.from.keys())
    }
    const opened: OpenedEnvelope = {
      bytes,
      writer: envelope.writer,
      cert: envelope.cert,
      update: envelope.update,
      ranges,
      fresh,
      ...(nothing && { nothing }),
    }
    if (fresh) this.relayKeys.set(opened, RelayMemo.keyOf(envelope))
    return opened
  }
}

/** A device's key from the certificate its envelope carries. */
function deviceKey(envelope: Envelope, serverKey: Uint8Array, site: string): Uint8Array {
  const cert: Certificate | undefined = envelope.cert
  if (cert === undefined)
    throw new SignatureInvalidError(
      `update of ${JSON.stringify(envelope.writer)} carries no certificate`,
    )
  verifyCertificate(cert, serverKey, site)
  if (cert.deviceId !== envelope.writer)
    throw new SignatureInvalidError(
      `update of ${JSON.stringify(envelope.writer)} carries the certificate of ${JSON.stringify(cert.deviceId)}`,
    )
  return cert.publicKey
}
