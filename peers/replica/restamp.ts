/**
 * A device's rewrite of its own stamps that run ahead of its time
 * (PROTOCOL.md, "Clocks"). A device whose clock ran ahead (a clock set
 * days forward by hand or by a test, a wrong RTC) stamps its writes in
 * that future. The server refuses a stamp more than `stampSkewMsMax` ahead
 * of its own clock (`INVALID_RECORD`), so such a write, and every later
 * one of the device (built on it, and stamped after it by the HLC), would
 * wait until real time caught up with it: days.
 *
 * Once the device knows its time again (its clock set right, or the
 * server's time learned at a join: StampTime.setOffset), every stamp of
 * its own past what the server takes is rewritten. The bound is about
 * `now + stampSkewMsMax - restampMarginMs` (`restampBound`), or just past
 * the latest stamp it holds of the server, or of any other writer within
 * the skew of its time (it wrote after seeing those):
 * - its own entries' field stamps (`s`): the entry is written again, so
 *   the old item, never taken by the server, is deleted and its content
 *   dropped (Yjs's garbage collection) before it is sent;
 * - its device-specific values' stamps, which never leave it but are
 *   compared with the stamps of the field's policy (rule 5); a delete
 *   mark (rule 3) holds the server's stamp, never one of the device's;
 * - its HLC is set back to the latest stamp it holds within the bound (or
 *   its time), and so is the time it last stamped at.
 * The rewritten stamps are fresh ones of the rewound clock, one per stamp
 * replaced, given in their order: the device's writes keep their order
 * among themselves, and each counts from now on as written now.
 *
 * Invariant: after a rewrite, no stamp of this device's own (entries,
 * device-specific values, its HLC) is past the bound of the time it was
 * made at; nothing of other writers changes.
 */
import type { Clock } from '../../core/clock.js'
import type * as Y from 'yjs'
import {
  asDeviceEntry,
  forEachStamp,
  rootOwner,
  usersRootName,
  type DeviceEntry,
} from '../../core/entries.js'
import { stampAt, type Hlc, type HlcStamp } from '../../core/hlc.js'
import { asUserId, SERVER_ID, type UserId, type WriterId } from '../../core/ids.js'
import { limits } from '../../core/limits.js'
import type { LocalFields } from '../../core/resolve.js'
import type { ReplicaDocument } from './document.js'
import type { LocalState } from './local-state.js'
import type { WriteContext } from './types.js'
import type { WriteQueue } from './write-queue.js'

/** What a rewrite reads and rewinds. */
export interface RestampParts {
  readonly writerId: WriterId
  readonly hlc: Hlc
  readonly document: ReplicaDocument
  readonly local: LocalState
}

/**
 * The latest stamp of its own a device keeps as it is, at time `nowMs`,
 * holding server stamps up to `serverHighMs`: what its server takes (a
 * stamp within `stampSkewMsMax` of its clock, or of the latest time it
 * stamped at), less the margin. Stamps just past the server's own latest
 * are kept as well (ReplicaDocument.stampHorizon's slack): a device writes
 * after what it saw, and a server whose clock ran ahead took its writes
 * after its own stamps (test/clock-set-back.test.ts).
 */
export function restampBound(nowMs: number, serverHighMs: number): HlcStamp {
  const own = nowMs + limits.stampSkewMsMax - limits.restampMarginMs
  const server = serverHighMs === 0 ? 0 : serverHighMs + limits.stampHorizonSlackMs
  return stampAt(Math.max(own, server))
}

/** Whether a device holds a stamp of its own past the bound (cheap: its HLC; see restampBound). */
export function restampDue(hlc: Hlc, nowMs: number, serverHighMs: number): boolean {
  return hlc.peek() > restampBound(nowMs, serverHighMs)
}

/** A device's own entries in `doc`, by user. */
function ownEntries(doc: Y.Doc, writerId: WriterId): Array<[UserId, DeviceEntry]> {
  const own = usersRootName(writerId)
  if (!doc.share.has(own)) return []
  const out: Array<[UserId, DeviceEntry]> = []
  for (const [key, value] of doc.getMap(own).entries()) {
    const entry = asDeviceEntry(value)
    if (entry !== undefined) out.push([asUserId(key), entry])
  }
  return out
}

