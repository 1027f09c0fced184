/**
 * A reference model of the roster rules (SEMANTICS.md), written as a plain
 * sequential statement and independently of `core/`: it shares no code with
 * the implementation and does not know its entry layout. The property tests
 * run the same operations and deliveries against the real peers and against
 * this model and require the same views.
 *
 * Time is the shared fake clock's millisecond count. The harness advances it
 * before every step and only one writer writes in a step, so "latest write"
 * is simply "the write made at the later step".
 *
 * The model, stated plainly:
 * - Every writer keeps per-user records and publishes its state as a sequence
 *   of updates. A peer's knowledge of writer X is X's state as of the longest
 *   contiguous prefix of X's updates it has received (Yjs holds an update back
 *   until all of that writer's earlier updates have arrived). A writer always
 *   knows its own latest state.
 * - The server's record of a user: live or deleted, its fields, how many times
 *   the server deleted the user, per field the time of the server's last
 *   clear of it, and the time of its last change (any put, patch, delete or
 *   adoption).
 * - A device's contribution to a user: per field, the time and value of the
 *   device's latest write to it (a put writes every field, absent ones
 *   vacant; a patch the fields it names), and the server delete count the
 *   device had seen when writing. A write made after seeing a newer delete
 *   starts the contribution afresh.
 * - View of a user at a peer, from that peer's knowledge: a contribution is
 *   valid when it saw at least the server's delete count. The user exists when
 *   the server has it live or some valid contribution exists. A shared field
 *   shows the server's value when that is not vacant; otherwise the latest
 *   valid device write to it, if made after the server's last clear of that
 *   field (a vacant latest write shows nothing).
 * - Local-only state: a device's delete hides the user on that device while
 *   the server's last-change time it knows equals the one it knew when
 *   deleting; a put of that user by the device undoes its delete. The
 *   device-specific field shows the peer's own latest value, provided it was
 *   written after the peer saw the server's latest delete of that user.
 * - When a delivery makes new device writes known to the server, the server
 *   adopts into its record, in the same step, every user its view shows but
 *   its record lacks and every field its view fills where its record is vacant.
 *   An adopted field keeps adoption levels: the write the server holds and
 *   when it took the field. Until the server writes the field itself, a
 *   device write made before a level's time and later than the write it
 *   holds shows instead (it could not have seen the adoption: the latest
 *   write wins, whichever reached the server first), and the server adopts
 *   it in turn; when that write is a clear, the value is void, and a write
 *   later than the clear fills the field as a new level (at most four).
 * - A patch of a user the writer does not show is refused; a delete of one is
 *   a no-op.
 */
import { isDeepStrictEqual } from 'node:util'

/** The server's writer id. */
export const SERVER = 'server'

/** The shared fields the tests write. */
export const SHARED_FIELDS = ['name', 'email', 'groups'] as const
/** The field the server configures as device-specific. */
export const LOCAL_FIELD = 'title'
/** Every field the tests write. */
export const MODEL_FIELDS: readonly string[] = [...SHARED_FIELDS, LOCAL_FIELD]

/** A value as written (null clears in a patch). */
export type Value = string | readonly string[] | null
/** Field name → value as an operation passes it. */
export type FieldInput = Readonly<Record<string, Value>>

/** One write operation on one peer. */
export type ModelOp =
  | { readonly kind: 'put'; readonly user: string; readonly fields: FieldInput }
  | { readonly kind: 'patch'; readonly user: string; readonly fields: FieldInput }
  | { readonly kind: 'delete'; readonly user: string }

/**
 * What an operation did: a put is `done`; a patch is `done` or `not-found`
 * (the writer does not show the user); a delete is `done` (the user was
 * shown) or `not-shown` (no-op).
 */
export type OpOutcome = 'done' | 'not-found' | 'not-shown'

/** A user as a peer shows it: the id plus its non-vacant fields. */
export type ModelView = { readonly id: string } & Readonly<Record<string, Value>>

