/**
 * The stamps each device rewrote because its clock ran ahead
 * (peers/replica/restamp.ts, `StampTime.onRewrite`), and what replaced
 * each: the ledger and the history recorder read a write's stamps as they
 * stand after every rewrite since (a write rewritten counts as made then).
 */
import type { HlcStamp } from '../core/hlc.js'

/** Per device, each stamp it rewrote and the stamp that replaced it. */
export class StampRewrites {
  readonly #byPeer = new Map<string, Map<HlcStamp, HlcStamp>>()

  /** `peer` rewrote its stamps: `fresh` maps each old one to its new one. */
  note(peer: string, fresh: ReadonlyMap<HlcStamp, HlcStamp>): void {
    const map = this.#byPeer.get(peer) ?? new Map<HlcStamp, HlcStamp>()
    for (const [from, to] of fresh) map.set(from, to)
    this.#byPeer.set(peer, map)
  }

  /** `stamp` of `peer`'s after every rewrite since. */
  now(peer: string, stamp: HlcStamp): HlcStamp {
    const map = this.#byPeer.get(peer)
    let now = stamp
    for (let next = map?.get(now); next !== undefined && next !== now; next = map?.get(now))
      now = next
    return now
  }
}
