/**
 * The oracle's reference model: SEMANTICS.md's rules 1-5 applied to a
 * {@link History}, giving what every peer's view must be once every
 * surviving write has reached every peer. It shares no code with `core/`
 * and does not know the implementation's entry layout; it knows writes,
 * which writes each writer had seen (state vectors), and the writers'
 * stamps, which it uses only to order writes neither of which saw the other.
 *
 * The rules, as the model states them:
 * - **Which write is later** (`later`): a write made after its writer had
 *   seen another one is the later of the two, whatever their stamps say
 *   (SEMANTICS.md rule 2: "latest", by a hybrid logical clock, whose point is
 *   that a causally later write stamps higher even on a slower clock). Of
 *   two writes one transaction carried (a hold released them together),
 *   the one called later: they ran in their call order. Of other writes
 *   neither of which saw the other, the greater stamp, then the greater
 *   writer id.
 * - **The server's record** is replayed in the server's own order: its
 *   puts, patches, deletes and policy changes as the caller asked for them,
 *   and, after every server transaction that brought others' writes, the
 *   adoption of rule 2 computed from what the server held then: every shared
 *   field its record leaves vacant that a device's valid write fills, and the
 *   user itself when devices enrolled it and the server holds no live
 *   record. A put clears the fields it leaves vacant that the server showed,
 *   a patch the ones it names vacant; a device write older than that clear
 *   does not fill the field again. A delete starts a new epoch (rule 4); a
 *   device write counts only when its writer had seen every server delete of
 *   the user.
 * - **A shared field** shows the server's value when it holds one (rule 1),
 *   otherwise the latest valid device write made after the field's current
 *   policy and after the server's last clear of it (rule 2). A value the
 *   server adopted keeps adoption levels: the write it holds and the
 *   server's stamp when it took the field. A device write stamped before
 *   that, which could not have seen it, and later than the write held
 *   replaces it, and the server adopts it in turn; a clear voids the value,
 *   and a write later than the clear fills the field as a new level. So
 *   the latest write wins whichever reached the server first; writes
 *   stamped after the adoption are later edits, and lose (rule 1). A
 *   device's entry holds its latest write of a field only: an earlier one
 *   it overwrote is no rival. **A
 *   last-writer-wins field** shows the latest write of anyone since its
 *   policy. **A device-specific field** shows only the peer's own latest
 *   value written under that policy in the user's current epoch (rule 5).
 * - **Device deletes** (rule 3) hide the user on that device only, until the
 *   server changes the user after the delete, a full sync, a retention wipe,
 *   or a put of the user by the device. A restore to an older backup undoes
 *   the device's own writes, full syncs and retention wipes made since the
 *   backup was taken: a delete made before it hides the user again.
 * Where the history leaves an outcome open (an operation never acknowledged,
 * a delete whose writer's knowledge moved while it ran, a local write that a
 * restore may have rolled back), the model says `either` and the check
 * accepts both.
 */
import {
  holds,
  type Dot,
  type History,
  type LifecycleEvent,
  type Policy,
  type ServerChange,
  type ServerKnowledge,
  type StateVector,
  type WriteRecord,
} from './history.js'

/** SEMANTICS.md "vacant": absent, null, "" or an empty list. */
export function isVacant(value: unknown): boolean {
  return (
    value === undefined ||
    value === null ||
    value === '' ||
    (Array.isArray(value) && value.length === 0)
  )
}

const norm = (value: unknown): unknown => (isVacant(value) ? undefined : value)

/** A value the model is sure of, or `either` when the history leaves it open. */
export type Maybe<T> = { readonly sure: true; readonly value: T } | { readonly sure: false }
const sure = <T>(value: T): Maybe<T> => ({ sure: true, value })
const EITHER = { sure: false } as const

/** Why a device shows a user it deleted locally (for the rule's name in a report). */
export type Shown = 'never-deleted' | 'server-changed' | 'full-sync' | 'wiped' | 'put-again'