/**
 * Switches for the canary tests: a deliberately broken rule must make the
 * property fail, which shows the checker can fail.
 */
export interface ModelRules {
  /** Rule 1. False: a device's fill beats the server's own value. */
  readonly serverWins: boolean
  /** Rule 2, second half. False: the server never adopts fills. */
  readonly serverAdopts: boolean
}

/** The rules of SEMANTICS.md. */
export const FAITHFUL_RULES: ModelRules = { serverWins: true, serverAdopts: true }

interface ServerRecord {
  readonly live: boolean
  readonly deletes: number
  /** Non-vacant shared fields only. */
  readonly fields: Readonly<Record<string, Value>>
  readonly clearedAt: Readonly<Record<string, number>>
  readonly changedAt: number
  /** Fields taken from a device and not written by the server since: their adoption levels. */
  readonly adopted?: Readonly<Record<string, readonly Adopted[]>>
}

/**
 * One adoption level: the device write the server holds for the field (a
 * fill, or a clear that voided it) and when the server took the field.
 */
interface Adopted {
  readonly device: string
  readonly at: number
  readonly since: number
}

/** One device write: its device and time. */
interface Write {
  readonly device: string
  readonly at: number
}

/** An adoption level the server is to keep; without `since`, taken at the adoption. */
interface PendingLevel extends Write {
  readonly since: number | undefined
}

/** What the server changes for one field when it adopts: its value (undefined: none) and levels. */
interface Pending {
  readonly value: Value | undefined
  readonly levels: readonly PendingLevel[]
}

/** The most adoption levels a field keeps (the oldest dropped first). */
const ADOPTION_LEVELS_MAX = 4

/** A shared field's value as a peer shows it, and the device write it came from. */
interface Shown {
  readonly value: Value
  readonly from: Write | undefined
}

/** `write` (by `device`) is later than `than`: a later time, or the same and a greater device id. */
const laterThan = (write: { at: number }, device: string, than: Write): boolean =>
  write.at > than.at || (write.at === than.at && device > than.device)

interface FieldWrite {
  readonly at: number
  /** Undefined when the write was vacant. */
  readonly value: Value | undefined
}

interface Contribution {
  readonly seenDeletes: number
  readonly writes: Readonly<Record<string, FieldWrite>>
}

type ServerState = ReadonlyMap<string, ServerRecord>
type DeviceState = ReadonlyMap<string, Contribution>

interface Knowledge {
  readonly server: ServerState
  readonly devices: ReadonlyArray<readonly [string, DeviceState]>
}

interface LocalValue {
  readonly value: Value | undefined
  readonly seenDeletes: number
}

interface LocalState {
  /** User → the server's last-change time the device knew when it deleted the user. */
  readonly hiddenAt: Map<string, number>
  /** User → this peer's own value of the device-specific field. */
  readonly localValues: Map<string, LocalValue>
}

/** Vacant: absent, null, the empty string or an empty list. */
export function isVacantValue(value: Value | undefined): value is null | undefined | '' {
  if (value === undefined || value === null || value === '') return true
  return Array.isArray(value) && value.length === 0
}

const normalise = (value: Value | undefined): Value | undefined =>
  isVacantValue(value) ? undefined : value

const with1 = <K, V>(map: ReadonlyMap<K, V>, key: K, value: V): Map<K, V> =>
  new Map(map).set(key, value)

/** The reference model of one site: a server and some devices. */
export class ReferenceModel {
  /** Server state after each of its updates; index 0 is the state before any. */
  private readonly serverHistory: ServerState[] = [new Map()]
  private readonly deviceHistory = new Map<string, DeviceState[]>()
  /** Peer → writer → indices (1-based) of that writer's updates received. */
  private readonly received = new Map<string, Map<string, Set<number>>>()
  private readonly local = new Map<string, LocalState>()

