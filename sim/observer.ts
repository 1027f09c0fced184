/**
 * The network tap. Every connection a peer gets is wrapped so that what it
 * sends is seen here, with the sender's name, before the simulated network
 * (and its faults) touches it. Each Yjs update sent (sync step 2 or a live
 * update) is:
 *
 * - applied to an observer document, which therefore holds everything ever
 *   sent by anyone. Updates are seen in send order, which is causal but for
 *   one case: a peer may send an update that builds on its own writes it has
 *   not sent yet (made offline, they go out in its answer to the next state
 *   exchange, which a reordering network can deliver after a change it
 *   made on receiving the other side's answer). Yjs keeps such an update
 *   pending until what it builds on is seen;
 * - checked against rule 3 and "a peer writes only its own part", on the
 *   keys the update changed in the observer: no update may remove a user
 *   key from any writer's map (nobody ever deletes an entry outright: the
 *   server writes tombstones, devices keep their deletes local), and every
 *   entry in the server's part must come from a Yjs client the server used.
 *   A key left without an entry while the observer holds pending updates
 *   (the entry replacing it may be among them) is checked again once none
 *   is pending, and at the end of the run;
 * - kept, merged in chunks with `Y.mergeUpdates`, to rebuild the document
 *   from every update at the end (a second, independent reconstruction).
 *
 * Generations (history compaction) are documents of their own: nothing is
 * exchanged across them. Each update goes to the union of the generation
 * its sender is on when it sends it (the site tells), and the end compares
 * the peers with the union of the generation they converged on.
 */
import * as Y from 'yjs'
import { rootOwner } from '../core/entries.js'
import { SERVER_ID } from '../core/ids.js'
import { decodeMessage } from '../core/protocol.js'
import { decodeEnvelope } from '../core/signing.js'
import type { CloseInfo, Connection, Transport } from '../core/transport.js'

/** Updates merged into one before more are collected. */
const MERGE_CHUNK_UPDATES = 256

/** A rule broken in what a peer sent. */
export interface SendViolation {
  readonly sender: string
  readonly rule: 'device-delete-sent' | 'server-part-forged'
  readonly detail: string
  /** Virtual time of the send. */
  readonly at: number
}

/** Message kinds, for the network's per-kind counters. */
export function classifyMessage(message: Uint8Array): string {
  const type = message[0]
  if (type === 0) {
    const sub = message[1]
    return sub === 0 ? 'step1' : sub === 1 ? 'step2' : sub === 2 ? 'update' : 'sync-other'
  }
  if (type === 100) return 'error'
  if (type === 101) return message[1] === 1 ? 'signed-step2' : 'signed-update'
  return 'other'
}

/** Everything sent in one generation. */
class Union {
  /** Everything ever sent in this generation, integrated. */
  readonly doc = new Y.Doc({ gc: true })
  /** Keys an update left without an entry while updates were pending: checked again later. */
  readonly deferred = new Map<string, { root: string; key: string; sender: string; at: number }>()
  chunk: Uint8Array[] = []
  readonly merged: Uint8Array[] = []
}

/** Watches what peers send; see the module comment. */
export class NetworkObserver {
  /** Per generation id ('' before the first): everything sent in it. */
  readonly #unions = new Map<string, Union>()
  readonly #violations: SendViolation[] = []
  /** Yjs clients the server has written with (its clientID in every incarnation). */
  readonly serverClients = new Set<number>()
  /** Updates seen (after dropping the same message object sent on several links). */
  updates = 0
  updateBytes = 0
  /** Updates skipped because the same bytes were seen before. */
  duplicates = 0
  /**
   * The message seen last: a change fanned out to several links is one
   * message object sent on each in turn (peers/sync-session.ts), seen once.
   * (Not a WeakSet of every message: its ephemerons cost the garbage
   * collector more than the rest of the observer.)
   */
  #last: Uint8Array | undefined
  #sender = ''
  /** Set when the update being applied changed the observer document. */
  #changed = false
  /** Every distinct update seen, by hash and length. */
  readonly #distinct = new Map<string, Uint8Array[]>()
  readonly #now: () => number
  readonly #generationOf: (sender: string) => string

