/**
 * The encoded messages of large answer parts, kept while their part is: the
 * replica hands out the same parts (the same arrays) while the document does
 * not change (peers/replica/answer-cache.ts), and the server the same sealed
 * envelopes for them (peers/server-signing.ts). Every fresh device asks with
 * the empty state vector after a restart, and the flood bench's 500
 * connect/disconnect cycles each fetched the roster: encoding each answer
 * again copied it whole every time (0.3 ms and a roster's worth of garbage
 * per answer). Keyed weakly by the part: a part no longer handed out takes
 * its messages with it.
 */
import { limits, netLimits } from '../../core/limits.js'
import { encodeMessage, type Message } from '../../core/protocol.js'
import type { Replica } from '../replica.js'
import type { SignedLink } from '../signed-link.js'
import { answerPart, type AnswerStream } from '../replica/answer-stream.js'

type PartMessageType = 'sync-step2' | 'sync-update' | 'signed-step2' | 'signed-update'

const kept: Record<PartMessageType, WeakMap<object, Uint8Array>> = {
  'sync-step2': new WeakMap(),
  'sync-update': new WeakMap(),
  'signed-step2': new WeakMap(),
  'signed-update': new WeakMap(),
}

/** The message of one answer part: a Yjs update, or the envelopes of one. */
export function partMessage(
  type: PartMessageType,
  part: Uint8Array | readonly Uint8Array[],
): Uint8Array {
  const encode = (): Uint8Array =>
    type === 'sync-step2' || type === 'sync-update'
      ? encodeMessage({ type, update: part as Uint8Array })
      : encodeMessage({ type, envelopes: part as Uint8Array[] })
  const bytes =
    part instanceof Uint8Array ? part.byteLength : part.reduce((n, e) => n + e.byteLength, 0)
  // Small answers are encoded afresh each time (and not the same arrays anyway).
  if (bytes < limits.answerCachedBytesMin) return encode()
  const map = kept[type]
  let message = map.get(part)
  if (message === undefined) {
    message = encode()
    map.set(part, message)
  }
  return message
}

/**
 * An answer's messages, each made when asked for, in order (at least one):
 * how many may not be known until the last is made (a server's answer is
 * encoded part by part: peers/replica/answer-stream.ts).
 */
export interface AnswerMessages {
  /**
   * Message `index` (0 up to the last), encoded: a `signed-update`, the
   * last a `signed-step2`.
   */
  message(index: number): Uint8Array
  /** Whether message `index` is the last. */
  isLast(index: number): boolean
  /** The link is done with it (sent the last, or stopped): once. */
  release?(): void
  /**
   * Undefined when message `index` may be made now, else a promise that
   * resolves once it may (its part is made in turns: gatedAnswer).
   */
  ready?(index: number): Promise<void> | undefined
}

/**
 * A replica's answer (`parts`) as unsigned messages, each made when asked
 * for: `sync-update`s, the last a `sync-step2`.
 */
export function plainAnswer(parts: AnswerStream): AnswerMessages {
  return {
    isLast: (i) => parts.isLast(i),
    message: (i) =>
      partMessage(parts.isLast(i) ? 'sync-step2' : 'sync-update', answerPart(parts, i)),
    release: () => parts.unread(),
  }
}

/** `lists` of envelopes as an answer's messages, each encoded when asked for. */
export function answerMessages(lists: readonly (readonly Uint8Array[])[]): AnswerMessages {
  const last = lists.length - 1
  return {
    isLast: (i) => i >= last,
    message: (i) => {
      const envelopes = lists[i] as readonly Uint8Array[]
      return encodeMessage(
        i === last ? { type: 'signed-step2', envelopes } : { type: 'signed-update', envelopes },
      )
    },
  }
}

/**
 * Envelopes grouped, in order, into messages of at most
 * `netLimits.answerChunkBytesMax` bytes (an envelope larger than that goes
 * alone); always at least one message, empty when there is nothing.
 */
export function envelopeMessages(envelopes: readonly Uint8Array[]): Uint8Array[][] {
  const max = netLimits.answerChunkBytesMax - netLimits.answerChunkOverheadBytesMax
  const messages: Uint8Array[][] = [[]]
  let bytes = 0
  for (const envelope of envelopes) {
    const last = messages[messages.length - 1] as Uint8Array[]
    if (last.length > 0 && bytes + envelope.byteLength > max) {
      messages.push([envelope])
      bytes = envelope.byteLength
    } else {
      last.push(envelope)
      bytes += envelope.byteLength
    }
  }
  return messages
}