  constructor(
    readonly devices: readonly string[],
    private readonly rules: ModelRules = FAITHFUL_RULES,
  ) {
    for (const device of devices) this.deviceHistory.set(device, [new Map()])
    for (const peer of this.peers) {
      this.received.set(peer, new Map(this.peers.map((writer) => [writer, new Set<number>()])))
      this.local.set(peer, { hiddenAt: new Map(), localValues: new Map() })
    }
  }

  /** The server, then the devices. */
  get peers(): string[] {
    return [SERVER, ...this.devices]
  }

  /** How many updates `writer` has published. */
  updateCount(writer: string): number {
    return this.historyOf(writer).length - 1
  }

  /** Runs one operation on `peer` at time `now`; `published` tells whether it made an update. */
  perform(peer: string, op: ModelOp, now: number): { outcome: OpOutcome; published: boolean } {
    return peer === SERVER ? this.serverOp(op, now) : this.deviceOp(peer, op, now)
  }

  /**
   * `peer` receives update `index` of `writer` at time `now`. At the server
   * this may cause an adoption, which publishes a server update.
   */
  receive(peer: string, writer: string, index: number, now: number): { adopted: boolean } {
    if (peer === writer || index < 1 || index > this.updateCount(writer)) {
      throw new Error(`model: ${peer} cannot receive update ${index} of ${writer}`)
    }
    const before = this.prefix(peer, writer)
    this.receivedBy(peer, writer).add(index)
    if (peer !== SERVER || this.prefix(peer, writer) === before || !this.rules.serverAdopts) {
      return { adopted: false }
    }
    return { adopted: this.adopt(now) }
  }

  /** True when `peer` has received every update of every other writer. */
  knowsEverything(peer: string): boolean {
    return this.peers.every(
      (writer) => writer === peer || this.prefix(peer, writer) === this.updateCount(writer),
    )
  }

  /** Every user `peer` shows, ordered by id. */
  views(peer: string): ModelView[] {
    return this.viewsFrom(this.knowledgeOf(peer), peer === SERVER ? 'server' : 'device', peer)
  }

  /** What a fresh device that received every update and wrote nothing shows. */
  observerViews(): ModelView[] {
    const knowledge: Knowledge = {
      server: this.latestServer(),
      devices: this.devices.map((d) => [d, this.latestDevice(d)] as const),
    }
    return this.viewsFrom(knowledge, 'device', undefined)
  }

  // --- writes ---------------------------------------------------------------

  private serverOp(op: ModelOp, now: number): { outcome: OpOutcome; published: boolean } {
    const shown = this.viewOf(this.knowledgeOf(SERVER), op.user, 'server', SERVER)
    const prev = this.latestServer().get(op.user)
    const deletes = prev?.deletes ?? 0
    const localValues = this.localOf(SERVER).localValues
    if (op.kind === 'delete') {
      if (shown === undefined) return { outcome: 'not-shown', published: false }
      this.publishServer(op.user, {
        live: false,
        deletes: deletes + 1,
        fields: {},
        clearedAt: {},
        changedAt: now,
      })
      localValues.delete(op.user)
      return { outcome: 'done', published: true }
    }
    if (op.kind === 'patch' && shown === undefined) {
      return { outcome: 'not-found', published: false }
    }
    const fields: Record<string, Value> = op.kind === 'put' ? {} : { ...prev?.fields }
    const clearedAt: Record<string, number> = { ...(prev?.live === true ? prev.clearedAt : {}) }
    const adopted: Record<string, readonly Adopted[]> = {
      ...(prev?.live === true ? prev.adopted : {}),
    }
    for (const field of SHARED_FIELDS) {
      if (op.kind === 'patch' && !Object.hasOwn(op.fields, field)) continue
      delete adopted[field]
      const value = normalise(op.fields[field])
      if (value !== undefined) {
        fields[field] = value
        continue
      }
      delete fields[field]
      // A put clears only what the server showed; a patch clears what it names.
      if (op.kind === 'patch' || shown?.[field] !== undefined) clearedAt[field] = now
    }
    // A write that leaves the record as it was (fields, clears, adoptions)
    // and writes no device-specific value is no change: nothing published,
    // and the record keeps its time (rule 3: no "later change").
    const localWritten =
      Object.hasOwn(op.fields, LOCAL_FIELD) ||
      (op.kind === 'put' && localValues.get(op.user)?.value !== undefined)
    if (
      prev?.live === true &&
      !localWritten &&
      isDeepStrictEqual(
        { fields: prev.fields, clearedAt: prev.clearedAt, adopted: prev.adopted ?? {} },
        { fields, clearedAt, adopted },
      )
    )
      return { outcome: 'done', published: false }
    this.publishServer(op.user, { live: true, deletes, fields, clearedAt, changedAt: now, adopted })
    if (op.kind === 'put' || Object.hasOwn(op.fields, LOCAL_FIELD)) {
      localValues.set(op.user, { value: normalise(op.fields[LOCAL_FIELD]), seenDeletes: deletes })
    }
    return { outcome: 'done', published: true }
  }

