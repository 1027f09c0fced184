/**
 * What a session reads off an inbound message before it queues it, and how
 * a refusal closes a link: the decode (a step 1's state vector included)
 * and the size bound, the per-second bounds of an untrusted link, and the
 * close code and reason of a refusal (PROTOCOL.md, "Refusals").
 */
import * as decoding from 'lib0/decoding'
import {
  clip,
  isErrorCode,
  MalformedMessageError,
  MessageTooLargeError,
  RateLimitedError,
  type ErrorCode,
  type RostersyncError,
} from '../../core/errors.js'
import { cleanText } from '../../core/ids.js'
import type { Clock } from '../../core/clock.js'
import { limits, netLimits } from '../../core/limits.js'
import { CloseCode, decodeMessage, type Message } from '../../core/protocol.js'
import { refusedUserOf } from '../../core/authorize.js'
import { TokenBucket } from '../../core/token-bucket.js'
import { closeReason } from '../../core/close-reason.js'

/** The close code and reason for a refusal (the reason starts with the error code). */
export function refusalClose(error: RostersyncError): { code: number; reason: string } {
  const code =
    error.code === 'MALFORMED_MESSAGE'
      ? CloseCode.malformed
      : error.code === 'MESSAGE_TOO_LARGE'
        ? CloseCode.tooLarge
        : error.code === 'STORAGE_FAILED' ||
            error.code === 'STORE_CLOSED' ||
            error.code === 'PEER_CLOSED'
          ? CloseCode.internal
          : error.code === 'GENERATION_CHANGED'
            ? CloseCode.generationChanged
            : CloseCode.refused
  return { code, reason: closeReason(`${error.code}: ${error.message}`) }
}

/**
 * The text of an error message telling the peer of `error`: `message`,
 * and ` (user "<id>")` when the refusal concerns one user (its details), so
 * that the device's `save-to-server-failed` event names the user as the
 * server's `write-refused` does (PROTOCOL.md, "Refusals").
 */
export function withUser(error: RostersyncError, message: string): string {
  const userId = refusedUserOf(error)
  return userId === undefined ? message : `${message} (user ${JSON.stringify(userId)})`
}

/** An error message without the user named at its end (see withUser): what parsers of it read. */
export function withoutUser(message: string): string {
  return userOfMessage(message) === undefined ? message : message.replace(USER_SUFFIX, '')
}

const USER_SUFFIX = / \(user "(?:[^"\\]|\\.)*"\)$/

/** The user an error message names at its end (see withUser), if any. */
export function userOfMessage(message: string): string | undefined {
  const named = / \(user ("(?:[^"\\]|\\.)*")\)$/.exec(message)
  if (named === null) return undefined
  try {
    const userId: unknown = JSON.parse(named[1] as string)
    return typeof userId === 'string' ? userId : undefined
  } catch {
    return undefined
  }
}

/**
 * A peer's error message as this peer keeps it (its code and text): a
 * known code (an unknown one said in the text, reported `SYNC_FAILED`),
 * no escapes or control characters, at most `limits.peerErrorCharsMax`
 * characters. A LAN peer's were logged whole, under a fresh code each
 * time (a probe: 30 MB of events in 3 s, ANSI escapes and all).
 */
export function remoteError(code: string, message: string): [ErrorCode, string] {
  const known = isErrorCode(code)
  const text = known ? message : `${clip(code, 64)}: ${message}`
  return [known ? code : 'SYNC_FAILED', cleanText(text, limits.peerErrorCharsMax)]
}

export { closeReason }

/** The per-second bounds of an untrusted link (SessionOptions.untrusted). */
/** Per-second bounds on what a peer sends (LinkRates, or several together). */
export interface Rates {
  /** Counts an inbound message; the refusal when it is one too many. */
  message(size: number): RostersyncError | undefined
  /** Counts an answer to a step 1 naming `stateVector`; the refusal when it is one too many. */
  answer(stateVector: Uint8Array): RostersyncError | undefined
}