/**
 * The latest stamp at or below `bound` of any entry, policy or revocation
 * `doc` holds (`t`, and the stamps of `s` and `x`), but those of root
 * `skip`, or 0.
 */
function highestStampUpTo(doc: Y.Doc, bound: HlcStamp, skip?: string): HlcStamp {
  let high = 0
  for (const name of doc.share.keys()) {
    if (rootOwner(name) === undefined || name === skip) continue
    for (const value of doc.getMap(name).values())
      forEachStamp(value, (stamp) => {
        if (stamp <= bound && stamp > high) high = stamp
      })
  }
  return high
}

/** One stamp to rewrite: where it is, and the stamp it holds. */
interface Ahead {
  readonly stamp: HlcStamp
  readonly kind: 'entry' | 'local'
  readonly id: UserId
  readonly field: string
}

/** Stamps of `stamps` past `bound`, as rewrites of `kind` for `id`. */
function aheadIn(
  stamps: Readonly<Record<string, HlcStamp>>,
  bound: HlcStamp,
  kind: Ahead['kind'],
  id: UserId,
  out: Ahead[],
): void {
  for (const [field, stamp] of Object.entries(stamps))
    if (stamp > bound) out.push({ stamp, kind, id, field })
}

/** What a rewrite changed. */
export interface Restamped {
  /** Stamps rewritten. */
  readonly stamps: number
  /** Users whose entry or device-specific values held them. */
  readonly users: number
  /** Each stamp replaced, and the stamp that replaced it. */
  readonly fresh: ReadonlyMap<HlcStamp, HlcStamp>
}

/**
 * Rewrites, inside a write batch, every stamp of this device's own past
 * the bound at `nowMs` (see the file's comment). Changes nothing when the
 * HLC is within the bound.
 */
export function restampAhead(ctx: WriteContext, parts: RestampParts, nowMs: number): Restamped {
  const { hlc, document, local, writerId } = parts
  const none = { stamps: 0, users: 0, fresh: new Map<HlcStamp, HlcStamp>() }
  if (!restampDue(hlc, nowMs, document.serverStampHighMs)) return none
  // Other writers' stamps that the server takes (within the skew of this
  // device's time) are kept, and stamps just past them: this device wrote
  // after them (a LAN neighbour whose clock runs 50 minutes ahead, say).
  const others = highestStampUpTo(
    document.doc,
    stampAt(nowMs + limits.stampSkewMsMax),
    usersRootName(writerId),
  )
  const bound = Math.max(
    restampBound(nowMs, document.serverStampHighMs),
    others === 0 ? 0 : others + stampAt(limits.stampHorizonSlackMs),
  )
  if (hlc.peek() <= bound) return none
  const entries = new Map(ownEntries(document.doc, writerId))
  const fields = new Map(local.allLocalFields())
  const ahead: Ahead[] = []
  for (const [id, entry] of entries) aheadIn(entry.s, bound, 'entry', id, ahead)
  for (const [id, values] of fields) aheadIn(values.s, bound, 'local', id, ahead)
  // Later stamps of this device follow every stamp it keeps, and start
  // from its time, not from the future it stamped in.
  const keep = Math.max(
    stampAt(nowMs),
    highestStampUpTo(document.doc, bound),
    local.highestStampUpTo(bound),
  )
  hlc.rewind(keep, Math.floor(nowMs))
  // One fresh stamp per stamp replaced, in their order: the fields of one
  // write keep one stamp, and the writes their order.
  const fresh = new Map<HlcStamp, HlcStamp>()
  for (const stamp of [...new Set(ahead.map((item) => item.stamp))].sort((a, b) => a - b))
    fresh.set(stamp, ctx.stamp())
  const newEntries = new Map<UserId, Record<string, HlcStamp>>()
  const newFields = new Map<UserId, Record<string, HlcStamp>>()
  for (const item of ahead) {
    const into = item.kind === 'entry' ? newEntries : newFields
    const stamps = into.get(item.id) ?? {}
    stamps[item.field] = fresh.get(item.stamp) as HlcStamp
    into.set(item.id, stamps)
  }
  for (const [id, stamps] of newEntries) {
    const entry = entries.get(id) as DeviceEntry
    ctx.setOwnEntry(id, { ...entry, s: { ...entry.s, ...stamps } })
  }
  for (const [id, stamps] of newFields) {
    const values = fields.get(id) as LocalFields
    ctx.setLocalFields(id, { ...values, s: { ...values.s, ...stamps } })
  }
  return { stamps: ahead.length, users: new Set(ahead.map((item) => item.id)).size, fresh }
}

