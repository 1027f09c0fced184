/**
 * The server's side of signed writes (PROTOCOL.md, "Signed writes"): it
 * signs what it sends to a device, merged (one envelope however many links
 * it goes to), and opens a device's envelopes against its registry: the
 * writer's registered key, the signature (on the verify pool when there is
 * one), the clientIDs derived from that key, then the update check for
 * that writer's part. The device's side is peers/signed-link.ts.
 */
import { ForbiddenWriteError, SignatureInvalidError } from '../core/errors.js'
import { SERVER_ID } from '../core/ids.js'
import { encodeSignedMessage } from '../core/protocol.js'
import {
  decodeEnvelope,
  encodeEnvelope,
  envelopePieces,
  envelopeSignatureError,
  envelopeVerifyJob,
  sealEnvelope,
  verifyBytes,
  type Envelope,
} from '../core/signing.js'
import type { UpdateRanges } from '../core/update-scan.js'
import { siteOf, type Identity } from './identity.js'
import type { Replica } from './replica.js'
import { answerPart, type AnswerStream } from './replica/answer-stream.js'
import {
  checkClients,
  scanOrRefuse,
  type AnswerMessages,
  type OpenedEnvelope,
  type SignedLink,
  type WriterCheck,
} from './signed-link.js'
import { bringsNothing, bringsStructs, deletesUnreplaced } from './envelope-news.js'
import type { VerifyPool } from './verify-pool.js'
import { WriterClients } from './writer-clients.js'

/** The server's side: it signs what it sends and checks device envelopes against its registry. */
export class ServerSigning {
  private lastUpdate: Uint8Array | undefined
  private lastEnvelope: Uint8Array[] = []
  /**
   * The messages of an answer's parts (one envelope each), per answer
   * (the replica's, the same while the document does not change), each
   * sealed and encoded when it first goes out, once for every link.
   */
  private readonly sealed = new WeakMap<AnswerStream, Array<Uint8Array | undefined>>()
  private siteId: string | undefined
  /**
   * Refusals made before any signature is checked (a writer without a key,
   * one past its clientID budget): not charged to a link relaying them.
   */
  private readonly unchecked = new WeakSet<Error>()
  /** The clientIDs each device writes under (plain links count them here too). */
  readonly writerClients = new WriterClients()

  constructor(
    private readonly options: {
      readonly identity: Identity
      readonly replica: Replica
      /** A device's registered key, or undefined (unknown or revoked: refused). */
      readonly deviceKey: (deviceId: string) => Uint8Array | undefined
      readonly check: WriterCheck
      /**
       * Verifies signatures off the main thread (peers/verify-pool.ts); on
       * the main thread, synchronously, when absent (the simulator: its
       * runs replay from a seed).
       */
      readonly pool?: VerifyPool
      /**
       * The id of the generation the site's document is on (`''` on its
       * first): every envelope is signed and checked for it.
       */
      readonly generationId?: () => string
    },
  ) {}

  private get generation(): string {
    return this.options.generationId?.() ?? ''
  }

  /** The site id: the server's public key. */
  get site(): string {
    this.siteId ??= siteOf(this.options.identity.publicKey)
    return this.siteId
  }

  private seal(update: Uint8Array): Uint8Array {
    return encodeEnvelope(this.envelopeOf(update))
  }

  /** `update` in the server's envelope, not encoded. */
  private envelopeOf(update: Uint8Array): Envelope {
    return sealEnvelope(
      this.options.identity.key,
      this.site,
      { writer: SERVER_ID, nonces: [], update },
      this.generation,
    )
  }

  /** A signed link for one device connection (`deviceId`: the link's own device). */
  link(deviceId: string): SignedLink {
    return {
      active: () => true,
      plainAllowed: false,
      // A relaying device is not at fault for another writer's refused
      // envelope: a device's log may offer many of a writer the server
      // forgot, to every exchange. Those that cost a signature check are
      // bounded by the link's message rate.
      relayedPerMessageMax: Infinity,
      checked: (error) => !this.unchecked.has(error),
      relayed: (bytes) => {
        try {
          return decodeEnvelope(bytes).writer !== deviceId
        } catch {
          return false
        }
      },
      answer: (theirs) => this.answer(this.options.replica.answers.parts(theirs)),
      answerParts: (parts) => this.answer(parts),
      forward: (told) => {
        // The fan-out tells every link the same update object: sign it once.
        if (told.update !== this.lastUpdate) {
          this.lastUpdate = told.update
          this.lastEnvelope = [this.seal(told.update)]
        }
        return this.lastEnvelope
      },
      open: (bytes) => this.open(bytes, deviceId),
      applied: () => undefined,
      stop: () => undefined,
    }
  }