/**
 * Several sets of buckets charged together: a LAN link's own and its
 * device's, shared by every link that device's certificate holds at this
 * peer (up to `lanLinksPerDeviceMax`), so that more links do not buy a
 * device more messages a second. The first refusal wins.
 */
export class SharedRates implements Rates {
  constructor(private readonly all: readonly Rates[]) {}

  message(size: number): RostersyncError | undefined {
    for (const rates of this.all) {
      const refusal = rates.message(size)
      if (refusal !== undefined) return refusal
    }
    return undefined
  }

  answer(stateVector: Uint8Array): RostersyncError | undefined {
    for (const rates of this.all) {
      const refusal = rates.answer(stateVector)
      if (refusal !== undefined) return refusal
    }
    return undefined
  }
}

/**
 * Each admitted device's shared buckets at a LAN peer (SharedRates): kept
 * while the device has links there, and for as long after its last one
 * closes as its buckets take to refill, so that closing every link and
 * opening one again buys no fresh burst.
 */
export class DeviceRates {
  private readonly byDevice = new Map<
    string,
    { readonly rates: LinkRates; links: number; timer?: unknown }
  >()

  constructor(private readonly clock: Clock) {}

  /** The buckets of `deviceId`, for a link of it just admitted (until `release`). */
  take(deviceId: string): LinkRates {
    let entry = this.byDevice.get(deviceId)
    if (entry === undefined) {
      entry = { rates: new LinkRates(() => this.clock.now()), links: 0 }
      this.byDevice.set(deviceId, entry)
    }
    if (entry.timer !== undefined) this.clock.clearTimeout(entry.timer)
    entry.timer = undefined
    entry.links++
    return entry.rates
  }

  /** A link of `deviceId` that `take` counted has closed. */
  release(deviceId: string): void {
    const entry = this.byDevice.get(deviceId)
    if (entry === undefined || --entry.links > 0) return
    entry.timer = this.clock.setTimeout(() => {
      if (entry.links === 0) this.byDevice.delete(deviceId)
    }, LinkRates.refillMs())
  }

  /** Stops the timers (the LAN node closes). */
  close(): void {
    for (const entry of this.byDevice.values())
      if (entry.timer !== undefined) this.clock.clearTimeout(entry.timer)
    this.byDevice.clear()
  }

  /** Devices whose buckets are kept (tests). */
  get size(): number {
    return this.byDevice.size
  }
}

export class LinkRates implements Rates {
  private readonly messages = new TokenBucket(
    netLimits.linkMessagesPerSecondMax,
    netLimits.linkMessagesBurstMax,
  )
  private readonly bytes = new TokenBucket(
    netLimits.linkBytesPerSecondMax,
    netLimits.linkBytesBurstMax,
  )
  private readonly answers = new TokenBucket(
    netLimits.step1AnswersPerSecondMax,
    netLimits.step1AnswersBurstMax,
  )
  private readonly clients = new TokenBucket(
    netLimits.step1ClientsPerSecondMax,
    netLimits.step1ClientsBurstMax,
  )

  constructor(private readonly now: () => number) {}

  /** How long, in ms, empty buckets take to fill up again (the slowest of the four). */
  static refillMs(): number {
    const seconds = Math.max(
      netLimits.linkMessagesBurstMax / netLimits.linkMessagesPerSecondMax,
      netLimits.linkBytesBurstMax / netLimits.linkBytesPerSecondMax,
      netLimits.step1AnswersBurstMax / netLimits.step1AnswersPerSecondMax,
      netLimits.step1ClientsBurstMax / netLimits.step1ClientsPerSecondMax,
    )
    return Math.ceil(seconds * 1000)
  }

  /** Counts an inbound message; the refusal when it is one too many. */
  message(size: number): RostersyncError | undefined {
    const now = this.now()
    if (!this.messages.take(1, now))
      return new RateLimitedError('messages', netLimits.linkMessagesPerSecondMax)
    if (!this.bytes.take(size, now))
      return new RateLimitedError('bytes', netLimits.linkBytesPerSecondMax)
    return undefined
  }

