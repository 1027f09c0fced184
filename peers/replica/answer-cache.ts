/**
 * The last answers to state exchanges (step 2, in parts: core/answer-chunks.ts),
 * per state vector, until the document changes. After a server restart a
 * thousand fresh devices ask for everything at once, with the same empty
 * state vector: the server encoded the same full roster a thousand times
 * (6.6 of 19.8 s of such a restart). The parts are kept as the same array
 * object, so a signer that remembers what it sealed last (the server's,
 * peers/server-signing.ts) seals them once for every link too.
 *
 * Invariant: every kept answer was encoded from the document as it is now
 * (any transaction that changed it, and a replaced document, empty the cache).
 */
import type * as Y from 'yjs'
import { limits } from '../../core/limits.js'

/** Answers kept per state vector, dropped when the document changes. */
export class AnswerCache {
  private readonly answers = new Map<string, readonly Uint8Array[]>()
  private encoded = 0

  /**
   * How many answers of at least `limits.answerCachedBytesMin` were encoded
   * rather than taken from the cache (for tests and benches).
   */
  get encodes(): number {
    return this.encoded
  }

  /**
   * The answer for `stateVector` with parts of at most `partBytesMax`
   * bytes: the kept one, else `encode()`'s, kept unless `keep` is false (a
   * document in the middle of a transaction).
   */
  get(
    stateVector: Uint8Array,
    partBytesMax: number,
    keep: boolean,
    encode: () => readonly Uint8Array[],
  ): readonly Uint8Array[] {
    const key = `${partBytesMax}:${Buffer.from(stateVector).toString('base64')}`
    const kept = this.answers.get(key)
    if (kept !== undefined) {
      // Most recently used last: the least recently used goes first.
      this.answers.delete(key)
      this.answers.set(key, kept)
      return kept
    }
    const answer = encode()
    // Small answers cost little to encode again: devices catching up, each
    // with a vector of its own, must not push out the full roster that
    // every fresh device asks for.
    let bytes = 0
    for (const part of answer) bytes += part.byteLength
    if (bytes < limits.answerCachedBytesMin) return answer
    this.encoded++
    if (!keep) return answer
    if (this.answers.size >= limits.answersCachedMax) {
      const oldest = this.answers.keys().next()
      if (oldest.done !== true) this.answers.delete(oldest.value)
    }
    this.answers.set(key, answer)
    return answer
  }

  /** Notes a transaction: one that changed the document drops every kept answer. */
  note(tr: Y.Transaction): void {
    if (this.answers.size === 0) return
    if (tr.deleteSet.clients.size > 0) return this.clear()
    for (const [client, clock] of tr.afterState)
      if (tr.beforeState.get(client) !== clock) return this.clear()
  }

  /** Drops every kept answer (the document was replaced). */
  clear(): void {
    this.answers.clear()
  }
}
