/**
 * The last answers to state exchanges (step 2, in parts: core/answer-chunks.ts),
 * per state vector, until the document changes. After a server restart a
 * thousand fresh devices ask for everything at once, with the same empty
 * state vector: the server encoded the same full roster a thousand times
 * (6.6 of 19.8 s of such a restart). The parts are kept as the same array
 * object, so a signer that remembers what it sealed (the server's,
 * peers/server-signing.ts) seals them once for every link too.
 *
 * An answer is kept under what it brings, not the vector's bytes: each
 * client whose structs the asker lacks and the clock it lacks them from,
 * in clientID order (hashed when long). Vectors that ask for the same
 * answer share it however they are encoded (in another order, with clients
 * the document never saw, with clocks past the document's, with zeros, with
 * any clocks of the clients they are level with), and a peer cannot push
 * the full roster out with variants of the empty vector. A device that
 * lacks a few clients' latest edits has a short key: no sort nor hash of
 * the whole vector (1,000 clientIDs on a server with 1,000 devices).
 * The cache is bounded in answers and in bytes (`limits.answersCachedMax`,
 * `limits.answersCachedBytesMax`).
 *
 * Invariant: every kept answer is made from the document as it is now
 * (any transaction that changed it, and a replaced document, empty the
 * cache; an answer still being made is cut before a transaction starts,
 * `settle`; when the document is replaced, made whole if not cut, dropped
 * if cut); `bytes` is the
 * sum of the kept answers' parts made so far; `pending` holds the answers
 * not made to the end and not cut, `resuming` those cut and not resumed.
 */
import { createHash } from 'node:crypto'
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import {
  deletesNotSent,
  diffParts,
  type CutSignal,
  type DeletesSent,
} from '../../core/answer-chunks.js'
import { deleteRangesOf, type DeleteSetCache } from '../../core/delete-set.js'
import { grownClients } from '../../core/grown-clients.js'
import { limits } from '../../core/limits.js'
import { AnswerStream } from './answer-stream.js'

interface Kept {
  readonly stream: AnswerStream
  /** Bytes of its parts made so far. */
  bytes: number
}

/** Lacking clients past which a key is hashed rather than kept whole. */
const KEY_CLIENTS_PLAIN_MAX = 64

/**
 * What a peer at `target` lacks of `store`: each client whose structs it
 * lacks and the clock it lacks them from, in clientID order, and how many
 * operations (clock units) that is in all.
 */
function lackingOf(
  store: Y.Doc['store'],
  target: ReadonlyMap<number, number>,
): { readonly lacking: ReadonlyArray<readonly [number, number]>; readonly operations: number } {
  const lacking: Array<[number, number]> = []
  let operations = 0
  for (const client of store.clients.keys()) {
    const from = Math.max(0, target.get(client) ?? 0)
    const state = Y.getState(store, client)
    if (from < state) {
      lacking.push([client, from])
      operations += state - from
    }
  }
  lacking.sort((a, b) => a[0] - b[0])
  return { lacking, operations }
}

/**
 * The canonical key of an answer to `target` from a document with `store`,
 * in parts of at most `partBytesMax` bytes (see the module comment), and
 * the operations (clock units) that answer brings.
 */
export function answerKey(
  store: Y.Doc['store'],
  target: ReadonlyMap<number, number>,
  partBytesMax: number,
): { readonly key: string; readonly operations: number } {
  const { lacking, operations } = lackingOf(store, target)
  return { key: keyOf(lacking, partBytesMax), operations }
}

/** The key of an answer bringing `lacking` (lackingOf) in parts of at most `partBytesMax` bytes. */
function keyOf(lacking: ReadonlyArray<readonly [number, number]>, partBytesMax: number): string {
  if (lacking.length <= KEY_CLIENTS_PLAIN_MAX)
    return `${partBytesMax}|${lacking.map(([client, from]) => `${client}:${from}`).join(',')}`
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, partBytesMax)
  encoding.writeVarUint(e, lacking.length)
  for (const [client, from] of lacking) {
    encoding.writeVarUint(e, client)
    encoding.writeVarUint(e, from)
  }
  return `#${createHash('sha256').update(encoding.toUint8Array(e)).digest('base64')}`
}