  /**
   * The answer to a step 1: the replica's parts (core/answer-chunks.ts),
   * one envelope and one message each, sealed and encoded as they go out.
   * The replica hands out the same parts while the document does not
   * change (after a restart, every fresh device asks with the empty state
   * vector), each made when a link first asks for it: each sealed once for
   * every link.
   */
  private answer(parts: AnswerStream): AnswerMessages {
    let sealed = this.sealed.get(parts)
    if (sealed === undefined) {
      sealed = []
      this.sealed.set(parts, sealed)
    }
    const memo = sealed
    return {
      isLast: (i) => parts.isLast(i),
      message: (i) =>
        (memo[i] ??= encodeSignedMessage(parts.isLast(i) ? 'signed-step2' : 'signed-update', [
          envelopePieces(this.envelopeOf(answerPart(parts, i))),
        ])),
      release: () => parts.unread(),
    }
  }

  /**
   * Decodes and scans the envelope, finds the writer's key and verifies
   * the signature (on the pool when there is one), then checks what the
   * update writes against the document as it is at that moment.
   */
  private open(bytes: Uint8Array, deviceId: string): OpenedEnvelope | Promise<OpenedEnvelope> {
    const envelope = decodeEnvelope(bytes)
    // A writer without a key is refused before its update is read.
    const key = this.writerKey(envelope)
    // One strict scan serves every check below and the replica's intake.
    const ranges = scanOrRefuse(envelope.update)
    // Past its writer's clientID budget it is refused whoever signed it,
    // before the signature: a compromised terminal had its LAN neighbour
    // relay 2,500 such envelopes, each checked and charged to the
    // neighbour's link until it was closed RATE_LIMITED (a probe).
    const overBudget =
      envelope.writer === SERVER_ID
        ? undefined
        : this.writerClients.refusal(this.options.replica.doc, envelope.writer, ranges.from.keys())
    if (overBudget !== undefined) {
      this.unchecked.add(overBudget)
      throw overBudget
    }
    // Nothing to apply: its writer and clientIDs checked, not its signature.
    // Deletes of values shown here without what replaces them, relayed by
    // another device, are not taken either (a delete set alone:
    // ./envelope-news.ts).
    const { doc } = this.options.replica
    const relayed = envelope.writer !== deviceId
    if (bringsNothing(doc, ranges) || (relayed && deletesUnreplaced(doc, ranges)))
      return { ...this.admit(bytes, envelope, key, ranges, false), nothing: true }
    const job = envelopeVerifyJob(envelope, key, this.site, this.generation)
    const pool = this.options.pool
    if (pool === undefined) {
      if (!verifyBytes(job.publicKey, job.message, job.signature))
        throw envelopeSignatureError(envelope)
      return this.admit(bytes, envelope, key, ranges)
    }
    return pool.verify(job).then((ok) => {
      // The registry may have changed while the signature was checked (a
      // revoke): the writer's key is looked up again, and the envelope
      // judged as if everything ran now, in line (the same checks in the
      // same order).
      const now = this.writerKey(envelope)
      if (now !== key && !Buffer.from(now).equals(Buffer.from(key)))
        return this.open(bytes, deviceId)
      if (!ok) throw envelopeSignatureError(envelope)
      return this.admit(bytes, envelope, key, ranges)
    })
  }

  /**
   * The key an envelope must be signed with: the server's own (its
   * envelope relayed back holds nothing the server lacks: see admit), else
   * the writer's registered key. Throws `SIGNATURE_INVALID` for a writer
   * without one.
   */
  private writerKey(envelope: Envelope): Uint8Array {
    if (envelope.writer === SERVER_ID) return this.options.identity.publicKey
    const key = this.options.deviceKey(envelope.writer)
    if (key === undefined) {
      const error = new SignatureInvalidError(
        `update of ${JSON.stringify(envelope.writer)}: no such device holds a key on this site`,
      )
      this.unchecked.add(error)
      throw error
    }
    return key
  }

  /**
   * The checks that read the document, once the signature is good (or,
   * without `signed`, of an envelope that brings nothing: its clientIDs
   * are not counted for its writer, whose nonces only the signature vouches
   * for; a review).
   */
  private admit(
    bytes: Uint8Array,
    envelope: Envelope,
    key: Uint8Array,
    ranges: UpdateRanges,
    signed = true,
  ): OpenedEnvelope {
    const fresh = bringsStructs(this.options.replica.doc, ranges)
    // The server only sends what it holds (its fan-out tells durable
    // changes only), so its own envelope relayed back brings it nothing.
    // One that does is another history's: a retired generation's (whose
    // signature fails already) or a data directory's before a restore.
    if (envelope.writer === SERVER_ID && fresh)
      throw new ForbiddenWriteError(
        "the server's own envelope holds structs the server does not: it is another history's",
      )
    if (envelope.writer !== SERVER_ID) {
      checkClients(envelope, key, ranges)
      this.options.check(envelope.update, envelope.writer, false)
      if (signed)
        this.writerClients.admit(this.options.replica.doc, envelope.writer, ranges.from.keys())
    }
    return { bytes, writer: envelope.writer, update: envelope.update, ranges, fresh }
  }
}
