/**
 * Server-side search of the roster for the admin page and `GET /api/users`:
 * pages of views ordered by id, filtered by a search text (id, name, email,
 * group, card value), a status and a group. A 100,000-user roster is not
 * resolved again for every keystroke: each user's view and search text are
 * kept once computed, and only the users a transaction touched (or every
 * user, after a policy change or a new document) are computed again.
 */
import * as Y from 'yjs'
import { InvalidOptionsError, TooManyUsersError, excerpt } from '../core/errors.js'
import { REVOCATIONS_ROOT, SERVER_META_ROOT, USERS_ROOT_PREFIX } from '../core/entries.js'
import { foldCase } from '../core/fold-case.js'
import { asUserId } from '../core/ids.js'
import { limits, netLimits } from '../core/limits.js'
import type { UserView } from '../core/resolve.js'
import { rootNameOf } from '../core/root-names.js'
import type { Replica } from '../peers/replica.js'

/** The filters of one page (all optional, combined with AND). */
export interface UserSearch {
  /** Text found, case-insensitive, in the id, name, email, a group or a card value. */
  readonly q?: string
  readonly status?: 'active' | 'disabled'
  /** A group id the user belongs to (exact). */
  readonly group?: string
  /** Users after this id (the previous page's `next`). */
  readonly after?: string
  readonly limit: number
  /** Count every match (`total`): a pass over the whole roster. */
  readonly total?: boolean
  /**
   * Every match in one page (`limit` and `after` unused), at most
   * `netLimits.usersAllMax` of them, else `TOO_MANY_USERS`.
   */
  readonly all?: boolean
}

/** Most entries a page looks at past its end to know whether a match follows (see matchAfter). */
const LOOK_AHEAD_MAX = 20_000

/** One page: `next` is the cursor of the following page, null on the last. */
export interface UserPage {
  readonly users: UserView[]
  readonly next: string | null
  readonly total?: number
}

/**
 * What the index keeps of one user: what the filters read, not the view.
 * Keeping every view doubled the server's heap at 1M users (a view is an
 * object of about 1 KB; the document already holds the same data), and
 * the heap ran into V8's limit; a page's views are resolved again, 50 of
 * them (issue 13).
 */
interface Entry {
  /** Lower-cased id, name, email, groups and card values, one per line. */
  readonly text: string
  readonly status: unknown
  /** The groups, when the view has them (the array the view holds, not a copy). */
  readonly groups: readonly unknown[] | undefined
}

/**
 * Entries computed per turn of the event loop when the index warms up in
 * the background. A view costs tens of µs: 2,000 a turn held a request
 * arriving meanwhile for 50-100 ms, and a 1M-user roster warms up over
 * minutes of such turns (issue 13).
 */
export const WARM_ENTRIES_PER_TURN = 256

/**
 * At most this long per turn of the warm-up, ms, however many entries it
 * computed: a view costs more on a loaded machine and on a large heap, and
 * at 300k users a turn of 256 held the first pages after a cold start for
 * 80 to 270 ms at p99 (issue 13). A page waits at most one turn.
 */
export const WARM_TURN_MS = 4

/**
 * The warm-up gives way to pages: it waits until none was asked for this
 * long, ms (its views are garbage, and a large heap's collections held the
 * pages asked meanwhile: issue 13)...
 */
export const WARM_QUIET_MS = 20

/**
 * ...and to any other work: it waits while the event loop spent more than
 * this many ms on other work since its last look (a state exchange's
 * answer being made, updates coming in). At 1M users the warm-up took 6.7
 * s of the server's thread during a fresh device's full sync, and its
 * garbage five times the scavenges (issue 13)...
 */
export const WARM_BUSY_MS_MAX = 2

/** ...but runs a turn at least this often however busy the API or the loop is, ms. */
export const WARM_TURN_EVERY_MS_MAX = 200