  private deviceOp(
    device: string,
    op: ModelOp,
    now: number,
  ): { outcome: OpOutcome; published: boolean } {
    const knowledge = this.knowledgeOf(device)
    const shown = this.viewOf(knowledge, op.user, 'device', device)
    const server = knowledge.server.get(op.user)
    const { hiddenAt, localValues } = this.localOf(device)
    if (op.kind === 'delete') {
      if (shown === undefined) return { outcome: 'not-shown', published: false }
      hiddenAt.set(op.user, server?.changedAt ?? 0)
      return { outcome: 'done', published: false }
    }
    if (op.kind === 'patch' && shown === undefined) {
      return { outcome: 'not-found', published: false }
    }
    const seenDeletes = server?.deletes ?? 0
    const named = SHARED_FIELDS.filter((f) => op.kind === 'put' || Object.hasOwn(op.fields, f))
    if (op.kind === 'put' || Object.hasOwn(op.fields, LOCAL_FIELD)) {
      localValues.set(op.user, { value: normalise(op.fields[LOCAL_FIELD]), seenDeletes })
    }
    if (op.kind === 'put') hiddenAt.delete(op.user)
    if (named.length === 0) return { outcome: 'done', published: false }
    const prev = this.latestDevice(device).get(op.user)
    const writes: Record<string, FieldWrite> =
      prev !== undefined && prev.seenDeletes === seenDeletes ? { ...prev.writes } : {}
    for (const field of named) writes[field] = { at: now, value: normalise(op.fields[field]) }
    this.publishDevice(device, op.user, { seenDeletes, writes })
    return { outcome: 'done', published: true }
  }

  /**
   * The server takes into its record what its view shows from devices: the
   * fields its record lacks, and adopted values a device write made before
   * the adoption replaces, dropping what a clear made before it voids.
   */
  private adopt(now: number): boolean {
    const knowledge = this.knowledgeOf(SERVER)
    let state = knowledge.server
    for (const user of this.usersIn(knowledge)) {
      const shown = this.sharedFields(knowledge, user)
      if (shown === undefined) continue
      const record = state.get(user)
      const live = record?.live === true
      const fields: Record<string, Value> = live ? { ...record.fields } : {}
      const adopted: Record<string, readonly Adopted[]> = live ? { ...record.adopted } : {}
      let changed = !live
      for (const [field, { value, levels }] of Object.entries(shown.pending)) {
        if (value === undefined) delete fields[field]
        else fields[field] = value
        adopted[field] = levels.map((level) => ({ ...level, since: level.since ?? now }))
        changed = true
      }
      if (!changed) continue
      state = with1(state, user, {
        live: true,
        deletes: record?.deletes ?? 0,
        fields,
        clearedAt: record?.clearedAt ?? {},
        changedAt: now,
        adopted,
      })
    }
    if (state === knowledge.server) return false
    this.serverHistory.push(state)
    return true
  }

  private publishServer(user: string, record: ServerRecord): void {
    this.serverHistory.push(with1(this.latestServer(), user, record))
  }

