/**
 * The replica's fan-out: who hears of durable changes, and when. Plain
 * listeners hear of every batch at once; coalescing ones (the network's
 * fan-out links) at most once per announce interval, what changed
 * meanwhile merged into one update per origin, told `TELL_CHUNK` listeners
 * per turn of the event loop. Timers only through the injected clock.
 *
 * Invariants: `untold` is non-empty only while `announceTimer` is set;
 * `telling` goes out in order (a tell starts once the one before reached
 * every listener), so each link gets its updates in the order they were
 * made; nothing is told after close.
 */
import * as Y from 'yjs'
import type { Clock } from '../../core/clock.js'
import type { PendingOp, ReplicaUpdate } from './types.js'

/** Coalescing listeners told per turn of the event loop (FanOut.tellCoalescing). */
const TELL_CHUNK = 32

/** What the fan-out is built with (see ReplicaOptions). */
export interface FanOutOptions {
  readonly clock: Clock
  readonly announceIntervalMs?: number | undefined
  readonly announceMsPerListener?: number | undefined
  readonly announceFreePerSecond?: number | undefined
}

/** The listeners of one replica's durable changes. */
export class FanOut {
  private readonly listeners = new Set<(u: ReplicaUpdate) => void>()
  /** Listeners told at most once per announce interval (the network's fan-out). */
  private readonly coalescing = new Set<(u: ReplicaUpdate) => void>()
  /** Coalesced tells still going out, a chunk of listeners at a time (see tellCoalescing). */
  private telling: Array<{ told: ReplicaUpdate; listeners: Array<(u: ReplicaUpdate) => void> }> = []
  private tellTimer: unknown = undefined
  /** Durable changes not told yet (see ReplicaOptions.announceIntervalMs). */
  private untold: ReplicaUpdate[] = []
  private lastAnnounceAt = -Infinity
  /** The second (of the clock) the free tells are counted in, and how many went in it. */
  private freeSecond = -Infinity
  private freeTold = 0
  private announceTimer: unknown = undefined
  /** Set when the replica starts closing: nothing more is told later. */
  private closed = false

  constructor(private readonly options: FanOutOptions) {}

  /**
   * Listens to durable changes; returns the unsubscribe function. With
   * `coalesce`, the listener is told at most once per announce interval
   * (ReplicaOptions.announceIntervalMs), what changed meanwhile merged: the
   * links of the network's fan-out listen so. Others hear of every batch
   * at once.
   */
  onUpdate(listener: (u: ReplicaUpdate) => void, options?: { coalesce?: boolean }): () => void {
    const set = options?.coalesce === true ? this.coalescing : this.listeners
    set.add(listener)
    return () => set.delete(listener)
  }

  /**
   * Tells listeners of a durable batch: `captured`, its updates; `batch`,
   * its operations; `heldApplied`, whether it integrated held-back updates
   * (then its remote changes have no one sender).
   */
  announce(captured: ReplicaUpdate[], batch: PendingOp[], heldApplied: boolean): void {
    if (captured.length === 0) return
    if (this.listeners.size === 0 && this.coalescing.size === 0) return
    // A remote update is told to listeners with its sender so that the
    // network layer does not echo it back.
    const senders = new Set(batch.filter((op) => op.kind === 'remote').map((op) => op.from))
    const from = senders.size === 1 && !heldApplied ? [...senders][0] : undefined
    const items = captured.map((item): ReplicaUpdate =>
      item.origin === 'remote' && from !== undefined ? { ...item, from } : item,
    )
    this.tell(items, this.listeners)
    if (this.coalescing.size === 0) return
    const every = Math.max(
      this.options.announceIntervalMs ?? 0,
      (this.options.announceMsPerListener ?? 0) * this.coalescing.size,
    )
    const now = this.options.clock.now()
    if (
      every <= 0 ||
      (this.untold.length === 0 && (now - this.lastAnnounceAt >= every || this.free(now)))
    ) {
      this.lastAnnounceAt = now
      this.tellCoalescing(items)
      return
    }
    // Within the interval: kept, and told merged when it ends. Durable
    // already, so a crash meanwhile loses nothing; the next state exchange
    // brings it to whoever missed it.
    this.untold.push(...items)
    if (this.announceTimer === undefined) {
      this.announceTimer = this.options.clock.setTimeout(
        () => this.tellUntold(),
        Math.max(0, this.lastAnnounceAt + every - now),
      )
    }
  }