/** What one peer must show for one user. */
export interface ExpectedView {
  /** Undefined: the user does not exist in the replicated state. */
  readonly replicated: ReadonlyMap<string, unknown> | undefined
  /** Device-specific fields the peer must show (vacant: undefined), or `either`. */
  readonly local: ReadonlyMap<string, Maybe<unknown>>
  /** Whether the peer hides the user by its own delete. */
  readonly hidden: Maybe<boolean>
  /** Why it shows again (when `hidden` is sure and false). */
  readonly shownBecause: Shown
}

interface PolicyState {
  readonly policy: Policy
  readonly by: WriteRecord
}

interface ServerRecord {
  readonly live: boolean
  readonly epoch: number
  readonly fields: Map<string, unknown>
  readonly clears: Map<string, WriteRecord>
  readonly lww: Map<string, WriteRecord>
  /** Fields the server took from a device and has not written since: their adoption levels. */
  readonly adopted: Map<string, readonly Adopted[]>
}

/**
 * One adoption level: the device write the server holds for a field (a
 * fill, or a clear that voided it) and the server's stamp when it took the
 * field (undefined in a pending level: taken by the adoption being made).
 */
interface Adopted {
  readonly from: WriteRecord
  readonly at: number | undefined
}

/** The most adoption levels a field keeps (the oldest dropped first). */
const ADOPTION_LEVELS_MAX = 4

/**
 * A shared field's value (undefined: vacant) and the device write it came
 * from (undefined: the server's own); and, when the server is to change
 * what it holds for the field, its new value and adoption levels.
 */
interface SharedValue {
  readonly value: unknown
  readonly from: WriteRecord | undefined
  readonly pending?: { readonly value: unknown; readonly levels: readonly Adopted[] }
}

const emptyRecord = (epoch: number, live: boolean): ServerRecord => ({
  live,
  epoch,
  fields: new Map(),
  clears: new Map(),
  lww: new Map(),
  adopted: new Map(),
})

/**
 * `a` is later than `b`: `a`'s writer had seen `b`; or both ran in one
 * transaction (writes a hold released together) and `a` was called after
 * `b` (they ran in their call order); or neither saw the other and `a` has
 * the greater (stamp, writer id).
 */
export function later(a: WriteRecord, b: WriteRecord): boolean {
  if (b.dot !== undefined && holds(a.knows, b.dot)) return true
  if (a.dot !== undefined && holds(b.knows, a.dot)) return false
  if (sameDot(a.dot, b.dot) && a.calledAt !== b.calledAt) return a.calledAt > b.calledAt
  const sa = a.stamp ?? 0
  const sb = b.stamp ?? 0
  return sa > sb || (sa === sb && a.writer > b.writer)
}

const sameDot = (a: Dot | undefined, b: Dot | undefined): boolean =>
  a !== undefined && b !== undefined && a.client === b.client && a.clock === b.clock

/** The fields a write sets, split by the policies its writer knew. */
interface Split {
  readonly replicated: ReadonlyMap<string, unknown>
  readonly local: ReadonlyMap<string, unknown>
}

/** The reference model of one run; see the module comment. */
export class OracleModel {
  readonly #h: History
  /** Writes whose replicated part survived, or that had none. */
  readonly #writes: WriteRecord[]
  readonly #policyWrites: WriteRecord[]
  readonly #deletes = new Map<string, WriteRecord[]>()
  readonly #deviceWrites = new Map<string, WriteRecord[]>()
  readonly #records = new Map<string, ServerRecord>()
  readonly #serverPolicies = new Map<string, PolicyState>()
  /**
   * Per write (the record itself: writes carried by one transaction share
   * its seq, e.g. several a full sync held and released together).
   */
  readonly #epochs = new Map<WriteRecord, number>()
  readonly #splits = new Map<WriteRecord, Split>()
  readonly #changes = new Map<string, ServerChange[]>()
  #timelines: Map<string, TimelineEvent[]> | undefined

