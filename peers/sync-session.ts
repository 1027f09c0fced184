/**
 * The sync protocol on one connection, whatever the transport: both sides
 * send step 1 (their state vector), answer the other's step 1 with step 2
 * (what it lacks), then forward every durable change as an update. Inbound
 * updates are checked, then applied through the replica (durable before they
 * count), strictly in arrival order.
 */
import * as Y from 'yjs'
import { ForbiddenWriteError, MessageTooLargeError, RostersyncError } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import { decodeMessage, encodeMessage, type Message } from '../core/protocol.js'
import type { Connection } from '../core/transport.js'
import type { Replica } from './replica.js'
import type { SignedLink } from './signed-link.js'

/** Options of {@link startSession}. */
export interface SessionOptions {
  readonly replica: Replica
  readonly connection: Connection
  /** Checks an inbound update before anything of it is applied; throws to refuse it. */
  readonly check?: (update: Uint8Array) => void
  /** Send refusals back as error messages (the server does; devices log them). */
  readonly reportErrors?: boolean
  /** A refused or failed inbound message. */
  readonly onRefused?: (error: RostersyncError) => void
  /** An error message from the other side. */
  readonly onRemoteError?: (code: string, message: string) => void
  /** The other side's step 2 arrived and is durable: this side has all it had. */
  readonly onSynced?: () => void
  /** An inbound update (step 2 or live) passed the check and is durable here. */
  readonly onApplied?: () => void
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
  /**
   * Speak signed envelopes on this link (PROTOCOL.md, "Signed writes"):
   * answers and forwarded changes go out signed, inbound envelopes are
   * opened (verified) before they are applied, and plain Yjs updates are
   * refused. Built by `link(send)` once the session can send.
   */
  readonly signed?: (send: (envelopes: Uint8Array[]) => void) => SignedLink
  /** The server's hello (its key and this device's certificate); throw to refuse the link. */
  readonly onHello?: (serverKey: Uint8Array, certificate: Uint8Array) => Promise<void>
}

/** What the other side holds, as its answer to our step 1 told us. */
export interface SyncAnswer {
  /** The other side's state vector, after it applied everything we sent before. */
  readonly theirs: Map<number, number>
  /** Our state vector when their step 1 was answered (what our step 2 covered). */
  readonly ours: Map<number, number>
}

/** A running session. */
export interface SyncSession {
  /** True once the other side's step 2 is durable here. */
  readonly synced: boolean
  /** Resolves once every message received so far has been handled. */
  idle(): Promise<void>
  /**
   * Sends step 1 (our state vector) now. With a peer that answers step 1
   * with its own step 1 and then step 2 (the server), resolves with that
   * answer once its step 2 is durable here (our step 2 answering its step 1
   * has been sent by then); rejects when the connection closes first.
   */
  requestSync(): Promise<SyncAnswer>
  /**
   * Stops forwarding and rejects pending requestSync calls; the connection's
   * owner calls it when the connection closes (the connection stays as it is).
   */
  stop(): void
}

/**
 * The update message for a durable change, encoded once however many links
 * forward it (the server fans one change out to every connected device):
 * the replica tells every link of a change in one loop, so the last update
 * encoded is the one to keep.
 */
let lastUpdate: Uint8Array | undefined
let lastMessage: Uint8Array = new Uint8Array(0)
function updateMessage(update: Uint8Array): Uint8Array {
  if (update !== lastUpdate) {
    lastMessage = encodeMessage({ type: 'sync-update', update })
    lastUpdate = update
  }
  return lastMessage
}

