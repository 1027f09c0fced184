/**
 * The stamps each device rewrote because its clock ran ahead
 * (peers/replica/restamp.ts, `StampTime.onRewrite`), and what replaced
 * each: the ledger and the history recorder read a write's stamps as they
 * stand after every rewrite since (a write rewritten counts as made then).
 *
 * A rewrite replaces only the stamps its device's document still holds. A
 * write whose stamps a later write of the same device had replaced before
 * (the same user written again, offline or before any push) is no longer
 * there to rewrite: its stamps stay in the future the device's clock ran
 * to, above the rewritten stamps of the writes made after it. Such a
 * write, superseded by its own writer, counts with a stand-in stamp: just
 * below the rewritten stamp of the first rewritten write after it (half a
 * count below it; the stand-ins between the same two rewritten writes are
 * equal). A stamp counts so when it was read before the rewrite, lies above
 * the first stamp the rewrite gave (every stamp the device kept lies
 * below), below a stamp it replaced, and is neither one it replaced nor one
 * it gave.
 */
import type { HlcStamp } from '../core/hlc.js'

/** One rewrite of a device: each stamp it replaced and the stamp that replaced it. */
interface Rewrite {
  readonly fresh: ReadonlyMap<HlcStamp, HlcStamp>
  /** The stamps replaced, ascending. */
  readonly replaced: readonly HlcStamp[]
  /** The stamps given. */
  readonly given: ReadonlySet<HlcStamp>
  /** The first stamp given. */
  readonly first: HlcStamp
}

/** A stamp as it stands now. */
export interface StampNow {
  readonly stamp: HlcStamp
  /** A stand-in (see the module comment): the write's own stamps were gone when its device rewrote. */
  readonly standIn: boolean
}

/** Per device, each stamp it rewrote and the stamp that replaced it. */
export class StampRewrites {
  readonly #byPeer = new Map<string, Rewrite[]>()

  /** `peer` rewrote its stamps: `fresh` maps each old one to its new one. */
  note(peer: string, fresh: ReadonlyMap<HlcStamp, HlcStamp>): void {
    if (fresh.size === 0) return
    const given = new Set(fresh.values())
    const rewrite: Rewrite = {
      fresh: new Map(fresh),
      replaced: [...fresh.keys()].sort((a, b) => a - b),
      given,
      first: Math.min(...given),
    }
    const list = this.#byPeer.get(peer) ?? []
    list.push(rewrite)
    this.#byPeer.set(peer, list)
  }

  /** How many rewrites of `peer`'s were noted so far (what a stamp read now was read after). */
  count(peer: string): number {
    return this.#byPeer.get(peer)?.length ?? 0
  }

  /**
   * `stamp` of `peer`'s after every rewrite since; `readAfter`: how many of
   * `peer`'s rewrites had been noted when it was read (see {@link count}).
   * A stand-in counts only for a rewrite it was read before; without
   * `readAfter`, none.
   */
  now(peer: string, stamp: HlcStamp, readAfter = Infinity): StampNow {
    const rewrites = this.#byPeer.get(peer) ?? []
    let now = stamp
    let standIn = false
    rewrites.forEach((rewrite, i) => {
      const replaced = rewrite.fresh.get(now)
      if (replaced !== undefined) {
        now = replaced
        standIn = false
        return
      }
      if (i < readAfter || now <= rewrite.first || rewrite.given.has(now)) return
      const next = rewrite.replaced.find((old) => old > now)
      if (next === undefined) return
      now = (rewrite.fresh.get(next) as HlcStamp) - 0.5
      standIn = true
    })
    return { stamp: now, standIn }
  }
}