  /**
   * Counts an answer to a step 1 whose state vector is `stateVector` (the
   * clients it names, read off its first number before it is decoded: the
   * rates bound what decoding it costs); the refusal when it is one too many.
   */
  answer(stateVector: Uint8Array): RostersyncError | undefined {
    const clients = decoding.readVarUint(decoding.createDecoder(stateVector))
    const now = this.now()
    if (!this.answers.take(1, now))
      return new RateLimitedError('answered step 1s', netLimits.step1AnswersPerSecondMax)
    if (!this.clients.take(clients, now))
      return new RateLimitedError('clients named by step 1s', netLimits.step1ClientsPerSecondMax)
    return undefined
  }
}

/**
 * Reads a state vector of `clients` entries (client, clock) through to its
 * end without building it: MALFORMED_MESSAGE unless it holds exactly that.
 */
function checkStateVector(bytes: Uint8Array, clients: number): void {
  const decoder = decoding.createDecoder(bytes)
  decoding.readVarUint(decoder)
  for (let i = 0; i < clients; i++) {
    decoding.readVarUint(decoder)
    decoding.readVarUint(decoder)
  }
  if (decoding.hasContent(decoder))
    throw new MalformedMessageError('state vector has bytes past its last entry')
}

/**
 * Decodes a message, and a step 1's state vector, at arrival. `held`: the
 * clients this peer's document names (a step 1 may name that many and
 * `netLimits.stateVectorClientsMax` more).
 */
export function decodeInbound(bytes: Uint8Array, held = 0): Message | RostersyncError {
  if (bytes.byteLength > netLimits.messageBytesMax) {
    return new MessageTooLargeError('message', bytes.byteLength, netLimits.messageBytesMax)
  }
  try {
    const message = decodeMessage(bytes)
    if (message.type === 'sync-step1') {
      // Bounded before it is decoded (its first number is its length).
      const clients = decoding.readVarUint(decoding.createDecoder(message.stateVector))
      const max = held + netLimits.stateVectorClientsMax
      if (clients > max) return new MessageTooLargeError('a state vector', clients, max, 'clients')
      // A state vector that does not decode must be refused as malformed
      // here, not found out deep in the answer (an untyped failure); read,
      // not decoded into a map (the answer does that, within its rates).
      checkStateVector(message.stateVector, clients)
    }
    return message
  } catch (error) {
    return error instanceof MalformedMessageError
      ? error
      : new MalformedMessageError('state vector does not decode', error)
  }
}

/**
 * The relayed envelopes refused in one message while the link goes on
 * (SignedLink.relayed): at most `max`, each that cost a signature check
 * counted as a message against the link's rates (one refused by a lookup
 * costs what its bytes, already counted, do), reported once for the
 * message rather than once each (a message of 100,000 refused envelopes
 * must not be answered with 100,000 messages).
 */
/** Refusals made without a signature check charged as one message (ExcusedRefusals). */
export const UNCHECKED_PER_MESSAGE = 64

export class ExcusedRefusals {
  private count = 0
  /** Those refused without a signature checked (a lookup, a count). */
  private unchecked = 0
  private first: RostersyncError | undefined

  constructor(
    private readonly max: number,
    private readonly rates: Rates | undefined,
  ) {}

  /** Counts `error`; throws it (or `RATE_LIMITED`) when it is one too many. */
  excuse(error: RostersyncError, checked: boolean): void {
    if (++this.count > this.max) throw error
    // One message of no bytes (its bytes came with the message that held
    // it); one per UNCHECKED_PER_MESSAGE refused without a signature check
    // (still a decode and a scan each: free, a message of 100,000 cost the
    // server seconds).
    const charged = checked || ++this.unchecked % UNCHECKED_PER_MESSAGE === 0
    const limited = charged ? this.rates?.message(0) : undefined
    if (limited !== undefined) throw limited
    this.first ??= error
  }

  /** Sends the error message that reports them, when any was excused. */
  report(send: (message: Message) => void): void {
    const first = this.first
    if (first === undefined) return
    send({
      type: 'error',
      code: first.code,
      message: `${this.count} relayed envelope(s) refused, the rest applied: ${first.message}`,
    })
  }
}
