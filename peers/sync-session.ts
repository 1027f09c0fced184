/**
 * The sync protocol on one connection, whatever the transport: both sides
 * send step 1 (their state vector), answer the other's step 1 with step 2
 * (what it lacks), then forward every durable change as an update. Inbound
 * updates are checked, then applied through the replica (durable before they
 * count), strictly in arrival order.
 *
 * Inbound messages wait in a bounded inbox (count and bytes); once the
 * connection is closed what waited is dropped (the next exchange sends it
 * again). A link with an untrusted peer (SessionOptions.untrusted) is also
 * bounded in messages, bytes and answered step 1s per second, and a refused
 * message closes it with the error's code: Yjs holds back every later
 * update of a writer that depends on a refused one, so a link that went on
 * would only look healthy while nothing of it lands.
 */
import * as Y from 'yjs'
import { ForbiddenWriteError, QueueFullError, RostersyncError } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import { CloseCode, encodeMessage, type Message } from '../core/protocol.js'
import type { Connection } from '../core/transport.js'
import type { UpdateRanges } from '../core/update-scan.js'
import type { Replica, ReplicaUpdate } from './replica.js'
import type { OpenedEnvelope, SignedLink } from './signed-link.js'
import { decodeInbound, ExcusedRefusals, LinkRates, type Rates } from './sync-session/inbound.js'
import { closeReason, refusalClose, remoteError, withUser } from './sync-session/inbound.js'
import { sendAnswer, type AnswerOut } from './sync-session/answer-messages.js'
import { signedUpdateMessage, updateMessage } from './sync-session/messages.js'
import { AnswerWaiters, AskedVectors, lacking } from './sync-session/answer-waiters.js'
import type { SyncAnswer, SyncSession } from './sync-session/types.js'
import { Outbox } from './sync-session/outbox.js'
import { renewIfReused } from './sync-session/reused-client-id.js'

export { closeReason, refusalClose } from './sync-session/inbound.js'

/** Options of {@link startSession}. */
export interface SessionOptions {
  readonly replica: Replica
  readonly connection: Connection
  /**
   * Checks an inbound update before anything of it is applied; throws to
   * refuse it. It may return the update's strict scan (core/update-scan.ts),
   * which the replica's intake then uses instead of scanning it again.
   */
  readonly check?: (update: Uint8Array) => UpdateRanges | void
  /** Send refusals back as error messages (the server does; devices log them). */
  readonly reportErrors?: boolean
  /**
   * A refused or failed inbound message; `update` is the refused update
   * when the message carried one (step 2 or update).
   */
  readonly onRefused?: (error: RostersyncError, update?: Uint8Array) => void
  /** An error message from the other side. */
  readonly onRemoteError?: (code: string, message: string) => void
  /** The other side's step 2 arrived and is durable: this side has all it had. */
  readonly onSynced?: () => void
  /**
   * An inbound update (step 2 or live) passed the check and is durable here,
   * or held back until earlier operations arrive (Replica.heldBackFrom).
   */
  readonly onApplied?: () => void
  /** The other side's step 1 arrived (its state vector, decoded), before it is answered. */
  readonly onStep1?: (theirs: Map<number, number>) => void
  /**
   * The other side is not trusted (a device's link at the server, a LAN
   * peer): its messages, bytes and answered step 1s per second are bounded
   * (`netLimits.link*`, `step1AnswersPerSecondMax`), a step 1 waiting behind
   * a later one is not answered (the later answer covers it), and a refused
   * message closes the link with its error code (PROTOCOL.md, "Refusals").
   */
  readonly untrusted?: boolean
  /** Who the other side is (a device id), for the turns of costly answers; the connection's id otherwise. */
  readonly peerId?: string
  /**
   * The link's per-second buckets when counted before the session (a LAN
   * link at its door: admission refills nothing; with its device's, shared
   * by that device's links: SharedRates). A fresh set otherwise.
   */
  readonly rates?: Rates
  /** This side answered a step 1 with step 2. */
  readonly onAnswered?: () => void
  /**
   * Answer every step 1 with step 2 followed by this side's own step 1 (the
   * server does): the other side learns what this side now holds, which is
   * how a device knows its changes arrived (PROTOCOL.md, "Acknowledgement").
   */
  readonly answerStep1WithStateVector?: boolean
  /** Send step 1 as soon as the session starts (default true). */
  readonly sendStep1OnStart?: boolean
  /**
   * Forward this side's durable changes as they happen (default true);
   * false leaves them for the next exchange (a device in periodic mode).
   */
  readonly forwardUpdates?: boolean
  /** Changes wait for this side's first answer to a step 1 (a device's links: see `beforeAnswer`). */
  readonly forwardAfterAnswer?: boolean
  /**
   * Speak signed envelopes on this link (PROTOCOL.md, "Signed writes"):
   * answers and forwarded changes go out signed, inbound envelopes are
   * opened (verified) before they are applied, and plain Yjs updates are
   * refused. Built by `link(send)` once the session can send.
   */
  readonly signed?: (send: (envelopes: Uint8Array[]) => void) => SignedLink
  /**
   * The server's hello (its key, this device's certificate, its generation
   * statement if any); throw to refuse the link. Until it is handled, the
   * link forwards nothing of this side (the exchange after it carries the
   * changes): a device on another generation must send nothing of its old.
   */
  readonly onHello?: (
    serverKey: Uint8Array,
    certificate: Uint8Array,
    generation: Uint8Array | undefined,
  ) => Promise<void>
}