  private publishDevice(device: string, user: string, contribution: Contribution): void {
    const history = this.historyOf(device) as DeviceState[]
    history.push(with1(this.latestDevice(device), user, contribution))
  }

  // --- views ----------------------------------------------------------------

  private viewsFrom(
    knowledge: Knowledge,
    kind: 'server' | 'device',
    peer: string | undefined,
  ): ModelView[] {
    const views: ModelView[] = []
    for (const user of [...this.usersIn(knowledge)].sort()) {
      const view = this.viewOf(knowledge, user, kind, peer)
      if (view !== undefined) views.push(view)
    }
    return views
  }

  /** The view of `user` from `knowledge`, with `peer`'s local-only state layered on. */
  private viewOf(
    knowledge: Knowledge,
    user: string,
    kind: 'server' | 'device',
    peer: string | undefined,
  ): ModelView | undefined {
    const shared = this.sharedView(knowledge, user)
    if (shared === undefined) return undefined
    const server = knowledge.server.get(user)
    const local = peer === undefined ? undefined : this.localOf(peer)
    const hiddenAt = local?.hiddenAt.get(user)
    if (kind === 'device' && hiddenAt !== undefined && hiddenAt === (server?.changedAt ?? 0)) {
      return undefined
    }
    const view: Record<string, Value> = { ...shared }
    const own = local?.localValues.get(user)
    if (own?.value !== undefined && own.seenDeletes >= (server?.deletes ?? 0)) {
      view[LOCAL_FIELD] = own.value
    }
    return { id: user, ...view }
  }

  /** Rules 1, 2 and 4 for the shared fields; undefined when the user does not exist. */
  private sharedView(knowledge: Knowledge, user: string): Record<string, Value> | undefined {
    const shown = this.sharedFields(knowledge, user)
    if (shown === undefined) return undefined
    const fields: Record<string, Value> = {}
    for (const [field, { value }] of Object.entries(shown.fields)) fields[field] = value
    return fields
  }

  /**
   * The shared fields a peer with `knowledge` shows, each with the device
   * write it came from, and what the server would change in its record for
   * each (`pending`: the value, undefined to drop it, and the adoption
   * levels, a level with no `since` being taken now).
   */
  private sharedFields(
    knowledge: Knowledge,
    user: string,
  ): { fields: Record<string, Shown>; pending: Record<string, Pending> } | undefined {
    const record = knowledge.server.get(user)
    const deletes = record?.deletes ?? 0
    const valid: Array<readonly [string, Contribution]> = []
    for (const [device, state] of knowledge.devices) {
      const contribution = state.get(user)
      if (contribution !== undefined && contribution.seenDeletes >= deletes) {
        valid.push([device, contribution])
      }
    }
    const live = record?.live === true
    if (!live && valid.length === 0) return undefined
    const fields: Record<string, Shown> = {}
    const pending: Record<string, Pending> = {}
    for (const field of SHARED_FIELDS) {
      const own = live ? record.fields[field] : undefined
      const clearedAt = record?.clearedAt[field]
      const counts = (write: { at: number }): boolean =>
        clearedAt === undefined || write.at > clearedAt
      const levels: readonly PendingLevel[] = (live ? record.adopted?.[field] : undefined) ?? []
      let server: Shown | undefined
      let after: Write | undefined
      let base = levels
      let voided = false
      for (const [i, level] of levels.entries()) {
        const since = level.since ?? Infinity
        // The latest write made before the server took the field, later than the one it holds.
        const rival = latestWrite(
          valid,
          field,
          (write, device) => counts(write) && write.at < since && laterThan(write, device, level),
        )
        const from = rival && { device: rival.device, at: rival.write.at }
        if (from !== undefined && rival?.write.value !== undefined) {
          server = { value: rival.write.value, from }
          pending[field] = {
            value: rival.write.value,
            levels: [...levels.slice(0, i), { ...from, since: level.since }],
          }
          break
        }
        if (i < levels.length - 1) continue
        if (from === undefined && own !== undefined) {
          server = { value: own, from: undefined }
          break
        }
        // A clear: the field is vacant on the server, and a later write fills it.
        voided = from !== undefined && own !== undefined
        if (voided && from !== undefined)
          base = [...levels.slice(0, i), { ...from, since: level.since }]
        after = from ?? level
      }
      if (levels.length === 0 && own !== undefined) server = { value: own, from: undefined }
      const settled = server !== undefined
      const latest = latestWrite(
        valid,
        field,
        (write, device) =>
          counts(write) && (after === undefined || laterThan(write, device, after)),
      )
      const device =
        latest?.write.value === undefined
          ? undefined
          : { value: latest.write.value, from: { device: latest.device, at: latest.write.at } }
      if (!settled && device !== undefined) {
        pending[field] = {
          value: device.value,
          levels: [...base, { ...device.from, since: undefined }].slice(-ADOPTION_LEVELS_MAX),
        }
      } else if (!settled && voided) {
        pending[field] = { value: undefined, levels: base }
      }
      const result = this.rules.serverWins ? (server ?? device) : (device ?? server)
      if (result !== undefined) fields[field] = result
    }
    return { fields, pending }
  }