  /** Whether a tell at `now` is one of the free ones of its second (ReplicaOptions.announceFreePerSecond). */
  private free(now: number): boolean {
    const max = this.options.announceFreePerSecond
    if (max === undefined) return false
    // A clock set back starts a new second too.
    if (now - this.freeSecond >= 1_000 || now < this.freeSecond) {
      this.freeSecond = now
      this.freeTold = 0
    }
    if (this.freeTold >= max) return false
    this.freeTold++
    return true
  }

  private tellUntold(): void {
    this.announceTimer = undefined
    const items = this.untold
    this.untold = []
    if (items.length === 0 || this.closed) return
    this.lastAnnounceAt = this.options.clock.now()
    this.tellCoalescing(items)
  }

  /**
   * Tells the coalescing listeners, `TELL_CHUNK` of them per turn of the
   * event loop: each is a socket write, and a server with hundreds of
   * devices would otherwise spend several ms in one go on it, during which
   * nothing else (an HTTP read, a device's state exchange) is answered.
   * Tells go out in order: one starts once the one before reached every
   * listener, so each link gets its updates in the order they were made.
   */
  private tellCoalescing(items: readonly ReplicaUpdate[]): void {
    for (const told of this.merged(items))
      this.telling.push({ told, listeners: [...this.coalescing] })
    this.tellChunk()
  }

  private tellChunk(): void {
    this.options.clock.clearTimeout(this.tellTimer)
    this.tellTimer = undefined
    let budget = TELL_CHUNK
    while (budget > 0 && this.telling.length > 0) {
      const head = this.telling[0] as (typeof this.telling)[number]
      const chunk = head.listeners.splice(0, budget)
      for (const listener of chunk) listener(head.told)
      budget -= chunk.length
      if (head.listeners.length === 0) this.telling.shift()
    }
    if (this.telling.length > 0 && this.tellTimer === undefined && !this.closed)
      this.tellTimer = this.options.clock.setTimeout(() => this.tellChunk(), 0)
  }

  /**
   * Tells listeners of durable changes, one merged update per origin: under
   * heavy traffic a batch (or an announce interval) holds many devices'
   * edits, and the server forwards each told update to every connected
   * device, so merging turns N x devices messages into one per device
   * (issue 5, "debounce fan-out"). The sender is kept when all of them came
   * from the same one.
   */
  private tell(
    items: readonly ReplicaUpdate[],
    listeners: ReadonlySet<(u: ReplicaUpdate) => void>,
  ): void {
    if (listeners.size === 0) return
    for (const told of this.merged(items)) for (const listener of listeners) listener(told)
  }

  /** One update per origin ('remote' first), merged; see tell. */
  private merged(items: readonly ReplicaUpdate[]): ReplicaUpdate[] {
    const out: ReplicaUpdate[] = []
    for (const origin of ['remote', 'local'] as const) {
      const mine = items.filter((item) => item.origin === origin)
      const first = mine[0]
      if (first === undefined) continue
      const update = mine.length === 1 ? first.update : Y.mergeUpdates(mine.map((i) => i.update))
      const from = first.from
      const same = from !== undefined && mine.every((item) => item.from === from)
      out.push(same ? { update, origin, from } : { update, origin })
    }
    return out
  }

  /** The replica starts closing: timers still armed tell nothing more. */
  stop(): void {
    this.closed = true
  }

  /** Cancels the announce timer (closing; what it would tell is durable). */
  cancelAnnounce(): void {
    this.options.clock.clearTimeout(this.announceTimer)
    this.announceTimer = undefined
  }

  /** Forgets the changes not told yet, and the tells still going out (a generation switch). */
  dropUntold(): void {
    this.cancelAnnounce()
    this.untold = []
    this.cancelTells()
  }

  /** Cancels the tells still going out (closing). */
  cancelTells(): void {
    this.options.clock.clearTimeout(this.tellTimer)
    this.tellTimer = undefined
    this.telling = []
  }
}