/** What a UserIndex reads the time and the event loop's work with (tests give their own). */
export interface UserIndexOptions {
  /** Monotonic ms (performance.now by default): bounds each warm-up turn. */
  readonly now?: () => number
  /**
   * Ms the event loop was active since the last call (Node's event-loop
   * utilization by default): the warm-up waits while other work keeps it
   * busy (WARM_BUSY_MS_MAX).
   */
  readonly loopActiveMs?: () => number
}

/** The event loop's active ms since the previous call (performance.eventLoopUtilization). */
function loopActiveMsSinceLastCall(): () => number {
  let mark = performance.eventLoopUtilization()
  return () => {
    const now = performance.eventLoopUtilization()
    const active = now.active - mark.active
    mark = now
    return active
  }
}

/** Kept views and search texts of a replica's users (see the module comment). */
export class UserIndex {
  private ids: string[] = []
  /**
   * Computed entries, at the index of their id in `ids`: undefined until
   * computed, null for an id with no view (deleted).
   */
  private entries: Array<Entry | null | undefined> = []
  private readonly dirty = new Set<string>()
  private stale = true
  private unwatchDoc: () => void = () => undefined
  private readonly unwatchReset: () => void
  /** Cancels the warm-up's next turn, while one is scheduled. */
  private warming: (() => void) | undefined
  /** When a page was last asked for, and the warm-up's last turn ran (`now`, ms). */
  private readonly pace = { pageAt: -Infinity, turnAt: 0 }
  /** Grows whenever an entry is dropped or added; `warmed` is the value a warm-up completed at. */
  private generation = 0
  private warmed = -1
  private closed = false
  /** The clock and the event loop's work, as given or Node's. */
  private readonly sense: Required<UserIndexOptions>

  constructor(
    private readonly replica: Replica,
    options: UserIndexOptions = {},
  ) {
    this.sense = {
      now: options.now ?? (() => performance.now()),
      loopActiveMs: options.loopActiveMs ?? loopActiveMsSinceLastCall(),
    }
    this.watch()
    this.unwatchReset = replica.onReset(() => {
      this.unwatchDoc()
      this.watch()
      this.stale = true
    })
  }

  /** Stops following the replica. */
  close(): void {
    this.closed = true
    this.warming?.()
    this.unwatchDoc()
    this.unwatchReset()
  }

  /** One page of users matching `search`, ordered by id. */
  page(search: UserSearch): UserPage {
    if (search.all === true) {
      const max = netLimits.usersAllMax
      const { after: _after, ...filters } = search
      const { users, next } = this.page({ ...filters, all: false, total: false, limit: max + 1 })
      if (users.length > max) throw new TooManyUsersError(max)
      // Cut short by its bytes with more to come: not all of them.
      if (next !== null) throw new TooManyUsersError(netLimits.usersPageBytesMax, true)
      return { users, next: null, total: users.length }
    }
    this.pace.pageAt = this.sense.now()
    this.refresh()
    const matches = matcher(search)
    const ids = this.ids
    const start = search.after === undefined ? 0 : firstAfter(ids, search.after)
    // The views of the page are resolved again (the index keeps no views).
    const users: UserView[] = []
    let total = 0
    let i = search.total === true ? 0 : start
    let end = -1
    // A page ends early past netLimits.usersPageBytesMax (at least one user).
    let bytes = 0
    const full = (): boolean =>
      users.length === search.limit || bytes >= netLimits.usersPageBytesMax
    for (; i < ids.length; i++) {
      if (full() && search.total !== true) break
      const entry = this.entry(i)
      if (entry === null || !matches(entry)) continue
      total++
      if (i >= start && !full()) {
        const view = this.replica.view(asUserId(ids[i] ?? ''))
        if (view === undefined) continue
        users.push(view)
        bytes += wireBytes(view)
        end = i
      }
    }
    // A full page has a next cursor unless no match follows it (a page that
    // ended on the last match led to an empty one); unfiltered too, where
    // the ids after it may all be deleted users the index still holds.
    const next = full() && this.matchAfter(end, matches) ? (users.at(-1)?.id ?? null) : null
    this.warm()
    return search.total === true ? { users, next, total } : { users, next }
  }