  /** `generationOf`: the generation id a peer is on now ('' before the first). */
  constructor(now: () => number, generationOf: (sender: string) => string = () => '') {
    this.#now = now
    this.#generationOf = generationOf
  }

  /** The union of generation `id`. */
  #union(id: string): Union {
    let union = this.#unions.get(id)
    if (union === undefined) {
      const created = new Union()
      created.doc.on('afterTransaction', (tr: Y.Transaction) => this.#check(created, tr))
      this.#unions.set(id, created)
      union = created
    }
    return union
  }

  /** Generations updates were seen in. */
  get generations(): number {
    return this.#unions.size
  }

  /** `sender` sent `message` (called by the tapped connections). */
  sent(sender: string, message: Uint8Array): void {
    if (message === this.#last) return
    this.#last = message
    const kind = classifyMessage(message)
    if (kind === 'signed-step2' || kind === 'signed-update') {
      // Signed writes: each envelope carries one update (its signature was
      // checked by the receiver, not the observer's business).
      const decoded = decodeMessage(message)
      if (decoded.type !== 'signed-step2' && decoded.type !== 'signed-update') return
      for (const envelope of decoded.envelopes)
        this.#observe(sender, decodeEnvelope(envelope).update)
      return
    }
    if (kind !== 'step2' && kind !== 'update') return
    const decoded = decodeMessage(message)
    if (decoded.type !== 'sync-step2' && decoded.type !== 'sync-update') return
    this.#observe(sender, decoded.update)
  }

  /** One update `sender` sent: integrated into the union of everything sent. */
  #observe(sender: string, update: Uint8Array): void {
    this.updates++
    this.updateBytes += update.byteLength
    // The same bytes again (a state exchange that found nothing new carries
    // the same delete set each time) change nothing: skip Yjs's decoding.
    if (this.#duplicate(update)) {
      this.duplicates++
      return
    }
    const union = this.#union(this.#generationOf(sender))
    this.#sender = sender
    this.#changed = false
    try {
      Y.applyUpdate(union.doc, update, sender)
    } finally {
      this.#sender = ''
    }
    if (union.deferred.size > 0 && union.doc.store.pendingStructs === null) this.#recheck(union)
    // Only updates that brought something new matter to the union.
    if (!this.#changed) return
    union.chunk.push(update)
    if (union.chunk.length >= MERGE_CHUNK_UPDATES) this.#mergeChunk(union)
  }

  /** True when exactly these bytes were seen before (remembers them otherwise). */
  #duplicate(update: Uint8Array): boolean {
    const key = `${fnv1a(update)}:${update.byteLength}`
    const same = this.#distinct.get(key)
    if (same === undefined) {
      this.#distinct.set(key, [update])
      return false
    }
    if (same.some((seen) => sameBytes(seen, update))) return true
    same.push(update)
    return false
  }

  /** Every rule broken in what peers sent; keys still deferred count as removed. */
  get violations(): readonly SendViolation[] {
    for (const union of this.#unions.values()) this.#recheck(union)
    return this.#violations
  }

  /** Checks the deferred keys again: still without an entry, they were removed. */
  #recheck(union: Union): void {
    for (const { root, key, sender, at } of union.deferred.values()) {
      const entries = (union.doc.share.get(root) as unknown as { _map: Map<string, Y.Item> })._map
      const item = entries.get(key)
      if (item === undefined || item.deleted) this.#removed(sender, root, key, at)
    }
    union.deferred.clear()
  }