/** Where a device keeps its server's time offset (StampTime.setOffset). */
export const TIME_OFFSET_RECORD = ['sync', 'time-offset'] as const

/** What a device's stamp time reads, and how it writes. */
export interface StampTimeParts extends RestampParts {
  readonly clock: Clock
  /** Whether own writes are held (a full sync's fetch, a generation move). */
  readonly queue: Pick<WriteQueue, 'holdingWrites'>
  /** The replica: its writes, and its records (TIME_OFFSET_RECORD). */
  readonly writes: {
    write<T>(run: (ctx: WriteContext) => T): Promise<T>
    setRecord(namespace: string, key: string, value: unknown): Promise<void>
  }
}

/**
 * The time a peer stamps at: its clock, moved by the offset its server's
 * time showed (a device; 0 until then, and on the server), and the rewrite
 * of its own stamps that ran past it.
 */
export class StampTime {
  private offsetMs = 0
  private readonly rewriteListeners = new Set<(fresh: ReadonlyMap<HlcStamp, HlcStamp>) => void>()
  private readonly stepListeners = new Set<(offsetMs: number) => void>()
  /** The clock-step check's timer, while an offset is in force (watchSteps). */
  private stepTimer: unknown
  private stopped = false

  constructor(private readonly parts: StampTimeParts) {}

  /**
   * While the offset is not 0, checks every `clockStepCheckMs` (a timer:
   * it counts elapsed time, not what the clock reads) that the clock did
   * not go back. A clock set back by more than `clockStepBackMsMin` (set
   * right after it ran days ahead, the offset having been learned then)
   * moves the offset forward by the step, so that `now()` goes on in the
   * server's time instead of jumping back with the clock: stamps made until
   * the next join would otherwise be days in the past, and lose to every
   * write made elsewhere meanwhile. A clock set forward is not corrected
   * here: a timer that fires late (a suspended process) looks the same,
   * and stamps that run ahead are refused by the server, whose time the
   * device then takes (PROTOCOL.md, "Clocks").
   */
  private watchSteps(): void {
    const { clock, writerId } = this.parts
    clock.clearTimeout(this.stepTimer)
    this.stepTimer = undefined
    if (this.offsetMs === 0 || this.stopped || writerId === SERVER_ID) return
    const every = limits.clockStepCheckMs
    const due = clock.now() + every
    this.stepTimer = clock.setTimeout(() => {
      this.stepTimer = undefined
      const back = due - clock.now()
      if (back > limits.clockStepBackMsMin) this.steppedBack(back)
      else this.watchSteps()
    }, every)
  }

  /** The clock went back by `backMs`: the offset follows (see watchSteps), and is stored. */
  private steppedBack(backMs: number): void {
    const moved = this.offsetMs + Math.round(backMs)
    this.offsetMs = Math.abs(moved) < limits.clockStepBackMsMin ? 0 : moved
    this.watchSteps()
    for (const listener of [...this.stepListeners]) listener(this.offsetMs)
    this.parts.writes.setRecord(...TIME_OFFSET_RECORD, this.offsetMs).catch(() => {
      // Kept in memory; a failing store fails every write already, and the
      // next join confirms the offset again.
    })
  }

  /**
   * Listens to the offset moved by a clock set back (see watchSteps): the
   * server link's join proofs follow it (serverLinkSigning). Returns the
   * unsubscribe function.
   */
  onStepBack(listener: (offsetMs: number) => void): () => void {
    this.stepListeners.add(listener)
    return () => this.stepListeners.delete(listener)
  }

  /** Stops the clock-step check (the replica closes). */
  stop(): void {
    this.stopped = true
    this.watchSteps()
  }