/** Parts of an answer as they are made, and what those yielded so far bring (diffParts). */
export interface EncodedParts {
  readonly parts: Iterator<Uint8Array | null>
  readonly covered: ReadonlyMap<number, number>
  /** Ends `parts` at once, its open part yielded (diffParts' `cut`). */
  readonly cut: CutSignal
  /** The delete ranges the parts yielded so far, of this walk and the ones before it (diffParts). */
  readonly deletesSent: DeletesSent
}

/** Whether `doc` is outside a transaction and its cleanup (its followed delete set is current). */
export function isSettled(doc: Y.Doc): boolean {
  return doc._transaction === null && doc._transactionCleanups.length === 0
}

/**
 * The parts a peer at `from` lacks of `doc` (core/answer-chunks.ts), made
 * as they are asked for, with what those yielded so far bring; the delete
 * set from `deletes` (the followed one) when `doc` is settled, else walked.
 */
export function encodeParts(
  doc: Y.Doc,
  deletes: DeleteSetCache | undefined,
  from: ReadonlyMap<number, number>,
  partBytesMax: number,
  deletesSent: DeletesSent = new Map(),
): EncodedParts {
  const all =
    isSettled(doc) && deletes !== undefined ? deletes.current() : deleteRangesOf(doc.store)
  // The rest of a cut answer: the delete ranges its parts did not bring.
  const ranges = deletesNotSent(all, deletesSent)
  const covered = new Map(from)
  const cut: CutSignal = { requested: false }
  const parts = diffParts(doc.store, from, ranges, partBytesMax, covered, cut, deletesSent)
  return { parts, covered, cut, deletesSent }
}

/** What an answer would cost (AnswerCache.cost). */
export interface AnswerCost {
  /** Operations it lacks; 0 when the answer is kept. */
  readonly operations: number
  /** Whether the answer is kept now. */
  readonly kept: () => boolean
}

/** Answers kept per canonical state vector, dropped when the document changes. */
export class AnswerCache {
  private readonly answers = new Map<string, Kept>()
  private bytes = 0
  private encoded = 0
  /** Answers not made to the end yet (kept or not): cut before the document changes. */
  private readonly pending = new Set<AnswerStream>()
  /** Answers cut, waiting for a reader to resume them (dropped when the replica closes). */
  private readonly resuming = new Set<AnswerStream>()

  /**
   * How many answers of at least `limits.answerCachedBytesMin` were encoded
   * rather than taken from the cache (for tests and benches).
   */
  get encodes(): number {
    return this.encoded
  }

  /**
   * What an answer to a peer at `target` from a document with `store`
   * would have to encode: the operations (clock units) it lacks, 0 when
   * that answer is kept here; and whether it is kept by then (`kept()`, a
   * lookup by its key). Peers/replica/answer-turns.ts paces the costly ones.
   */
  cost(
    store: Y.Doc['store'],
    target: ReadonlyMap<number, number>,
    partBytesMax: number,
  ): AnswerCost {
    const { key, operations } = answerKey(store, target, partBytesMax)
    const kept = (): boolean => this.answers.has(key)
    return { operations: kept() ? 0 : operations, kept }
  }

  /** How many answers are kept, and their bytes made so far (for tests). */
  get kept(): { answers: number; bytes: number } {
    return { answers: this.answers.size, bytes: this.bytes }
  }