  #removed(sender: string, root: string, key: string, at: number): void {
    this.#violations.push({
      sender,
      rule: 'device-delete-sent',
      detail: `an update sent by ${sender} removes ${JSON.stringify(key)} from ${root}`,
      at,
    })
  }

  /** A document rebuilt from every update seen in generation `id`, merged with `Y.mergeUpdates`. */
  rebuild(id = ''): Y.Doc {
    const union = this.#union(id)
    this.#mergeChunk(union)
    const doc = new Y.Doc({ gc: true })
    if (union.merged.length > 0) Y.applyUpdate(doc, Y.mergeUpdates(union.merged))
    return doc
  }

  /** Wraps `connection` so that what `sender` sends through it is seen first. */
  tap(
    connection: Connection,
    sender: string,
    hooks: { beforeSend?: () => void; onClosed?: (info: CloseInfo) => void } = {},
  ): Connection {
    const seen = (message: Uint8Array): void => this.sent(sender, message)
    return {
      get id() {
        return connection.id
      },
      get remote() {
        return connection.remote
      },
      get open() {
        return connection.open
      },
      send(message) {
        if (connection.open) {
          hooks.beforeSend?.()
          seen(message)
        }
        connection.send(message)
      },
      onMessage: (handler) => connection.onMessage(handler),
      onClose(handler) {
        connection.onClose((info) => {
          handler(info)
          hooks.onClosed?.(info)
        })
      },
      close: (code, reason) => connection.close(code, reason),
    }
  }

  /** Wraps a transport so that every connection it opens is tapped. */
  tapTransport(transport: Transport, sender: string): Transport {
    return {
      connect: async (address) => this.tap(await transport.connect(address), sender),
      close: () => transport.close(),
    }
  }

  #mergeChunk(union: Union): void {
    if (union.chunk.length === 0) return
    const chunk = union.chunk
    union.chunk = []
    union.merged.push(chunk.length === 1 ? (chunk[0] as Uint8Array) : Y.mergeUpdates(chunk))
    if (union.merged.length >= MERGE_CHUNK_UPDATES) {
      const all = Y.mergeUpdates(union.merged)
      union.merged.length = 0
      union.merged.push(all)
    }
  }

  /** Checks the keys a sent update changed in the observer document of its generation. */
  #check(union: Union, tr: Y.Transaction): void {
    const sender = this.#sender
    if (sender === '') return
    if (changedDocument(tr)) this.#changed = true
    for (const [type, keys] of tr.changed) {
      if (type._item !== null) continue
      const root = rootNameOf(union.doc, type)
      if (root === undefined) continue
      const owner = rootOwner(root)
      // A root may still be Yjs's untyped placeholder (nobody called
      // getMap on it): read its entries the way Y.Map does.
      const entries = (type as unknown as { _map: Map<string, Y.Item> })._map
      for (const key of keys) {
        if (key === null) continue
        const item = entries.get(key)
        if (item === undefined || item.deleted) {
          if (union.doc.store.pendingStructs === null) this.#removed(sender, root, key, this.#now())
          else union.deferred.set(`${root}\u0000${key}`, { root, key, sender, at: this.#now() })
          continue
        }
        if (owner !== SERVER_ID) continue
        const client = item.id.client
        if (!this.serverClients.has(client)) {
          this.#violations.push({
            sender,
            rule: 'server-part-forged',
            detail: `an update sent by ${sender} writes ${JSON.stringify(key)} into ${root} as Yjs client ${client}, not one of the server's`,
            at: this.#now(),
          })
        }
      }
    }
  }
}

/** Whether a transaction changed the document (Yjs's own test before it emits 'update'). */
function changedDocument(tr: Y.Transaction): boolean {
  if (tr.deleteSet.clients.size > 0) return true
  for (const [client, clock] of tr.afterState) if (tr.beforeState.get(client) !== clock) return true
  return false
}

/** FNV-1a over the bytes: a cheap 32-bit key for spotting repeated updates. */
function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ (bytes[i] as number), 0x01000193)
  return h >>> 0
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false
  // memcmp, not a loop in JavaScript: run on every update sent.
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  )
}

/** The root name of a top-level type of `doc`. */
function rootNameOf(doc: Y.Doc, type: unknown): string | undefined {
  for (const [name, shared] of doc.share) if ((shared as unknown) === type) return name
  return undefined
}