/** Where {@link sendAnswer} sends: the session's. */
export interface AnswerOut {
  /** Send this side's durable state vector first (the server does: the acknowledgement). */
  readonly withStateVector: boolean
  send(message: Message): void
  /** The link's signer, when it speaks signed envelopes. */
  signed(): SignedLink | undefined
  /** Queues the answer's messages (the session's outbox). */
  stream(answer: AnswerMessages): void
  /**
   * The untrusted peer asking (its device id), when it is one: parts of a
   * costly answer are made only in turns for it
   * (peers/replica/answer-turns.ts); `inTurn`: the caller holds its turn
   * (ReplicaAnswers.turn), so the answer is made lazily, from now until
   * the turn's deadline.
   */
  readonly untrusted?: { readonly who: string; readonly inTurn: boolean }
  /** Told as the answer is made: it holds every durable change so far. */
  readonly made?: () => void
}

/**
 * `messages` of `parts`, ready to be made (`ready`) unless the answer was
 * cut by a change (resumed inside whenDurable first: AnswerStream.cut), or
 * an untrusted peer `who` waits for a part of a lazy answer
 * (AnswerStream.lazy) not made yet: made in turns (ReplicaAnswers.made),
 * even when it shares another link's answer from the cache.
 */
function gatedAnswer(
  replica: Replica,
  parts: AnswerStream,
  messages: AnswerMessages,
  who: string | undefined,
): AnswerMessages {
  const made: AnswerMessages = {
    ...messages,
    ready: (i) => {
      if (who === undefined || !parts.lazy)
        return parts.needsResume ? replica.whenDurable(() => parts.resume()) : undefined
      if (parts.ready(i)) return undefined
      return replica.answers.made(parts, i, who, (read) => replica.whenDurable(read))
    },
  }
  return who === undefined ? made : sharedBandwidth(replica, made, who)
}

/**
 * `messages` of an answer to the untrusted peer `who`, each counted
 * against the bytes its replica sends such peers, and waiting for its
 * share first when `who` was sent much lately (peers/replica/answer-bandwidth.ts).
 */
function sharedBandwidth(replica: Replica, messages: AnswerMessages, who: string): AnswerMessages {
  const gate = replica.answers.bandwidth.gate(who)
  return {
    ...messages,
    ready: (i) => gate.ready() ?? messages.ready?.(i),
    message: (i) => {
      const bytes = messages.message(i)
      gate.sent(bytes.byteLength)
      return bytes
    },
  }
}

/**
 * Sends the answer to a step 1 naming `sent`. The answer holds none of
 * this peer's own changes that are not durable, and is sent at that moment
 * (Replica.whenDurable), before any update that builds on it: an own change
 * sent and then lost to a crash would stay on the other side under a
 * clientID this peer no longer writes with. Our step 1 (the acknowledgement
 * a device reads) claims only what is durable here. It goes first: the
 * other side checks it for a reused clientID before it applies the step 2.
 * Resolves with that durable state vector.
 */
export async function sendAnswer(
  replica: Replica,
  sent: Uint8Array,
  out: AnswerOut,
): Promise<Uint8Array> {
  return replica.whenDurable((_doc, vector) => {
    out.made?.()
    if (out.withStateVector) out.send({ type: 'sync-step1', stateVector: vector })
    // In parts, one message each (PROTOCOL.md, "Answers in chunks"): all
    // but the last go as updates, the last as step 2, so the other side
    // counts the answer as arrived (its synced, a device's requestSync)
    // only once all of it has. Each part's message is made as the
    // connection takes it (the outbox paces them): the parts are the
    // replica's, held once for every link, and a server seals each as it
    // first goes out. A large unsigned part's message is encoded once
    // while the part is the same (partMessage).
    // A costly answer of an untrusted peer is made in turns (from now
    // until the deadline of the turn the caller holds, the rest in later
    // turns as the connection takes it: peers/replica/answer-turns.ts).
    const signed = out.signed()
    const untrusted = out.untrusted
    if (signed !== undefined && signed.answerParts === undefined) {
      const answer = signed.answer(sent)
      out.stream(untrusted === undefined ? answer : sharedBandwidth(replica, answer, untrusted.who))
      return vector
    }
    // Lazy (made in turns) for an untrusted peer when it costs: in its
    // turn, anything not in the cache; else if the cache let it go while
    // this waited for durability.
    const lazyFrom =
      untrusted === undefined ? Infinity : untrusted.inTurn ? 0 : limits.answerTurnCostMin
    const parts = replica.answers.parts(sent, lazyFrom)
    if (untrusted?.inTurn === true) replica.answers.slice(parts, 0, replica.answers.deadline())
    const messages = signed?.answerParts?.(parts) ?? plainAnswer(parts)
    out.stream(gatedAnswer(replica, parts, messages, untrusted?.who))
    return vector
  })
}