  constructor(history: History) {
    this.#h = history
    this.#writes = history.writes
      .filter((w) => w.dot === undefined || holds(history.final, w.dot))
      .sort((a, b) => a.seq - b.seq)
    const server = this.#writes.filter((w) => w.writer === history.server && w.dot !== undefined)
    this.#policyWrites = server.filter((w) => w.op.kind === 'policy')
    for (const w of server) if (w.op.kind === 'delete') this.#push(this.#deletes, w.op.user, w)
    for (const w of this.#writes)
      if (w.writer !== history.server && w.dot !== undefined && w.op.kind !== 'delete')
        this.#push(this.#deviceWrites, userOf(w), w)
    for (const change of history.serverChanges)
      if (holds(history.final, change.dot)) this.#push(this.#changes, change.user, change)
    this.#replayServer(server)
  }

  /** Every user any write names. */
  users(): string[] {
    const users = new Set<string>()
    for (const w of this.#writes) if (w.op.kind !== 'policy') users.add(w.op.user)
    return [...users].sort()
  }

  /** The policy of `field` in force at the end. */
  policyOf(field: string): Policy {
    return this.#serverPolicies.get(field)?.policy ?? 'shared'
  }

  /** What `peer` must show for `user` once everything surviving reached everyone. */
  expected(peer: string, user: string): ExpectedView {
    const record = this.#record(user)
    const valid = this.#valid(user, record.epoch, undefined)
    const replicated = record.live || valid.length > 0 ? this.#replicatedView(user) : undefined
    const local = new Map<string, Maybe<unknown>>()
    for (const field of this.#h.schemaFields)
      if (this.policyOf(field) === 'device-specific')
        local.set(field, this.#localValue(peer, user, field, record.epoch))
    if (peer === this.#h.server)
      return { replicated, local, hidden: sure(false), shownBecause: 'never-deleted' }
    const { hidden, because } = this.#hidden(peer, user)
    return { replicated, local, hidden, shownBecause: because }
  }

  /**
   * Device-specific values `device` wrote that never left it: field, user
   * and value, for the check that no other peer holds them.
   */
  localOnlyValues(device: string): Array<{ user: string; field: string; value: unknown }> {
    const out: Array<{ user: string; field: string; value: unknown }> = []
    const shared = new Set<string>()
    const key = (user: string, field: string, value: unknown): string =>
      `${user}\u0000${field}\u0000${canonical(value)}`
    for (const w of this.#h.writes) {
      if (w.writer !== device || w.op.kind === 'delete' || w.op.kind === 'policy') continue
      const split = this.#split(w)
      for (const [field, value] of split.replicated) shared.add(key(w.op.user, field, value))
    }
    for (const w of this.#h.writes) {
      if (w.writer !== device || w.op.kind === 'delete' || w.op.kind === 'policy') continue
      for (const [field, value] of this.#split(w).local)
        if (value !== undefined && !shared.has(key(w.op.user, field, value)))
          out.push({ user: w.op.user, field, value })
    }
    return out
  }

  // ------------------------------------------------------------ knowledge

  /** The policies a writer that held `vector` knew. */
  #policiesKnown(vector: StateVector): Map<string, PolicyState> {
    const known = new Map<string, PolicyState>()
    for (const w of this.#policyWrites) {
      if (w.op.kind !== 'policy' || w.dot === undefined || !holds(vector, w.dot)) continue
      known.set(w.op.field, { policy: w.op.policy, by: w })
    }
    return known
  }

  /** The server deletes of `user` a writer that held `vector` had seen. */
  #epochKnown(user: string, vector: StateVector): number {
    return (this.#deletes.get(user) ?? []).filter(
      (d) => d.dot !== undefined && holds(vector, d.dot),
    ).length
  }

  /** The epoch a device write was made in. */
  #epochOf(w: WriteRecord): number {
    let epoch = this.#epochs.get(w)
    if (epoch === undefined) {
      epoch = w.op.kind === 'policy' ? 0 : this.#epochKnown(w.op.user, w.knows)
      this.#epochs.set(w, epoch)
    }
    return epoch
  }

  /** The fields a put or patch sets, replicated and local, by the policies its writer knew. */
  #split(w: WriteRecord): Split {
    const cached = this.#splits.get(w)
    if (cached !== undefined) return cached
    const replicated = new Map<string, unknown>()
    const local = new Map<string, unknown>()
    if (w.op.kind === 'put' || w.op.kind === 'patch') {
      const policies = this.#policiesKnown(w.knows)
      const names = w.op.kind === 'put' ? this.#h.schemaFields : Object.keys(w.op.fields)
      for (const field of names) {
        const value = norm(w.op.fields[field])
        const policy = policies.get(field)?.policy ?? 'shared'
        ;(policy === 'device-specific' ? local : replicated).set(field, value)
      }
    }
    const split = { replicated, local }
    this.#splits.set(w, split)
    return split
  }

  /** A user's device writes made after the device had seen every server delete (rule 4). */
  #valid(user: string, epoch: number, vector: StateVector | undefined): WriteRecord[] {
    return (this.#deviceWrites.get(user) ?? []).filter(
      (w) =>
        w.dot !== undefined &&
        (vector === undefined || holds(vector, w.dot)) &&
        this.#epochOf(w) >= epoch,
    )
  }

  /** The latest of `writes` that sets `field` and is later than every one of `floors`. */
  #latestSetting(
    writes: readonly WriteRecord[],
    field: string,
    floors: ReadonlyArray<WriteRecord | undefined>,
  ): WriteRecord | undefined {
    let best: WriteRecord | undefined
    for (const w of writes) {
      if (!this.#split(w).replicated.has(field)) continue
      if (floors.some((floor) => floor !== undefined && !later(w, floor))) continue
      if (best === undefined || later(w, best)) best = w
    }
    return best
  }

  // ------------------------------------------------------------ the server's record

  #record(user: string): ServerRecord {
    return this.#records.get(user) ?? emptyRecord(0, false)
  }

