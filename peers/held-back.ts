/**
 * Remote updates a replica holds back until their clients' earlier
 * operations arrive (`Intake.canIntegrate` in peers/replica/intake.ts),
 * with the bounds on them: at most `heldBackUpdatesMax` and
 * `heldBackBytesMax` in all (the oldest go first), none once its link is
 * gone (dropFrom), and per link at most `heldBackUpdatesPerLinkMax`
 * updates and `heldBackBytesPerLinkMax` bytes (past those the update is
 * refused, so one flooding peer cannot fill the replica's share for
 * everyone).
 *
 * An update already held (the same bytes, from any link) is not held twice:
 * LAN peers answer every step 1 with the envelopes the asker lacks, so
 * while the gap lasts each exchange brings the same update again (a swarm
 * seed held 1,000 copies of one relayed update per link and re-merged them
 * after every batch).
 *
 * Invariant: `tally` holds, for every link with an update in `list`, the
 * number and the bytes of its updates there, and nothing else; `digests`
 * holds the digest of every update in `list`, and nothing else; `bytes` is
 * the sum of their sizes.
 */
import { createHash } from 'node:crypto'
import { HeldBackLimitError } from '../core/errors.js'
import { limits } from '../core/limits.js'

/** What is held: the update's bytes and the link it came from. */
export interface Held {
  readonly bytes: Uint8Array
  readonly from: string | undefined
}

/** The held-back updates of one replica, oldest first. */
export class HeldBackUpdates<T extends Held> {
  private list: T[] = []
  private readonly tally = new Map<string, { count: number; bytes: number }>()
  private readonly digests = new Map<T, string>()
  private readonly held = new Set<string>()
  /** The bytes of every update in `list`. */
  private bytes = 0

  /** How many are held. */
  get length(): number {
    return this.list.length
  }

  /** The held updates, oldest first (read only). */
  all(): readonly T[] {
    return this.list
  }

  /** How many updates of link `from` are held. */
  countFrom(from: string): number {
    return this.tally.get(from)?.count ?? 0
  }

  /**
   * Holds `update`, or returns the refusal when its link is at its bound
   * (nothing is held then). Past the global bound the oldest is dropped:
   * losing one is harmless, it is not in the state vector, so the next
   * exchange sends it again.
   */
  add(update: T): HeldBackLimitError | undefined {
    const digest = createHash('sha256').update(update.bytes).digest('base64')
    if (this.held.has(digest)) return undefined
    const from = update.from
    if (from !== undefined) {
      const t = this.tally.get(from) ?? { count: 0, bytes: 0 }
      if (t.count + 1 > limits.heldBackUpdatesPerLinkMax)
        return new HeldBackLimitError('updates', limits.heldBackUpdatesPerLinkMax)
      if (t.bytes + update.bytes.byteLength > limits.heldBackBytesPerLinkMax)
        return new HeldBackLimitError('bytes of updates', limits.heldBackBytesPerLinkMax)
      this.tally.set(from, { count: t.count + 1, bytes: t.bytes + update.bytes.byteLength })
    }
    this.list.push(update)
    this.digests.set(update, digest)
    this.held.add(digest)
    this.bytes += update.bytes.byteLength
    if (this.list.length > limits.heldBackUpdatesMax) this.take(0, 1)
    // And the bytes of all links together, whatever each link's share.
    while (this.bytes > limits.heldBackBytesMax && this.list.length > 1) this.take(0, 1)
    return undefined
  }

  /**
   * Forgets the updates held for link `from`, once it is gone: the next
   * exchange sends again what is still missing, and a peer's gapped
   * updates do not outlive its link (each new link has its own share).
   */
  dropFrom(from: string): void {
    if (!this.tally.has(from)) return
    for (let i = this.list.length - 1; i >= 0; i--) if (this.list[i]?.from === from) this.take(i, 1)
  }

  /** Removes and returns `count` updates from index `start`. */
  take(start: number, count: number): T[] {
    const taken = this.list.splice(start, count)
    for (const held of taken) {
      this.bytes -= held.bytes.byteLength
      const digest = this.digests.get(held)
      this.digests.delete(held)
      if (digest !== undefined) this.held.delete(digest)
      if (held.from === undefined) continue
      const t = this.tally.get(held.from)
      if (t === undefined) continue
      if (t.count <= 1) this.tally.delete(held.from)
      else this.tally.set(held.from, { count: t.count - 1, bytes: t.bytes - held.bytes.byteLength })
    }
    return taken
  }

  /** Removes and returns every held update. */
  takeAll(): T[] {
    const taken = this.list
    this.list = []
    this.bytes = 0
    this.tally.clear()
    this.digests.clear()
    this.held.clear()
    return taken
  }
}
