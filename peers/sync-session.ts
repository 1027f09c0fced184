/**
 * The sync protocol on one connection, whatever the transport: both sides
 * send step 1 (their state vector), answer the other's step 1 with step 2
 * (what it lacks), then forward every durable change as an update. Inbound
 * updates are checked, then applied through the replica (durable before they
 * count), strictly in arrival order.
 */
import * as Y from 'yjs'
import { MessageTooLargeError, RostersyncError } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import { decodeMessage, encodeMessage, type Message } from '../core/protocol.js'
import type { Connection } from '../core/transport.js'
import type { Replica } from './replica.js'

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
}

/** A running session. */
export interface SyncSession {
  /** True once the other side's step 2 is durable here. */
  readonly synced: boolean
  /** Resolves once every message received so far has been handled. */
  idle(): Promise<void>
  /** Stops forwarding (the connection stays as it is). */
  stop(): void
}

/** Runs the sync protocol on `connection` until it closes. */
export function startSession(options: SessionOptions): SyncSession {
  const { replica, connection } = options
  let synced = false
  let queued = 0
  let chain: Promise<void> = Promise.resolve()
  const send = (message: Message): void => {
    if (connection.open) connection.send(encodeMessage(message))
  }
  const offUpdate = replica.onUpdate(({ update, from }) => {
    if (from !== connection.id) send({ type: 'sync-update', update })
  })
  const refuse = (error: RostersyncError): void => {
    if (options.reportErrors === true)
      send({ type: 'error', code: error.code, message: error.message })
    options.onRefused?.(error)
  }
  const apply = async (update: Uint8Array): Promise<void> => {
    options.check?.(update)
    await replica.applyRemote(update, connection.id)
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
      case 'sync-step1':
        await renewIfReused(message.stateVector)
        send({
          type: 'sync-step2',
          update: Y.encodeStateAsUpdate(replica.doc, message.stateVector),
        })
        return
      case 'sync-step2':
        await apply(message.update)
        synced = true
        options.onSynced?.()
        return
      case 'sync-update':
        await apply(message.update)
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
  send({ type: 'sync-step1', stateVector: Y.encodeStateVector(replica.doc) })
  return {
    get synced() {
      return synced
    },
    idle: () => chain,
    stop: offUpdate,
  }
}