  /**
   * Whether an entry after index `end` matches (the index's entries only:
   * no view is resolved). Past LOOK_AHEAD_MAX entries it says yes (a rare
   * filter on a large roster: a last page may then come back empty).
   */
  private matchAfter(end: number, matches: ReturnType<typeof matcher>): boolean {
    const last = Math.min(this.ids.length, end + 1 + LOOK_AHEAD_MAX)
    for (let i = end + 1; i < last; i++) {
      const entry = this.entry(i)
      if (entry !== null && matches(entry)) return true
    }
    // Stopped short of the end: there may be more.
    return last < this.ids.length
  }

  private watch(): void {
    const doc = this.replica.doc
    const onTransaction = (tr: Y.Transaction): void => this.note(tr)
    doc.on('afterTransaction', onTransaction)
    this.unwatchDoc = () => doc.off('afterTransaction', onTransaction)
  }

  /** Marks the users (or, for a policy change, everyone) a transaction touched. */
  private note(tr: Y.Transaction): void {
    // Before the first page (or after a policy change) everything is computed afresh anyway.
    if (this.stale) return
    for (const [type, keys] of tr.changed) {
      if (type._item !== null) continue
      const name = this.rootName(type)
      // A policy change, or a revocation (the revoked device's part leaves
      // every view): everything is computed afresh.
      if (name === SERVER_META_ROOT || name === REVOCATIONS_ROOT) this.stale = true
      else if (name?.startsWith(USERS_ROOT_PREFIX) === true)
        for (const key of keys) if (key !== null) this.dirty.add(key)
    }
  }

  private rootName(type: unknown): string | undefined {
    return rootNameOf(this.replica.doc, type)
  }

  private refresh(): void {
    if (this.stale) {
      this.stale = false
      this.generation++
      this.dirty.clear()
      this.ids = this.replica.allUserIds()
      this.entries = new Array<Entry | null | undefined>(this.ids.length)
      return
    }
    if (this.dirty.size === 0) return
    this.generation++
    const fresh: string[] = []
    for (const id of this.dirty) {
      const at = firstAfter(this.ids, id) - 1
      if (this.ids[at] === id) this.entries[at] = undefined
      else fresh.push(id)
    }
    this.dirty.clear()
    if (fresh.length === 0) return
    // A few new ids go in by binary search; many (an import, a full sync,
    // bulk enrolment) are merged in one pass. Never the whole roster
    // listed and sorted again: at 1M users that is seconds, for every page
    // asked while users are being enrolled (issue 13).
    if (fresh.length > 64) {
      fresh.sort()
      const ids: string[] = []
      const entries: Array<Entry | null | undefined> = []
      let f = 0
      for (let i = 0; i < this.ids.length; i++) {
        const id = this.ids[i] as string
        for (; f < fresh.length && (fresh[f] as string) < id; f++) {
          ids.push(fresh[f] as string)
          entries.push(undefined)
        }
        ids.push(id)
        entries.push(this.entries[i])
      }
      for (; f < fresh.length; f++) {
        ids.push(fresh[f] as string)
        entries.push(undefined)
      }
      this.ids = ids
      this.entries = entries
    } else {
      for (const id of fresh) {
        const at = firstAfter(this.ids, id)
        this.ids.splice(at, 0, id)
        this.entries.splice(at, 0, undefined)
      }
    }
  }

  private entry(i: number): Entry | null {
    let entry = this.entries[i]
    if (entry === undefined) {
      const view = this.replica.view(asUserId(this.ids[i] ?? ''))
      entry =
        view === undefined
          ? null
          : {
              text: searchText(view),
              status: view.status,
              groups: Array.isArray(view.groups) ? (view.groups as unknown[]) : undefined,
            }
      this.entries[i] = entry
    }
    return entry
  }