  /**
   * Listens to rewrites, once each is durable: every stamp replaced and
   * the one that replaced it (the simulator's history follows its writes
   * so). Returns the unsubscribe function.
   */
  onRewrite(listener: (fresh: ReadonlyMap<HlcStamp, HlcStamp>) => void): () => void {
    this.rewriteListeners.add(listener)
    return () => this.rewriteListeners.delete(listener)
  }

  /** The time this peer stamps at, ms. */
  now(): number {
    return this.parts.clock.now() + this.offsetMs
  }

  /**
   * Where other writers' stamps are judged from (ReplicaDocument.stampHorizon),
   * and this peer's own clock (issue 11: a stamp past it by more than
   * `stampSkewMsMax` is refused).
   */
  horizon(): number {
    // Its clock too: an offset kept from before its clock was set right
    // (offline since) must not make it refuse its neighbours' stamps.
    const now = Math.max(this.parts.clock.now(), this.now())
    return this.parts.document.stampHorizon(now, this.parts.hlc.wall())
  }

  /** How far the server's time is from this peer's clock, ms, as last confirmed (0: none). */
  get offset(): number {
    return this.offsetMs
  }

  /** Takes the stored offset (TIME_OFFSET_RECORD) once the records are loaded. */
  load(): void {
    const stored = this.parts.local.record(...TIME_OFFSET_RECORD)
    this.offsetMs = typeof stored === 'number' && Number.isSafeInteger(stored) ? stored : 0
    this.watchSteps()
  }

  /**
   * Takes the server's time, as `offsetMs` from this peer's clock, for its
   * stamps from now on (a device whose join the server refused for its
   * clock, CLOCK_SKEW, and then accepted at the server's time: PROTOCOL.md,
   * "Clocks"). Kept as a peer-local record, so that the device stamps in
   * its server's time offline too, after a restart. Then rewrites its own
   * stamps that ran ahead (restamp), before anything of the link that
   * confirmed it is answered.
   */
  async setOffset(offsetMs: number): Promise<void> {
    if (!Number.isSafeInteger(offsetMs)) return
    if (offsetMs !== this.offsetMs) {
      this.offsetMs = offsetMs
      this.watchSteps()
      await this.parts.writes.setRecord(...TIME_OFFSET_RECORD, offsetMs)
    }
    await this.restamp({ confirmed: true })
  }

  /**
   * Rewrites every stamp of this device's own past what its server takes
   * (restampAhead): its writes made while its clock ran ahead; `confirmed`
   * right after a join confirmed the offset (setOffset). Resolves
   * with how many, once durable; with 0 at once when none is (its HLC is
   * within the bound), and while own writes are held (a full sync's fetch,
   * a generation move): the rewrite would wait for the round that holds
   * them, which may wait for the caller (a hello); the document of that
   * round holds nothing of this device's own yet, and the next round
   * rewrites before it pushes (ServerExchange.push).
   */
  restamp({ confirmed = false }: { confirmed?: boolean } = {}): Promise<number> {
    const { hlc, document, writerId, clock } = this.parts
    // Just confirmed (a hello), the offset is the server's time within the
    // hour whatever the clock says. Later the clock may have been set right
    // while the offset stayed (it is corrected at the next join): then the
    // bound is the clock's, or the rewrite would move this device's good
    // stamps of the time since into the past (simulator, clock steps).
    const time = (): number => (confirmed ? this.now() : Math.max(this.now(), clock.now()))
    if (writerId === SERVER_ID || !restampDue(hlc, time(), document.serverStampHighMs))
      return Promise.resolve(0)
    if (this.parts.queue.holdingWrites) return Promise.resolve(0)
    const done = this.parts.writes.write((ctx) => {
      const result = restampAhead(ctx, this.parts, time())
      if (result.stamps > 0)
        ctx.event({
          type: 'stamps-rewritten',
          deviceId: this.parts.writerId,
          message: `this device's clock ran ahead: ${result.stamps} stamp(s) of its writes for ${result.users} user(s) rewritten to its time`,
        })
      return result
    })
    return done.then(({ stamps, fresh }) => {
      if (fresh.size > 0) for (const listener of [...this.rewriteListeners]) listener(fresh)
      return stamps
    })
  }
}
