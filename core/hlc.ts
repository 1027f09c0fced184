/**
 * Hybrid logical clock. A stamp is one number, `physicalMs * 1000 + counter`,
 * so stamps compare with `<` and encode compactly. The clock never runs
 * backwards, and after observing a remote stamp every later local stamp is
 * greater: a write made after seeing another write always wins "latest" even
 * when the writers' wall clocks disagree.
 *
 * Pure: the physical time is passed in by the caller (the peer's clock).
 */
export type HlcStamp = number

/** Counter values per millisecond before the clock borrows from the next one. */
const countsPerMs = 1000

/** The first stamp of millisecond `ms` (its counter 0). */
export const stampAt = (ms: number): HlcStamp => Math.floor(ms) * countsPerMs

/** Converts a stamp to its physical part, in ms since the epoch. */
export const stampMs = (stamp: HlcStamp): number => Math.floor(stamp / countsPerMs)

/** A hybrid logical clock for one writer. */
export class Hlc {
  private last: HlcStamp
  /** The latest physical time this clock issued a stamp at, ms (its own clock's, never observed). */
  private wallHigh = 0

  constructor(last: HlcStamp = 0) {
    this.last = last
  }

  /** A fresh stamp, greater than every stamp issued or observed so far. */
  next(physicalMs: number): HlcStamp {
    const ms = Math.floor(physicalMs)
    if (ms > this.wallHigh) this.wallHigh = ms
    const wall = ms * countsPerMs
    this.last = wall > this.last ? wall : this.last + 1
    return this.last
  }

  /**
   * The latest time of its own clock this peer stamped at, ms: where its
   * clock has been, whatever it says now (set back since) and whatever
   * stamps it observed (other writers' cannot move it).
   */
  wall(): number {
    return this.wallHigh
  }

  /** Takes note of a time this peer stamped at before (persisted across restarts). */
  observeWall(ms: number): void {
    if (Number.isSafeInteger(ms) && ms > this.wallHigh) this.wallHigh = ms
  }

  /** Takes note of a stamp seen in replicated data. */
  observe(stamp: HlcStamp): void {
    if (Number.isSafeInteger(stamp) && stamp > this.last) this.last = stamp
  }

  /**
   * Sets the clock back to `last` when it is past it, and its wall to at
   * most `wallMs`: only for a peer that learned its clock ran ahead and
   * rewrote every stamp of its own past `last` (StampTime.restamp), so
   * that its later stamps are not made from the time it was wrong at.
   */
  rewind(last: HlcStamp, wallMs: number): void {
    if (Number.isSafeInteger(last) && last < this.last) this.last = last
    if (Number.isSafeInteger(wallMs) && wallMs < this.wallHigh) this.wallHigh = wallMs
  }

  /** The greatest stamp issued or observed (for persisting across restarts). */
  peek(): HlcStamp {
    return this.last
  }
}