  /**
   * Computes the entries not computed yet, a chunk per turn of the event
   * loop (at most WARM_ENTRIES_PER_TURN, and WARM_TURN_MS), while no page
   * is being asked for (WARM_QUIET_MS) and no other work keeps the loop
   * busy (WARM_BUSY_MS_MAX), yet at least every WARM_TURN_EVERY_MS_MAX, so that
   * the first search of a large roster need not (the first page is
   * answered before). Stops at the end, or on close.
   */
  private warm(): void {
    if (this.warming !== undefined || this.closed || this.warmed === this.generation) return
    let i = 0
    const later = (ms: number): void => {
      if (ms <= 0) {
        const immediate = setImmediate(step)
        this.warming = () => clearImmediate(immediate)
      } else {
        const timer = setTimeout(step, ms)
        this.warming = () => clearTimeout(timer)
      }
    }
    const step = (): void => {
      this.warming = undefined
      if (this.closed) return
      const now = this.sense.now()
      const quiet = this.pace.pageAt + WARM_QUIET_MS - now
      // Other work since the last look (the last turn's own time is not
      // counted: the mark is taken again when it ends).
      const busy = this.sense.loopActiveMs() > WARM_BUSY_MS_MAX
      if ((quiet > 0 || busy) && now - this.pace.turnAt < WARM_TURN_EVERY_MS_MAX)
        return later(quiet > 0 ? Math.ceil(quiet) : WARM_QUIET_MS)
      this.pace.turnAt = now
      this.refresh()
      const end = Math.min(this.ids.length, i + WARM_ENTRIES_PER_TURN)
      while (i < end) {
        this.entry(i++)
        if ((i & 7) === 0 && this.sense.now() - now >= WARM_TURN_MS) break
      }
      this.sense.loopActiveMs()
      if (i < this.ids.length) later(0)
      else this.warmed = this.generation
    }
    this.pace.turnAt = this.sense.now()
    later(0)
  }
}

/** Index of the first id greater than `after` (ids are sorted). */
function firstAfter(ids: readonly string[], after: string): number {
  let lo = 0
  let hi = ids.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if ((ids[mid] ?? '') <= after) lo = mid + 1
    else hi = mid
  }
  return lo
}

function searchText(view: UserView): string {
  const parts: string[] = [view.id]
  for (const field of ['name', 'email']) {
    const value = view[field]
    if (typeof value === 'string') parts.push(value)
  }
  const groups = view.groups
  if (Array.isArray(groups)) for (const g of groups) if (typeof g === 'string') parts.push(g)
  const cards = view.cards
  if (Array.isArray(cards))
    for (const card of cards as unknown[])
      if (typeof card === 'object' && card !== null && 'value' in card)
        parts.push(String(card.value))
  return foldCase(parts.join('\n'))
}

function matcher(search: UserSearch): (entry: Entry) => boolean {
  const q = search.q === undefined ? undefined : foldCase(search.q.trim())
  const { status, group } = search
  return (entry) =>
    (q === undefined || q === '' || entry.text.includes(q)) &&
    (status === undefined || entry.status === status) &&
    (group === undefined || entry.groups?.includes(group) === true)
}

/** The query parameters of `GET /api/users`. */
const SEARCH_PARAMS = ['q', 'status', 'group', 'after', 'limit', 'total', 'all'] as const

/**
 * `INVALID_OPTIONS` for the first query parameter `endpoint` does not take,
 * or one given more than once that is not `repeatable`: `?user=a&user=b`
 * is refused rather than read as its first value (a filter silently
 * narrower than asked).
 */
