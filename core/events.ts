/**
 * The event log every peer keeps: typed events, queryable by period, device,
 * user and type, bounded in size (the oldest go first). Pure bookkeeping; the
 * peer persists what `append` returns and feeds `restore` on open.
 */
import { z } from 'zod'
import { InvalidOptionsError } from './errors.js'
import { limits } from './limits.js'
import { EVENT_TYPES, type EventType } from './event-types.js'

export { EVENT_TYPES, type EventType } from './event-types.js'

/** One event as stored and returned by `events.query`. */
export interface RosterEvent {
  /** Position in this peer's log; increases by one per event. */
  readonly seq: number
  /** Wall-clock time of the peer's clock, ms since the epoch. */
  readonly at: number
  readonly type: EventType
  readonly userId?: string
  readonly deviceId?: string
  /** For `user-update-succeeded`: who made the change. */
  readonly origin?: 'server' | 'device'
  readonly fields?: readonly string[]
  /** Error code, for failures and refusals. */
  readonly code?: string
  readonly message?: string
  /** For sync events: a full sync or a delta sync. */
  readonly kind?: 'full' | 'delta'
  /** For sync events: which direction failed, when only one did. */
  readonly direction?: 'serverToDevice' | 'deviceToServer'
}

/** An event before the log numbers it. */
export type NewEvent = Omit<RosterEvent, 'seq' | 'at'>

/** Filters of `events.query`; all optional, combined with AND. */
export interface EventQuery {
  readonly type?: EventType | readonly EventType[]
  readonly deviceId?: string
  readonly userId?: string
  /** Inclusive lower bound on `at`, ms since the epoch. */
  readonly since?: number
  /** Exclusive upper bound on `at`, ms since the epoch. */
  readonly until?: number
  /** At most this many (default and cap: `limits.eventsPerQueryMax`), newest last. */
  readonly limit?: number
  /** Only events with a smaller seq (the pages of the admin page walk back with it). */
  readonly beforeSeq?: number
}

/** A bound of a period: ms since the epoch, or a `Date` (taken as its ms). */
const instant = z.preprocess(
  (value) => (value instanceof Date ? value.getTime() : value),
  z.number({ error: 'must be ms since the epoch (a number) or a Date' }).finite(),
)

/** The zod schema of a query, for API and CLI input. */
export const eventQuerySchema = z.strictObject({
  type: z.union([z.enum(EVENT_TYPES), z.array(z.enum(EVENT_TYPES))]).optional(),
  deviceId: z.string().optional(),
  userId: z.string().optional(),
  since: instant.optional(),
  until: instant.optional(),
  limit: z.number().int().positive().optional(),
  beforeSeq: z.number().int().optional(),
})

/**
 * A query as outside code gives it (`peer.events.query(q)`), checked:
 * throws `INVALID_OPTIONS` naming the first bad filter (an unknown type or
 * key, a bound that is not a time) rather than answering a query that can
 * match nothing with an empty list. `Date` bounds become ms.
 */
export function parseEventQuery(q: unknown): EventQuery {
  if (q === undefined) return {}
  const parsed = eventQuerySchema.safeParse(q)
  if (parsed.success) return parsed.data as EventQuery
  const issue = parsed.error.issues[0]
  const where = issue === undefined || issue.path.length === 0 ? 'query' : issue.path.join('.')
  throw new InvalidOptionsError(`events.query: ${where}: ${issue?.message ?? 'invalid'}`)
}

/**
 * A bounded, queryable, in-memory event log.
 *
 * The events held are `events[head..]`: once the log is full, every append
 * drops the oldest, and removing it from the front of the array would move
 * every other event (with 100,000 events held, bulk enrolment spent half
 * its time there). The dropped ones stay in front of `head` until they are
 * a quarter of the log, then go in one copy: amortised O(1) per event.
 */
export class EventLog {
  private events: RosterEvent[] = []
  /** Index of the oldest event held; those before it were dropped. */
  private head = 0
  private nextSeq = 1

  constructor(private readonly eventsMax: number = limits.eventsMax) {}

  /** Numbers and keeps an event; returns it and the seqs that fell off the end. */
  append(event: NewEvent, at: number): { event: RosterEvent; dropped: number[] } {
    const full: RosterEvent = { seq: this.nextSeq++, at, ...event }
    this.events.push(full)
    const dropped: number[] = []
    while (this.events.length - this.head > this.eventsMax) {
      const old = this.events[this.head++]
      if (old !== undefined) dropped.push(old.seq)
    }
    if (this.head > 0 && this.head * 4 >= this.eventsMax) {
      this.events = this.events.slice(this.head)
      this.head = 0
    }
    return { event: full, dropped }
  }

  /** Loads events read back from storage (in seq order). */
  restore(events: readonly RosterEvent[]): void {
    this.events = events.slice(-this.eventsMax)
    this.head = 0
    this.nextSeq = (this.events.at(-1)?.seq ?? 0) + 1
  }

  /** Events matching every given filter, oldest first. */
  query(q: EventQuery = {}): RosterEvent[] {
    const types =
      q.type === undefined ? undefined : new Set(typeof q.type === 'string' ? [q.type] : q.type)
    const cap = Math.min(q.limit ?? limits.eventsPerQueryMax, limits.eventsPerQueryMax)
    const matches: RosterEvent[] = []
    for (let i = this.head; i < this.events.length; i++) {
      const e = this.events[i]
      if (
        e !== undefined &&
        (types === undefined || types.has(e.type)) &&
        (q.deviceId === undefined || e.deviceId === q.deviceId) &&
        (q.userId === undefined || e.userId === q.userId) &&
        (q.since === undefined || e.at >= q.since) &&
        (q.until === undefined || e.at < q.until) &&
        (q.beforeSeq === undefined || e.seq < q.beforeSeq)
      )
        matches.push(e)
    }
    return matches.slice(-cap)
  }

  /**
   * The events after `seq`, oldest first, at most `max` of them: what a
   * live tail has not seen yet. Seqs increase, so a binary search finds
   * the first one.
   */
  after(seq: number, max: number): RosterEvent[] {
    let lo = this.head
    let hi = this.events.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((this.events[mid]?.seq ?? Infinity) <= seq) lo = mid + 1
      else hi = mid
    }
    return this.events.slice(lo, lo + Math.max(0, max))
  }

  /** Seq of the newest event held (one less than the first seq when empty). */
  get lastSeq(): number {
    return this.nextSeq - 1
  }

  /** Seq of the oldest event held (the next seq when empty). */
  get firstSeq(): number {
    return this.events[this.head]?.seq ?? this.nextSeq
  }

  /** Number of events held. */
  get size(): number {
    return this.events.length - this.head
  }
}