export type { SyncAnswer, SyncSession }

/** One inbound message waiting in a session's inbox. */
interface Inbound {
  readonly size: number
  /** The decoded message, or why it is refused (it does not decode, or is too large). */
  readonly message: Message | RostersyncError
}

/** Runs the sync protocol on `connection` until it closes. */
export function startSession(options: SessionOptions): SyncSession {
  const { replica, connection } = options
  const untrusted = options.untrusted === true
  const rates = untrusted ? (options.rates ?? new LinkRates(() => replica.clock.now())) : undefined
  let synced = false
  let heardAt = replica.clock.now()
  /** Messages received and not handled yet, oldest first; emptied when the link closes. */
  const inbox: Inbound[] = []
  let inboxBytes = 0
  /** Reading paused while the inbox is full (a trusted link: see `netLimits.inboundPauseBytesMin`). */
  let readingPaused = false
  /** Step 1s in the inbox (a step 1 with a later one behind it needs no answer). */
  let step1sWaiting = 0
  /** The pump's run, while one is going (see pump). */
  let pumping: Promise<void> = Promise.resolve()
  let pumpRunning = false
  let stopped = false
  /** A server link forwards nothing before the server's hello is handled (see onHello). */
  let helloHandled = options.onHello === undefined
  /** Callers of requestSync waiting for their answer, oldest first. */
  const waiting = new AnswerWaiters()
  /** Our step 1s' vectors, each answer matched to one (SyncAnswer.asked). */
  const asked = new AskedVectors()
  const outbox = new Outbox(connection, replica.clock)
  const send = (message: Message): void => outbox.send(encodeMessage(message))
  // Relayed envelopes pass the same gate as own changes (below): nothing
  // leaves before the server's hello is handled (a device about to move
  // to another generation must not push the old one's writes; what it
  // holds goes out in its answer to the next step 1 instead).
  const signedLink = options.signed?.((envelopes) => {
    if (!helloHandled || !connection.open) return
    send({ type: 'signed-update', envelopes })
  })
  /** The signed link, while it speaks envelopes (see SignedLink.active). */
  const signedNow = (): SignedLink | undefined =>
    signedLink?.active() === true ? signedLink : undefined
  /**
   * Changes are not forwarded until this side makes its first answer to a
   * step 1, when they wait for it (`forwardAfterAnswer`): one sent before
   * could build on what only that answer carries (writes made offline,
   * under the clientID before a restart), and the receiver, finding its
   * origin nowhere, refused it FORBIDDEN_WRITE (a probe). The answer holds
   * every durable change told so far (AnswerOut.made): nothing is kept
   * meanwhile. Relayed envelopes are not held back (a peer that never asks
   * still gets them; another writer's may build on this device's offline
   * writes: left open).
   */
  let beforeAnswer = options.forwardAfterAnswer === true
  const forward = (told: ReplicaUpdate): void => {
    if (told.from === connection.id || !connection.open || !helloHandled || beforeAnswer) return
    const signed = signedNow()
    if (signed === undefined) {
      // A link that must sign and cannot yet sends nothing: the
      // exchange after the server's hello carries the change.
      if (signedLink?.plainAllowed === false) return
      outbox.send(updateMessage(told.update))
      return
    }
    const envelopes = signed.forward(told)
    if (envelopes.length > 0 && connection.open) outbox.send(signedUpdateMessage(envelopes))
  }
  const offUpdate =
    options.forwardUpdates === false
      ? () => undefined
      : replica.onUpdate(forward, { coalesce: true })
  const sendStep1 = (): void => {
    const stateVector = Y.encodeStateVector(replica.doc)
    asked.sent(stateVector)
    send({ type: 'sync-step1', stateVector })
  }
  const dropInbox = (): void => {
    inbox.length = 0
    inboxBytes = 0
    step1sWaiting = 0
  }
  /** The error message telling the other side of `error`, when this side reports them. */
  const report = (error: RostersyncError, message = error.message): Uint8Array | undefined =>
    options.reportErrors === true
      ? encodeMessage({ type: 'error', code: error.code, message: withUser(error, message) })
      : undefined
  /**
   * Closes the link for `error`: its error message (when reported) skips
   * what waits in the outbox, so that the other side learns the code.
   */
  const closeFor = (error: RostersyncError): void => {
    const { code, reason } = refusalClose(error)
    dropInbox()
    outbox.closeWith(report(error), code, reason)
  }
  const refuse = (error: RostersyncError, update?: Uint8Array, close = untrusted): void => {
    options.onRefused?.(error, update)
    if (close) return closeFor(error)
    const bytes = report(error)
    if (bytes !== undefined) outbox.send(bytes)
  }
  const apply = async (update: Uint8Array): Promise<void> => {
    if (signedNow() !== undefined)
      throw new ForbiddenWriteError(
        'SIGNATURE_REQUIRED: this link takes signed updates only (PROTOCOL.md, "Signed writes")',
      )
    const ranges = options.check?.(update)
    await replica.applyRemote(update, connection.id, ranges ?? undefined)
  }
  /** Opens and applies each envelope in order; the first refused stops the rest. */
  const applySigned = async (envelopes: readonly Uint8Array[]): Promise<void> => {
    const signed = signedNow()
    if (signed === undefined)
      throw new ForbiddenWriteError(
        'this peer cannot check signed updates yet (no server key pinned)',
      )
    const excused = new ExcusedRefusals(signed.relayedPerMessageMax, rates)
    try {
      for (const bytes of envelopes) {
        let opened: OpenedEnvelope
        try {
          // Awaited only if a promise (a verification pool): in line, turns keep order.
          const result = signed.open(bytes)
          opened = result instanceof Promise ? await result : result
          // Nothing more of a link closed while it was checked (a generation, a revoke).
          if (stopped || !connection.open) return
        } catch (error) {
          if (!(error instanceof RostersyncError) || signed.relayed?.(bytes) !== true) throw error
          // Another writer's envelope it relays: refused by name (SignedLink.relayed).
          excused.excuse(error, signed.checked?.(error) !== false)
          continue
        }
        if (opened.nothing === true) continue
        await replica.applyRemote(opened.update, connection.id, opened.ranges)
        signed.applied(opened)
      }
    } finally {
      // What applied goes on to the other links, the rest refused or not.
      signed.flush?.()
    }
    if (connection.open) excused.report(send)
  }
  /** Answers a step 1 stating `sent` (and `answers`: ours it answers, AskedVectors). */
  const answerStep1 = async (sent: Uint8Array, answers?: Uint8Array): Promise<void> => {
    const limited = rates?.answer(sent)
    if (limited !== undefined) throw limited
    const theirs = Y.decodeStateVector(sent)
    options.onStep1?.(theirs)
    await renewIfReused(replica, theirs)
    // A costly answer of an untrusted peer waits for its turn on this peer
    // (peers/replica/answer-turns.ts), and is made in turns.
    const who = options.peerId ?? connection.id
    const turn = untrusted ? await replica.answers.turn(theirs, who) : undefined
    try {
      const asker = untrusted ? { who, inTurn: turn?.held === true } : undefined
      if (!stopped && connection.open) await answerNow(sent, theirs, asker, answers)
    } finally {
      turn?.end()
    }
  }
  /** Answers `sent` (decoded: `theirs`) to `asker` (AnswerOut.untrusted). */
  type Asker = AnswerOut['untrusted']
  type Vector = Map<number, number>
  const answerNow = async (sent: Uint8Array, theirs: Vector, asker: Asker, by?: Uint8Array) => {
    const ours = await sendAnswer(replica, sent, {
      withStateVector: options.answerStep1WithStateVector === true,
      send,
      signed: signedNow,
      stream: (answer) => outbox.sendStream(answer),
      made: () => (beforeAnswer = false),
      ...(asker === undefined ? {} : { untrusted: asker }),
    })
    options.onAnswered?.()
    if (waiting.size > 0)
      waiting.step1(
        { theirs, ours: Y.decodeStateVector(ours), asked: by },
        lacking(replica.doc, theirs),
      )
  }
  const handle = async (message: Message): Promise<void> => {
    // Nothing of a link that owes a hello is handled before it: the hello
    // names the generation the rest belongs to (issue 13). A hello lost on
    // the way leaves the exchange unanswered: it times out, and reconnects.
    if (!helloHandled && message.type !== 'hello' && message.type !== 'error') return
    switch (message.type) {
      case 'sync-step1': {
        const answers = asked.answered()
        // A later step 1 from an untrusted peer is answered with everything
        // this one would get: answering both only amplifies a flood.
        if (untrusted && step1sWaiting > 0) return
        // A peer that asks and does not read has at most this many answers waiting.
        if (untrusted) await outbox.roomForStream(netLimits.answersWaitingMax)
        if (!connection.open) return
        await answerStep1(message.stateVector, answers)
        return
      }
      case 'sync-step2':
      case 'signed-step2': {
        if (message.type === 'sync-step2') await apply(message.update)
        else await applySigned(message.envelopes)
        synced = true
        options.onApplied?.()
        options.onSynced?.()
        waiting.step2()
        return
      }
      case 'sync-update':
        await apply(message.update)
        options.onApplied?.()
        return
      case 'signed-update':
        await applySigned(message.envelopes)
        options.onApplied?.()
        return
      case 'hello':
        if (options.onHello === undefined) return
        await options.onHello(message.serverKey, message.certificate, message.generation)
        helloHandled = true
        return
      case 'error':
        options.onRemoteError?.(...remoteError(message.code, message.message))
        return
      default:
        // Awareness and auth are not part of the roster: accepted, not kept.
        return
    }
  }
  const handleOne = async (next: Inbound): Promise<void> => {
    const { message } = next
    if (message instanceof RostersyncError) {
      refuse(message)
      return
    }
    try {
      await handle(message)
    } catch (error) {
      // A link closed meanwhile (a new generation, a revoke, a replaced
      // session) refuses nothing more: what failed was for it alone.
      if (stopped || !connection.open) return
      const update =
        message.type === 'sync-step2' || message.type === 'sync-update' ? message.update : undefined
      if (!(error instanceof RostersyncError))
        connection.close(CloseCode.internal, closeReason(`INTERNAL: ${String(error)}`))
      // A refused hello closes the link, whoever the peer: everything else
      // of it waits for a hello, so open it would only ignore all until its
      // timeout (a storage failure pinning the key, a certificate not ours).
      else if (message.type === 'hello') refuse(error, undefined, true)
      else refuse(error, update)
    }
  }
  /** Handles the inbox one message at a time, in order, while the link is open. */
  const pump = async (): Promise<void> => {
    // Cleared synchronously as the loop ends (a finally in this function,
    // not a then after it): a message arriving right after must start a run.
    pumpRunning = true
    try {
      for (;;) {
        const next = inbox.shift()
        if (next === undefined) return
        inboxBytes -= next.size
        if (readingPaused && inboxBytes <= netLimits.inboundPauseBytesMin / 2) {
          readingPaused = false
          connection.resumeReading?.()
        }
        if (!(next.message instanceof RostersyncError) && next.message.type === 'sync-step1')
          step1sWaiting--
        // Nothing more of a closed link is applied (its queue could hold a
        // flood that outlives every socket).
        if (stopped || !connection.open) {
          dropInbox()
          return
        }
        await handleOne(next)
      }
    } finally {
      pumpRunning = false
    }
  }
  const receive = (bytes: Uint8Array): void => {
    if (stopped || !connection.open) return
    heardAt = replica.clock.now()
    const limited =
      rates?.message(bytes.byteLength) ??
      (inbox.length + 1 > netLimits.inboundMessagesQueuedMax
        ? new QueueFullError('messages', netLimits.inboundMessagesQueuedMax)
        : inboxBytes + bytes.byteLength > netLimits.inboundBytesQueuedMax
          ? new QueueFullError('bytes', netLimits.inboundBytesQueuedMax)
          : undefined)
    if (limited !== undefined) {
      // Refused at once, ahead of what waits: the link is closed either way.
      options.onRefused?.(limited)
      closeFor(limited)
      return
    }
    const message = decodeInbound(bytes, replica.doc.store.clients.size)
    if (!(message instanceof RostersyncError) && message.type === 'sync-step1') step1sWaiting++
    inbox.push({ size: bytes.byteLength, message })
    inboxBytes += bytes.byteLength
    // A trusted peer (the server) is not refused for sending more than this
    // side applies as fast: it is read as fast as it is applied.
    if (
      !untrusted &&
      !readingPaused &&
      inboxBytes > netLimits.inboundPauseBytesMin &&
      connection.pauseReading !== undefined
    ) {
      readingPaused = true
      connection.pauseReading()
    }
    // One at a time, in order: an update may depend on the one before it,
    // which must be applied before this one is checked.
    if (!pumpRunning) pumping = pump()
  }
  connection.onMessage(receive)
  if (options.sendStep1OnStart !== false) sendStep1()
  return {
    get synced() {
      return synced
    },
    idle: () => pumping,
    requestSync() {
      if (stopped) return Promise.reject(new Error('connection closed'))
      // Closing (the server's close frame came): fail with the close, so that
      // the link has read its code (AUTH_FAILED, PEER_REVOKED) by then.
      const closed = (reject: (e: Error) => void) => () => reject(new Error('connection closed'))
      if (!connection.open) return new Promise((_, reject) => waiting.add(closed(reject), reject))
      // The answer may be the whole roster in parts: the log is compacted
      // once it is all in, not while it grows (Replica.deferCompaction).
      const release = replica.deferCompaction()
      return new Promise<SyncAnswer>((resolve, reject) => {
        waiting.add(
          (answer) => {
            release()
            resolve(answer)
          },
          (error) => {
            release()
            reject(error)
          },
        )
        sendStep1()
      })
    },
    askAgain() {
      if (stopped || !connection.open || waiting.size === 0) return
      waiting.askingAgain()
      sendStep1()
    },
    get heardAt() {
      return heardAt
    },
    get answerSize() {
      return waiting.answerSize
    },
    get answering() {
      return waiting.answering
    },
    stop() {
      stopped = true
      dropInbox()
      outbox.stop()
      offUpdate()
      signedLink?.stop()
      waiting.rejectAll()
    },
  }
}