export function checkQueryParams(
  params: URLSearchParams,
  known: readonly string[],
  endpoint: string,
  repeatable: readonly string[] = [],
): void {
  for (const name of new Set(params.keys())) {
    if (!known.includes(name))
      throw new InvalidOptionsError(
        `unknown query parameter ${excerpt(name, 32)} (${excerpt(endpoint, 80)} takes ${
          known.length === 0 ? 'none' : known.join(', ')
        })`,
      )
    if (!repeatable.includes(name) && params.getAll(name).length > 1)
      throw new InvalidOptionsError(
        `query parameter ${excerpt(name, 32)} given more than once (${endpoint} takes each at most once)`,
      )
  }
}

/**
 * Reads a page request from query parameters (`q`, `status`, `group`,
 * `after`, `limit`, `total=1`, or `all=1` for every match in one response).
 * A bad one, or one it does not know, is `INVALID_OPTIONS` naming the
 * parameter.
 */
export function searchFromQuery(params: URLSearchParams): UserSearch {
  checkQueryParams(params, SEARCH_PARAMS, 'GET /api/users')
  const all = params.get('all')
  if (all !== null && all !== '0' && all !== '1')
    throw new InvalidOptionsError(`all must be 0 or 1, got ${excerpt(all, 16)}`)
  if (all === '1')
    for (const name of ['limit', 'after'])
      if (params.has(name))
        throw new InvalidOptionsError(
          `${name} cannot go with all=1 (every match in one response): leave ${name} out, or page without all`,
        )
  const limitText = params.get('limit')
  // Decimal digits only: Number() reads '0x10' as 16 and '1e3' as 1000.
  const limit =
    limitText === null
      ? netLimits.usersPerPageDefault
      : /^\d{1,7}$/.test(limitText)
        ? Number(limitText)
        : NaN
  if (!Number.isInteger(limit) || limit < 1 || limit > netLimits.usersPerPageMax) {
    throw new InvalidOptionsError(
      `limit must be an integer from 1 to ${netLimits.usersPerPageMax}, got ${excerpt(limitText ?? '', 16)}`,
    )
  }
  const search: {
    -readonly [K in keyof UserSearch]: UserSearch[K]
  } = { limit }
  if (all === '1') search.all = true
  const q = params.get('q')
  if (q !== null) {
    if (q.length > netLimits.userSearchCharsMax)
      throw new InvalidOptionsError(
        `q must be at most ${netLimits.userSearchCharsMax} characters, got ${q.length}`,
      )
    search.q = q
  }
  const status = params.get('status')
  if (status !== null && status !== '') {
    if (status !== 'active' && status !== 'disabled')
      throw new InvalidOptionsError(`status must be active or disabled, got ${excerpt(status, 32)}`)
    search.status = status
  }
  const group = params.get('group')
  if (group !== null && group !== '') {
    if (group.length > limits.textCharsMax)
      throw new InvalidOptionsError(`group must be at most ${limits.textCharsMax} characters`)
    search.group = group
  }
  const after = params.get('after')
  if (after !== null) {
    if (after.length > limits.textCharsMax)
      throw new InvalidOptionsError(`after must be at most ${limits.textCharsMax} characters`)
    search.after = after
  }
  const total = params.get('total')
  if (total !== null) {
    if (total !== '0' && total !== '1')
      throw new InvalidOptionsError(`total must be 0 or 1, got ${excerpt(total, 16)}`)
    search.total = total === '1'
  }
  return search
}

/** About the bytes `value` takes in a response (JSON, byte arrays as base64; see usersPageBytesMax). */
function wireBytes(value: unknown): number {
  // Its JSON exactly: escapes (a control character is 6 bytes) and UTF-8.
  if (typeof value === 'string') return Buffer.byteLength(JSON.stringify(value))
  if (value instanceof Uint8Array) return Math.ceil(value.byteLength / 3) * 4 + 14
  let n = 2
  if (Array.isArray(value)) for (const v of value) n += wireBytes(v) + 1
  else if (typeof value === 'object' && value !== null)
    for (const [k, v] of Object.entries(value)) n += k.length + 4 + wireBytes(v)
  else n = 8
  return n
}