  /**
   * The answer under `key` (answerKey): the kept one, else one made from
   * `encode()`'s parts as they are asked for (peers/replica/answer-stream.ts),
   * kept unless `keep` is false (a document in the middle of a transaction:
   * then it is made whole at once). `lazy`: a costly answer of an untrusted
   * peer, made in turns (AnswerStream.lazy): kept at once, nothing made yet.
   * `encode(from)` makes the parts a peer at `from` lacks (the asker's
   * vector when undefined), and keeps `covered` at what those yielded
   * bring: the rest of an answer cut by a change is made of it
   * (AnswerStream.cut).
   */
  get(
    key: string,
    keep: boolean,
    encode: (from?: ReadonlyMap<number, number>, deletesSent?: DeletesSent) => EncodedParts,
    lazy = false,
  ): AnswerStream {
    const kept = this.answers.get(key)
    if (kept !== undefined) {
      // Most recently used last: the least recently used goes first.
      this.answers.delete(key)
      this.answers.set(key, kept)
      return kept.stream
    }
    const first = encode()
    const stream = new AnswerStream(
      first.parts,
      (made, bytes) => this.grew(key, made, bytes),
      (done) => {
        this.pending.delete(done)
        // A lazy one was kept before its size was known: let go when small (see below).
        if (done.lazy && done.bytes < limits.answerCachedBytesMin) this.forget(done)
      },
      lazy && keep,
      {
        covered: first.covered,
        cut: first.cut,
        resume: (cut, from) => {
          this.resuming.delete(cut)
          this.pending.add(cut)
          return encode(from, first.deletesSent)
        },
      },
    )
    if (!keep) {
      stream.finish()
      if (stream.bytes >= limits.answerCachedBytesMin) this.encoded++
      return stream
    }
    // Small answers cost little to encode again: devices catching up, each
    // with a vector of its own, must not push out the full roster that
    // every fresh device asks for. Made at once as far as it takes to know
    // (a lazy one is costly: kept, and made in turns).
    if (!lazy) stream.fillBytes(limits.answerCachedBytesMin)
    if (stream.complete && stream.bytes < limits.answerCachedBytesMin) return stream
    this.encoded++
    if (!stream.complete) this.pending.add(stream)
    this.answers.set(key, { stream, bytes: stream.bytes })
    this.bytes += stream.bytes
    this.evict(key)
    return stream
  }

  /** A part of `stream` was made: counted while it is kept under `key`. */
  private grew(key: string, stream: AnswerStream, bytes: number): void {
    const kept = this.answers.get(key)
    if (kept?.stream !== stream) return
    kept.bytes += bytes
    this.bytes += bytes
    this.evict(key)
  }

  /** Drops the least recently used answers but `key`'s until the bounds hold. */
  private evict(key: string): void {
    for (const [oldest, { bytes: size }] of this.answers) {
      if (
        this.answers.size <= limits.answersCachedMax &&
        this.bytes <= limits.answersCachedBytesMax
      )
        break
      if (oldest === key) continue
      this.answers.delete(oldest)
      this.bytes -= size
    }
  }

  /**
   * Cuts every answer not made to the end yet (the document is about to
   * change: Yjs's 'beforeTransaction'; AnswerStream.cut), or makes it whole
   * when not `cutting` (the document is replaced).
   */
  settle(cutting = true): void {
    // Cut ones whose links closed before resuming them: nobody ever will.
    for (const stream of [...this.resuming])
      if (stream.readers === 0) {
        stream.drop('no link reads it')
        this.resuming.delete(stream)
        this.forget(stream)
      }
    for (const stream of [...this.pending]) {
      if (stream.readers > 0) {
        if (cutting && stream.cut()) this.resuming.add(stream)
        else stream.finish()
        continue
      }
      // Nothing reads it (its links closed before the last part went): not
      // made for no one, nor kept to be made of a document that changed.
      stream.drop('no link reads it')
      this.forget(stream)
    }
    this.pending.clear()
  }

  /** Drops `stream` from the kept answers, if kept. */
  private forget(stream: AnswerStream): void {
    for (const [key, kept] of this.answers)
      if (kept.stream === stream) {
        this.answers.delete(key)
        this.bytes -= kept.bytes
        return
      }
  }

  /** Notes a transaction: one that changed the document drops every kept answer. */
  note(tr: Y.Transaction): void {
    if (this.answers.size === 0) return
    if (tr.deleteSet.clients.size > 0 || grownClients(tr).length > 0) this.clear()
  }

  /**
   * Drops every kept answer (a transaction changed the document, or it was
   * replaced: `replaced`); with `reason`, answers not made to the end are
   * dropped too (the document is going away: closing), else they are made
   * now.
   */
  clear(reason?: string): void {
    if (reason === undefined) this.settle(false)
    else {
      for (const stream of this.pending) stream.drop(reason)
      this.dropCut(reason)
    }
    this.pending.clear()
    this.answers.clear()
    this.bytes = 0
  }

  /**
   * The document was replaced (load, rollback, wipe): as `clear()`, and a
   * cut answer cannot go on from another document: dropped, so its links
   * close (the peer asks again) rather than count themselves synced with a
   * rest made of the new document.
   */
  replaced(): void {
    this.dropCut('the document was replaced')
    this.clear()
  }

  private dropCut(reason: string): void {
    for (const stream of this.resuming) stream.drop(reason)
    this.resuming.clear()
  }
}
