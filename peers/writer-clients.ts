/**
 * How many Yjs clientIDs each device writes under, on the server
 * (peers/server-signing.ts asks before it admits a device's envelope).
 *
 * A device's clientIDs are derived from its key and a nonce it picks
 * (core/signing.ts), one more after each crash, restore, wipe or full sync.
 * Every clientID costs every later state vector (each step 1) its id and
 * clock, and every edit a little (yjs#415), until the next generation. An
 * envelope may name at most `limits.envelopeNoncesMax` of them, but nothing
 * bounded how many one device gathers: a device signing envelopes of fresh
 * nonces took the server from 2 clientIDs to 32,002 (a 286 KB state vector,
 * edits ten times slower). A device may hold at most
 * `limits.writerClientIdsMax` in a generation; past it its update is refused
 * (`FORBIDDEN_WRITE`) until a new generation (which the count of clientIDs
 * makes due) starts it afresh. The document as a whole names at most
 * `limits.documentClientIdsMax`, plus a reserve for devices that hold few
 * (`limits.writerClientIdsReserved`).
 *
 * Counted from the document (the clientIDs whose first item lies in the
 * device's part; clientIDs the server's garbage collection emptied are not
 * counted), built at the first envelope of each document and followed
 * envelope by envelope.
 */
import * as Y from 'yjs'
import { rootOwner } from '../core/entries.js'
import { ForbiddenWriteError, withoutStack } from '../core/errors.js'
import { limits } from '../core/limits.js'
import { rootNameOf } from '../core/root-names.js'

/** The clientIDs of each writer in one document (see the module comment). */
export class WriterClients {
  private doc: Y.Doc | undefined
  private byWriter = new Map<string, Set<number>>()
  /** The document's clientIDs looked at (classify), counted or not. */
  private classified = new Set<number>()
  /** The most clientIDs one writer holds. */
  private most = 0
  /** Told of a writer each time it takes a clientID (the registry notes that it wrote). */
  onWriter?: (writer: string) => void

  /**
   * Throws `FORBIDDEN_WRITE` when `writer` would write under more than
   * `limits.writerClientIdsMax` clientIDs with `clients`; else counts them.
   */
  admit(doc: Y.Doc, writer: string, clients: Iterable<number>): void {
    const fresh = [...clients]
    const refusal = this.refusal(doc, writer, fresh)
    if (refusal !== undefined) throw refusal
    const held = this.heldBy(writer)
    const grown = held.size
    for (const client of fresh) held.add(client)
    if (held.size === grown) return
    if (held.size > this.most) this.most = held.size
    this.onWriter?.(writer)
  }

  /**
   * The refusal `admit` would throw for `writer` writing under `clients`,
   * counting nothing: cheap, so that it may come before a signature is
   * checked (an envelope past its writer's budget is refused whoever
   * signed it).
   */
  refusal(doc: Y.Doc, writer: string, clients: Iterable<number>): ForbiddenWriteError | undefined {
    this.follow(doc)
    const held = this.heldBy(writer)
    const fresh = new Set([...clients].filter((client) => !held.has(client))).size
    if (fresh === 0) return undefined
    // Without a stack: made before a signature is checked, for anyone's envelope.
    if (held.size + fresh > limits.writerClientIdsMax)
      return withoutStack(
        () =>
          new ForbiddenWriteError(
            `device ${JSON.stringify(writer)} writes under ${held.size + fresh} Yjs clientIDs; ` +
              `the limit is ${limits.writerClientIdsMax} until the next generation`,
          ),
      )
    const named = doc.store.clients.size + fresh
    // Past the limit, the reserve: only for a device that holds few (see
    // limits.writerClientIdsReserved), so that ids made up to fill the
    // document do not lock every honest device out with them.
    const reserved =
      held.size + fresh <= limits.writerClientIdsReserved &&
      named <= limits.documentClientIdsMax + limits.documentClientIdsReserve
    if (named > limits.documentClientIdsMax && !reserved)
      return new ForbiddenWriteError(
        `the document would name ${named} Yjs clientIDs; new ones wait for the next generation ` +
          `(limit ${limits.documentClientIdsMax}, and ${limits.documentClientIdsReserve} more ` +
          `for devices that hold at most ${limits.writerClientIdsReserved})`,
      )
    return undefined
  }

  /** The most clientIDs one writer holds in the document last seen (a generation is due near the limit). */
  mostHeld(doc: Y.Doc): number {
    this.follow(doc)
    return this.most
  }

  /**
   * Counts the clientIDs `doc` gained by any other way than `admit` (a
   * device's from its server's merged answers): a LAN peer took a writer's
   * 513th clientID when the other 512 had come through the server, and
   * relayed to the server envelopes it refused (a probe).
   */
  private follow(doc: Y.Doc): void {
    if (doc !== this.doc) return this.rebuild(doc)
    if (doc.store.clients.size === this.classified.size) return
    for (const client of doc.store.clients.keys())
      if (!this.classified.has(client)) this.classify(doc, client)
  }

  /** The clientIDs `writer` holds (a new, empty set the first time). */
  private heldBy(writer: string): Set<number> {
    let held = this.byWriter.get(writer)
    if (held === undefined) {
      held = new Set()
      this.byWriter.set(writer, held)
    }
    return held
  }

  private rebuild(doc: Y.Doc): void {
    this.doc = doc
    this.byWriter = new Map()
    this.classified = new Set()
    this.most = 0
    for (const client of doc.store.clients.keys()) this.classify(doc, client)
  }

  /** Counts `client` for the writer whose part its first item lies in (once). */
  private classify(doc: Y.Doc, client: number): void {
    this.classified.add(client)
    const structs = doc.store.clients.get(client) ?? []
    const first = structs.find((s): s is Y.Item => s instanceof Y.Item)
    if (first === undefined) return
    const name = rootNameOf(doc, first.parent)
    const owner = name === undefined ? undefined : rootOwner(name)
    if (owner === undefined) return
    const held = this.heldBy(owner)
    held.add(client)
    if (held.size > this.most) this.most = held.size
  }
}