  /** Replays the server's writes and adoptions in the server's order. */
  #replayServer(serverWrites: readonly WriteRecord[]): void {
    const knowledge = [...this.#h.serverKnowledge].sort((a, b) => a.seq - b.seq)
    // Device writes per Yjs client in clock order, with how many of each the
    // server had seen so far: each knowledge point only looks at the new ones.
    const byClient = new Map<number, WriteRecord[]>()
    for (const writes of this.#deviceWrites.values())
      for (const w of writes) if (w.dot !== undefined) this.#push(byClient, w.dot.client, w)
    for (const list of byClient.values())
      list.sort((a, b) => (a.dot?.clock ?? 0) - (b.dot?.clock ?? 0))
    const seenUpTo = new Map<number, number>()
    let afterSeq = -1
    const adoptNew = (vector: StateVector): void => {
      const users = new Set<string>()
      for (const [client, clock] of vector) {
        const list = byClient.get(client)
        if (list === undefined) continue
        let i = seenUpTo.get(client) ?? 0
        for (; i < list.length && (list[i]?.dot?.clock ?? Infinity) < clock; i++)
          users.add(userOf(list[i] as WriteRecord))
        seenUpTo.set(client, i)
      }
      for (const user of [...users].sort()) this.#adopt(user, vector, afterSeq)
    }
    let k = 0
    const adoptAt = (point: { seq: number; vector: StateVector }): void => {
      afterSeq = point.seq
      adoptNew(point.vector)
    }
    for (const w of serverWrites) {
      for (; k < knowledge.length && (knowledge[k]?.seq ?? Infinity) < w.seq; k++)
        adoptAt(knowledge[k] as ServerKnowledge)
      this.#serverWrite(w)
    }
    for (; k < knowledge.length; k++) adoptAt(knowledge[k] as ServerKnowledge)
    // Everything surviving has reached the server by the end: whatever was
    // left to adopt must have been adopted.
    adoptNew(this.#h.final)
    for (const user of this.#deviceWrites.keys()) this.#adopt(user, this.#h.final, afterSeq)
  }

  /** The shared fields the server's view shows for `user` from what `vector` holds. */
  #sharedView(user: string, vector: StateVector): Map<string, SharedValue> {
    const record = this.#record(user)
    const valid = this.#valid(user, record.epoch, vector)
    const shown = new Map<string, SharedValue>()
    if (!record.live && valid.length === 0) return shown
    for (const field of this.#h.schemaFields) {
      const policy = this.#serverPolicies.get(field)
      if ((policy?.policy ?? 'shared') !== 'shared') continue
      const value = this.#sharedField(record, valid, field, policy?.by)
      if (value !== undefined) shown.set(field, value)
    }
    return shown
  }

  /**
   * Rules 1 and 2 for one shared field: the server's value; unless the
   * server took it from a device (adoption levels) and a device write made
   * before a level's stamp and later than the write that level holds
   * replaces it (the server adopts it, keeping that stamp). When the latest
   * such write before the last level's stamp is a clear (a rival's, which
   * voids the value, or the one the server holds), the field is vacant on
   * the server and a device write later than that clear fills it (a new
   * level). Without levels: the server's value, else the latest valid
   * device write after the policy and the server's last clear. A device's
   * entry holds only its latest write of a field, so only that one can be
   * a rival.
   */
  #sharedField(
    record: ServerRecord,
    valid: readonly WriteRecord[],
    field: string,
    policy: WriteRecord | undefined,
  ): SharedValue | undefined {
    const floors = [policy, record.live ? record.clears.get(field) : undefined]
    const own = record.live ? record.fields.get(field) : undefined
    const levels = (record.live ? record.adopted.get(field) : undefined) ?? []
    if (levels.length === 0 && own !== undefined) return { value: own, from: undefined }
    let base = levels
    let after: WriteRecord | undefined
    let voided = false
    for (const [i, level] of levels.entries()) {
      const at = level.at ?? Infinity
      const rival = this.#latestSetting(
        this.#latestPerDevice(valid, field).filter(
          (w) => (w.stamp ?? 0) < at && later(w, level.from),
        ),
        field,
        floors,
      )
      const value = rival === undefined ? undefined : this.#split(rival).replicated.get(field)
      if (rival !== undefined && value !== undefined) {
        const kept = [...levels.slice(0, i), { from: rival, at: level.at }]
        return { value, from: rival, pending: { value, levels: kept } }
      }
      if (i < levels.length - 1) continue
      if (rival === undefined && own !== undefined) return { value: own, from: undefined }
      voided = rival !== undefined && own !== undefined
      if (voided && rival !== undefined)
        base = [...levels.slice(0, i), { from: rival, at: level.at }]
      after = rival ?? level.from
    }
    const fill = this.#latestSetting(
      after === undefined ? valid : valid.filter((w) => later(w, after)),
      field,
      floors,
    )
    const value = fill === undefined ? undefined : this.#split(fill).replicated.get(field)
    if (fill !== undefined && value !== undefined) {
      const next = [...base, { from: fill, at: undefined }].slice(-ADOPTION_LEVELS_MAX)
      return { value, from: fill, pending: { value, levels: next } }
    }
    return voided
      ? { value: undefined, from: undefined, pending: { value: undefined, levels: base } }
      : undefined
  }

  /** Of `writes`, each device's latest (by stamp) that sets `field`. */
  #latestPerDevice(writes: readonly WriteRecord[], field: string): WriteRecord[] {
    const latest = new Map<string, WriteRecord>()
    for (const w of writes) {
      if (!this.#split(w).replicated.has(field)) continue
      const held = latest.get(w.writer)
      const stamp = w.stamp ?? 0
      const heldStamp = held?.stamp ?? 0
      if (held === undefined || stamp > heldStamp || (stamp === heldStamp && later(w, held)))
        latest.set(w.writer, w)
    }
    return [...latest.values()]
  }

  /**
   * The server's stamp of its first change of `user` after `afterSeq` (the
   * transaction that adopted), or Infinity when the history holds none.
   */
  #adoptionStamp(user: string, afterSeq: number): number {
    const change = (this.#changes.get(user) ?? []).find((c) => c.seq > afterSeq)
    return change?.stamp ?? Infinity
  }

  /**
   * Rule 2: the server takes into its record what devices fill (and users
   * they enrol), what a device write made before it took a field replaces,
   * and drops what a clear made before it voids, with the adoption levels
   * `#sharedField` gives.
   */
  #adopt(user: string, vector: StateVector, afterSeq: number): void {
    const record = this.#record(user)
    if (this.#valid(user, record.epoch, vector).length === 0) return
    const shown = this.#sharedView(user, vector)
    let at: number | undefined
    const stamp = (): number => (at ??= this.#adoptionStamp(user, afterSeq))
    const target = record.live ? record : emptyRecord(record.epoch, true)
    if (!record.live) this.#records.set(user, target)
    for (const [field, { pending }] of shown) {
      if (pending === undefined) continue
      if (pending.value === undefined) target.fields.delete(field)
      else target.fields.set(field, pending.value)
      target.adopted.set(
        field,
        pending.levels.map((level) => ({ from: level.from, at: level.at ?? stamp() })),
      )
    }
  }

  /** One of the server's own writes, as its caller asked. */
  #serverWrite(w: WriteRecord): void {
    const op = w.op
    if (op.kind === 'policy') {
      this.#serverPolicies.set(op.field, { policy: op.policy, by: w })
      if (op.policy !== 'device-specific') return
      for (const record of this.#records.values()) {
        record.fields.delete(op.field)
        record.clears.delete(op.field)
        record.lww.delete(op.field)
        record.adopted.delete(op.field)
      }
      return
    }
    const prev = this.#record(op.user)
    if (op.kind === 'delete') {
      this.#records.set(op.user, emptyRecord(prev.epoch + 1, false))
      return
    }
    const shown = this.#sharedView(op.user, w.knows)
    const record: ServerRecord = prev.live
      ? {
          live: true,
          epoch: prev.epoch,
          fields: new Map(prev.fields),
          clears: new Map(prev.clears),
          lww: new Map(prev.lww),
          adopted: new Map(prev.adopted),
        }
      : emptyRecord(prev.epoch, true)
    for (const [field, value] of this.#split(w).replicated) {
      record.adopted.delete(field)
      const lww = this.#serverPolicies.get(field)?.policy === 'last-writer-wins'
      if (lww) record.lww.set(field, w)
      if (value !== undefined) {
        record.fields.set(field, value)
        record.clears.delete(field)
        continue
      }
      const had = record.fields.has(field) || shown.get(field)?.value !== undefined
      record.fields.delete(field)
      if (!lww && (had || op.kind === 'patch')) record.clears.set(field, w)
    }
    this.#records.set(op.user, record)
  }

  // ------------------------------------------------------------ the views

  /** The replicated fields every peer shows for `user` at the end. */
  #replicatedView(user: string): Map<string, unknown> {
    const record = this.#record(user)
    const valid = this.#valid(user, record.epoch, undefined)
    const view = new Map<string, unknown>()
    for (const field of this.#h.schemaFields) {
      const policy = this.#serverPolicies.get(field)
      const kind = policy?.policy ?? 'shared'
      if (kind === 'device-specific') continue
      if (kind === 'shared') {
        const shown = this.#sharedField(record, valid, field, policy?.by)
        if (shown?.value !== undefined) view.set(field, shown.value)
        continue
      }
      const value = this.#lwwValue(record, valid, field, policy?.by)
      if (value !== undefined) view.set(field, value)
    }
    return view
  }

  /** A last-writer-wins field: the latest write of the server or a device since its policy. */
  #lwwValue(
    record: ServerRecord,
    valid: readonly WriteRecord[],
    field: string,
    since: WriteRecord | undefined,
  ): unknown {
    const device = this.#latestSetting(valid, field, [since])
    const serverHas = record.live && (record.fields.has(field) || record.lww.has(field))
    const serverWrite = record.lww.get(field)
    if (
      serverHas &&
      (device === undefined || (serverWrite !== undefined && later(serverWrite, device)))
    )
      return record.fields.get(field)
    return device === undefined ? undefined : this.#split(device).replicated.get(field)
  }

  /** The device-specific value of `field` that `peer` shows for `user`. */
  #localValue(peer: string, user: string, field: string, epoch: number): Maybe<unknown> {
    const policy = this.#serverPolicies.get(field)?.by
    let state: Maybe<unknown> = sure(undefined)
    for (const event of this.#ownTimeline(peer, user)) {
      if (event.kind === 'retention-wipe') {
        const rolled = this.#eventRolledBack(peer, event)
        if (rolled !== 'yes') state = rolled === 'no' ? sure(undefined) : EITHER
        continue
      }
      if (event.kind !== 'write') continue
      const w = event.write
      if (w.op.kind !== 'put' && w.op.kind !== 'patch') continue
      const split = this.#split(w)
      if (!split.local.has(field)) continue
      if (this.#epochOf(w) < epoch) continue
      const rolled = this.#rolledBack(peer, w)
      if (rolled === 'yes') continue
      const sinceOk =
        policy === undefined || policy.dot === undefined || holds(w.knows, policy.dot)
          ? true
          : w.stamp !== undefined && policy.stamp !== undefined
            ? w.stamp >= policy.stamp
            : undefined
      if (sinceOk === false) continue
      const definite = sinceOk === true && rolled === 'no' && this.#done(w)
      state = definite ? sure(split.local.get(field)) : EITHER
    }
    return state
  }

  /** Rule 3 on `device` for `user`. */
  #hidden(device: string, user: string): { hidden: Maybe<boolean>; because: Shown } {
    let mark: Maybe<ServerChange | undefined> | undefined
    /** When the delete that set `mark` was called. */
    let markedAt = -Infinity
    let because: Shown = 'never-deleted'
    for (const event of this.#ownTimeline(device, user)) {
      if (event.kind === 'full-sync' || event.kind === 'retention-wipe') {
        // A restore to a backup taken before it undid it: the delete marks
        // it cleared are back on the device's disk.
        const rolled = this.#eventRolledBack(device, event)
        if (rolled === 'yes') continue
        if (rolled === 'maybe') {
          if (mark !== undefined) mark = EITHER
          continue
        }
      }
      if (event.kind === 'full-sync') {
        if (mark === undefined) continue
        // A delete made while the full sync ran may come before or after
        // its wipe; one that failed may or may not have wiped.
        if (event.ackedAt === undefined || markedAt >= event.calledAt) mark = EITHER
        else {
          mark = undefined
          because = 'full-sync'
        }
        continue
      }
      if (event.kind === 'retention-wipe') {
        if (mark !== undefined) because = 'wiped'
        mark = undefined
        continue
      }
      if (event.kind !== 'write') continue
      const w = event.write
      const rolled = this.#rolledBack(device, w)
      if (rolled === 'yes') continue
      if (w.op.kind === 'put') {
        if (mark !== undefined) because = 'put-again'
        mark = rolled === 'no' && this.#done(w) ? undefined : EITHER
        continue
      }
      if (w.op.kind !== 'delete') continue
      markedAt = w.calledAt
      const known = this.#latestChange(user, w.knows)
      const atAck = w.knowsAtAck === undefined ? known : this.#latestChange(user, w.knowsAtAck)
      mark = known === atAck && w.ackedAt !== undefined && rolled === 'no' ? sure(known) : EITHER
    }
    if (mark === undefined) return { hidden: sure(false), because }
    if (!mark.sure) return { hidden: EITHER, because }
    const changes = this.#changes.get(user) ?? []
    const after = changes.filter((c) => mark.value === undefined || c.seq > mark.value.seq)
    if (after.length === 0) return { hidden: sure(true), because }
    if (after.every((c) => c.byPolicy)) return { hidden: EITHER, because }
    return { hidden: sure(false), because: 'server-changed' }
  }

  /** The latest server change of `user` a peer holding `vector` had seen. */
  #latestChange(user: string, vector: StateVector): ServerChange | undefined {
    let latest: ServerChange | undefined
    for (const change of this.#changes.get(user) ?? [])
      if (holds(vector, change.dot) && (latest === undefined || change.seq > latest.seq))
        latest = change
    return latest
  }

  /** A peer's own writes of a user and its lifecycle events, in order. */
  #ownTimeline(peer: string, user: string): readonly TimelineEvent[] {
    if (this.#timelines === undefined) {
      const byPeer = new Map<string, TimelineEvent[]>()
      for (const event of this.#h.lifecycle)
        if (event.kind !== 'restore') this.#push(byPeer, event.device, event)
      const timelines = new Map<string, TimelineEvent[]>()
      for (const w of this.#h.writes) {
        if (w.op.kind === 'policy') continue
        this.#push(timelines, `${w.writer}\u0000${w.op.user}`, {
          kind: 'write',
          seq: w.seq,
          write: w,
        })
      }
      for (const [key, events] of timelines) {
        events.push(...(byPeer.get(key.slice(0, key.indexOf('\u0000'))) ?? []))
        events.sort((a, b) => a.seq - b.seq)
      }
      this.#timelines = timelines
    }
    return this.#timelines.get(`${peer}\u0000${user}`) ?? []
  }

  /**
   * Whether `w` surely took effect on its writer: it was acknowledged, or
   * its transaction survived (some peer holds its dot). A write that ran
   * in memory and went down with its peer before it was durable (no
   * acknowledgement, its dot nowhere) may have lost its local part too.
   */
  #done(w: WriteRecord): boolean {
    return w.ackedAt !== undefined || (w.dot !== undefined && holds(this.#h.final, w.dot))
  }

  /**
   * Whether a restore rolled back `w`'s local part: `yes` when it was made
   * after the backup was taken (and before the restore), `maybe` when it
   * was made before and acknowledged after.
   */
  #rolledBack(peer: string, w: WriteRecord): 'yes' | 'no' | 'maybe' {
    let result: 'yes' | 'no' | 'maybe' = 'no'
    for (const event of this.#h.lifecycle) {
      if (event.kind !== 'restore' || event.device !== peer || event.at < w.calledAt) continue
      if (w.calledAt >= event.backupAt) return 'yes'
      if (w.ackedAt === undefined || w.ackedAt >= event.backupAt) result = 'maybe'
    }
    return result
  }

  /**
   * Whether a restore of `device` rolled back a full sync or retention wipe
   * of it (as {@link #rolledBack} for writes): `yes` when it began after
   * the backup was taken (and before the restore), `maybe` when it began
   * before and completed after (or never did: it may have committed just
   * before the backup).
   */
  #eventRolledBack(
    device: string,
    event: Exclude<LifecycleEvent, { kind: 'restore' }>,
  ): 'yes' | 'no' | 'maybe' {
    const began = event.kind === 'full-sync' ? event.calledAt : event.at
    const ended = event.kind === 'full-sync' ? event.ackedAt : event.at
    let result: 'yes' | 'no' | 'maybe' = 'no'
    for (const restore of this.#h.lifecycle) {
      if (restore.kind !== 'restore' || restore.device !== device || restore.at < began) continue
      if (began >= restore.backupAt) return 'yes'
      if (ended === undefined || ended >= restore.backupAt) result = 'maybe'
    }
    return result
  }

  #push<K, T>(map: Map<K, T[]>, key: K, value: T): void {
    const list = map.get(key)
    if (list === undefined) map.set(key, [value])
    else list.push(value)
  }
}

/** One event of a peer's own history of a user. */
type TimelineEvent = { kind: 'write'; seq: number; write: WriteRecord } | LifecycleEvent

const userOf = (w: WriteRecord): string => (w.op.kind === 'policy' ? '' : w.op.user)

/** A value as canonical text (byte arrays as hex), for comparing values. */
export function canonical(value: unknown): string {
  return JSON.stringify(norm(value) ?? null, (_key, v: unknown) =>
    v instanceof Uint8Array ? `bytes:${Buffer.from(v).toString('hex')}` : v,
  )
}

/** Re-exported for the check. */
export type { Dot }