  // --- knowledge ------------------------------------------------------------

  private knowledgeOf(peer: string): Knowledge {
    return {
      server: this.knownState(peer, SERVER) as ServerState,
      devices: this.devices.map((d) => [d, this.knownState(peer, d) as DeviceState] as const),
    }
  }

  private knownState(peer: string, writer: string): ServerState | DeviceState {
    const history = this.historyOf(writer)
    const known = peer === writer ? history.length - 1 : this.prefix(peer, writer)
    const state = history[known]
    if (state === undefined) throw new Error(`model: no state ${known} of ${writer}`)
    return state
  }

  /** The longest contiguous prefix of `writer`'s updates that `peer` received. */
  private prefix(peer: string, writer: string): number {
    const got = this.receivedBy(peer, writer)
    let n = 0
    while (got.has(n + 1)) n++
    return n
  }

  private usersIn(knowledge: Knowledge): Set<string> {
    const users = new Set(knowledge.server.keys())
    for (const [, state] of knowledge.devices) for (const user of state.keys()) users.add(user)
    return users
  }

  private historyOf(writer: string): ReadonlyArray<ServerState | DeviceState> {
    const history = writer === SERVER ? this.serverHistory : this.deviceHistory.get(writer)
    if (history === undefined) throw new Error(`model: unknown writer ${writer}`)
    return history
  }

  private latestServer(): ServerState {
    return this.serverHistory[this.serverHistory.length - 1] as ServerState
  }

  private latestDevice(device: string): DeviceState {
    const history = this.historyOf(device)
    return history[history.length - 1] as DeviceState
  }

  private receivedBy(peer: string, writer: string): Set<number> {
    const got = this.received.get(peer)?.get(writer)
    if (got === undefined) throw new Error(`model: unknown link ${writer} -> ${peer}`)
    return got
  }

  private localOf(peer: string): LocalState {
    const state = this.local.get(peer)
    if (state === undefined) throw new Error(`model: unknown peer ${peer}`)
    return state
  }
}

/**
 * The latest valid write to `field` that `counts` (ties: the greater device
 * id), with its device, or undefined.
 */
function latestWrite(
  valid: ReadonlyArray<readonly [string, Contribution]>,
  field: string,
  counts: (write: FieldWrite, device: string) => boolean,
): { device: string; write: FieldWrite } | undefined {
  let best: { device: string; write: FieldWrite } | undefined
  for (const [device, contribution] of valid) {
    const write = contribution.writes[field]
    if (write === undefined || !counts(write, device)) continue
    if (
      best === undefined ||
      write.at > best.write.at ||
      (write.at === best.write.at && device > best.device)
    ) {
      best = { device, write }
    }
  }
  return best
}