/** Runs the sync protocol on `connection` until it closes. */
export function startSession(options: SessionOptions): SyncSession {
  const { replica, connection } = options
  let synced = false
  let queued = 0
  /** Callers of requestSync waiting for the other side's step 1, oldest first. */
  const waiting: Array<{
    resolve: (answer: SyncAnswer) => void
    reject: (error: Error) => void
    /** Filled by the other side's step 1; its step 2 then completes the answer. */
    answer?: SyncAnswer
  }> = []
  let chain: Promise<void> = Promise.resolve()
  const send = (message: Message): void => {
    if (connection.open) connection.send(encodeMessage(message))
  }
  const signedLink = options.signed?.((envelopes) => send({ type: 'signed-update', envelopes }))
  /** The signed link, while it speaks envelopes (see SignedLink.active). */
  const signedNow = (): SignedLink | undefined =>
    signedLink?.active() === true ? signedLink : undefined
  const offUpdate =
    options.forwardUpdates === false
      ? () => undefined
      : replica.onUpdate(
          (told) => {
            if (told.from === connection.id || !connection.open) return
            const signed = signedNow()
            if (signed === undefined) {
              connection.send(updateMessage(told.update))
              return
            }
            const envelopes = signed.forward(told)
            if (envelopes.length > 0) send({ type: 'signed-update', envelopes })
          },
          { coalesce: true },
        )
  const stateVector = (): Uint8Array => Y.encodeStateVector(replica.doc)
  const refuse = (error: RostersyncError): void => {
    if (options.reportErrors === true)
      send({ type: 'error', code: error.code, message: error.message })
    options.onRefused?.(error)
  }
  const apply = async (update: Uint8Array): Promise<void> => {
    if (signedNow() !== undefined)
      throw new ForbiddenWriteError(
        'SIGNATURE_REQUIRED: this link takes signed updates only (PROTOCOL.md, "Signed writes")',
      )
    options.check?.(update)
    await replica.applyRemote(update, connection.id)
  }
  /** Opens and applies each envelope in order; the first refused stops the rest. */
  const applySigned = async (envelopes: readonly Uint8Array[]): Promise<void> => {
    const signed = signedNow()
    if (signed === undefined)
      throw new ForbiddenWriteError(
        'this peer cannot check signed updates yet (no server key pinned)',
      )
    for (const bytes of envelopes) {
      const opened = signed.open(bytes)
      await replica.applyRemote(opened.update, connection.id)
      signed.applied(opened)
    }
  }
  /**
   * The other side knows more operations of our clientID than we have: this
   * data directory was restored from a backup (or copied) after that clientID
   * wrote more. Writing on with it would mint ids that already exist
   * elsewhere with other content, so take a fresh one now.
   */
  const renewIfReused = async (stateVector: Uint8Array): Promise<void> => {
    const theirs = Y.decodeStateVector(stateVector).get(replica.doc.clientID) ?? 0
    if (theirs > Y.getState(replica.doc.store, replica.doc.clientID)) await replica.renewClientId()
  }
  const handle = async (bytes: Uint8Array): Promise<void> => {
    if (bytes.byteLength > netLimits.messageBytesMax) {
      throw new MessageTooLargeError('message', bytes.byteLength, netLimits.messageBytesMax)
    }
    const message = decodeMessage(bytes)
    switch (message.type) {
      case 'sync-step1': {
        await renewIfReused(message.stateVector)
        // The answer holds none of this peer's own changes that are not
        // durable, and is sent at that moment (Replica.whenDurable), before
        // any update that builds on it: an own change sent and then lost to a
        // crash would stay on the other side under a clientID this peer no
        // longer writes with. Our step 1 (the acknowledgement a device reads)
        // claims only what is durable here. It goes first: the other side
        // checks it for a reused clientID before it applies the step 2.
        const ours = await replica.whenDurable((_doc, vector) => {
          if (options.answerStep1WithStateVector === true) {
            send({ type: 'sync-step1', stateVector: vector })
          }
          const signed = signedNow()
          if (signed === undefined)
            send({ type: 'sync-step2', update: replica.encodeDiff(message.stateVector) })
          else send({ type: 'signed-step2', envelopes: signed.answer(message.stateVector) })
          return vector
        })
        options.onAnswered?.()
        const waiter = waiting.find((w) => w.answer === undefined)
        if (waiter !== undefined) {
          waiter.answer = {
            theirs: Y.decodeStateVector(message.stateVector),
            ours: Y.decodeStateVector(ours),
          }
        }
        return
      }
      case 'sync-step2':
      case 'signed-step2': {
        if (message.type === 'sync-step2') await apply(message.update)
        else await applySigned(message.envelopes)
        synced = true
        options.onApplied?.()
        options.onSynced?.()
        const answer = waiting[0]?.answer
        if (answer !== undefined) waiting.shift()?.resolve(answer)
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
        await options.onHello(message.serverKey, message.certificate)
        return
      case 'error':
        options.onRemoteError?.(message.code, message.message)
        return
      default:
        // Awareness and auth are not part of the roster: accepted, not kept.
        return
    }
  }
  connection.onMessage((bytes) => {
    if (++queued > netLimits.inboundMessagesQueuedMax) {
      connection.close(1008, 'TOO_MANY_QUEUED_MESSAGES')
      return
    }
    // One at a time, in order: an update may depend on the one before it,
    // which must be applied before this one is checked.
    chain = chain
      .then(() => handle(bytes))
      .catch((error: unknown) => {
        if (error instanceof RostersyncError) refuse(error)
        else connection.close(1011, `INTERNAL: ${(error as Error).message}`)
      })
      .finally(() => {
        queued--
      })
  })
  if (options.sendStep1OnStart !== false) send({ type: 'sync-step1', stateVector: stateVector() })
  return {
    get synced() {
      return synced
    },
    idle: () => chain,
    requestSync() {
      if (!connection.open) return Promise.reject(new Error('connection closed'))
      return new Promise<SyncAnswer>((resolve, reject) => {
        waiting.push({ resolve, reject })
        send({ type: 'sync-step1', stateVector: stateVector() })
      })
    },
    stop() {
      offUpdate()
      signedLink?.stop()
      const pending = waiting.splice(0)
      if (pending.length === 0) return
      const closed = new Error('connection closed')
      for (const w of pending) w.reject(closed)
    },
  }
}
