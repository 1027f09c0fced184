/**
 * Checks a decoded Yjs update against "a peer writes only its own part, and
 * says only what an entry may say" before any of it is applied (a Yjs update
 * that throws part-way can leave some of it applied, so the check comes
 * first).
 *
 * Every item's place (root and map key) is found: directly when the item
 * names its parent, else through its origin (an item with a left or right
 * origin is encoded without its parent), looked up in the same update or in
 * the document. `mayWrite(owner)` decides per root owner. Each Yjs client
 * writes for exactly one writer: the owner of the root of the first item of
 * it the receiver learns. The delete set names (client, clock) ranges; each
 * live item a range names must lie in a root the sender may write, and a
 * range may name only ids the receiver holds or the update brings.
 *
 * Each entry is bounded: exactly its keys, fields of the site's schema,
 * stamps no later than the receiver's clock plus `stampSkewMsMax`, a device's
 * epoch no greater than the server's for that user.
 *
 * GC structs: a rostersync document holds flat maps of plain values, and Yjs
 * keeps a deleted map entry as an item (`ContentDeleted`) with its parent and
 * key; it writes GC structs only for the content of a deleted nested type,
 * which no path accepts. So a GC range the receiver does not hold is never
 * legitimate, and it is refused: it would claim a client's ids (squatting
 * the clocks its writer uses next) without naming a root to judge. A skip
 * struct (a gap in a merged update) is accepted only over ids the receiver
 * holds: past them it would leave the update's later structs pending in Yjs.
 *
 * What the document already holds is a no-op for Yjs and is not judged: a
 * state exchange carries the sender's whole delete set, and relays carry
 * items the receiver may already have (the server's own, back to it).
 */
import * as Y from 'yjs'
import {
  DEVICE_ENTRY_KEYS,
  FIELD_POLICIES,
  POLICY_ENTRY_KEYS,
  REVOCATION_ENTRY_KEYS,
  REVOCATIONS_ROOT,
  rootOwner,
  SERVER_ENTRY_KEYS,
  isAdoption,
  isAdoptionMap,
  isPlainObject,
  plainThroughout,
  SERVER_META_ROOT,
  usersRootName,
  WRITER_ID_PATTERN,
  type FieldPolicy,
} from './entries.js'
import {
  clip,
  ForbiddenWriteError,
  InvalidRecordError,
  MalformedMessageError,
  RostersyncError,
} from './errors.js'
import { stampMs } from './hlc.js'
import { SERVER_ID, type WriterId } from './ids.js'
import { limits } from './limits.js'
import { rootNameOf } from './root-names.js'
import { unreachableUserId, type RecordSchema } from './schema.js'

/**
 * The checks of {@link checkUpdate}, by name. Each can be switched off (in
 * tests only, through `CheckOptions.disabledChecks`) to show that a test
 * fails without it.
 */
export const CHECK_NAMES = [
  /** Structs, delete ranges and new Yjs clients per update within their limits. */
  'size',
  /** Every new item lies in a root that is found, named after a writer, and writable by the sender. */
  'root',
  /** No item is nested under another item: the roots are flat maps. */
  'flat',
  /** Items hold plain values (entries) only. */
  'content',
  /** Every item has a map key (a user id, or a field name in the meta root) within its bound. */
  'key',
  /** Entries hold exactly their keys, of the right types. */
  'entryShape',
  /** Device entries' fields parse against the site's schema; their stamps name fields of it. */
  'schema',
  /** Stamps are non-negative safe integers no later than the receiver's clock plus the skew bound. */
  'stamp',
  /** Epochs are non-negative safe integers; a device's no greater than the server's for that user. */
  'epoch',
  /** Every new item of a Yjs client lies in the part of the one writer that client is bound to. */
  'clientBinding',
  /** No GC range the receiver does not hold. */
  'gc',
  /** No skip struct past the ids the receiver holds. */
  'skip',
  /** Deletes name only live items the sender may write, and only ids the receiver holds or the update brings. */
  'delete',
  /** LAN: new items in the server's part come from Yjs clients known as the server's. */
  'serverWriter',
  /** LAN: a live server entry is deleted only together with the server entry that replaces it. */
  'serverReplacement',
] as const

/** The name of one check of {@link checkUpdate}. */
export type CheckName = (typeof CHECK_NAMES)[number]

/** What an update would write, by root, once checked. */
export interface UpdateSummary {
  readonly roots: ReadonlySet<string>
  readonly items: number
  readonly deletes: number
}

/** Options of {@link checkUpdate}. */
export interface CheckOptions {
  /** May the sender write into roots owned by this writer? */
  readonly mayWrite: (owner: WriterId) => boolean
  /**
   * The receiver's time, ms since the epoch: stamps more than
   * `stampSkewMsMax` past it are refused (StampTime.horizon: its clock,
   * or later where its own or its server's stamps went).
   */
  readonly now: number
  /**
   * The receiver's clock, ms, named in a refusal of a stamp as ahead
   * (`peer time`: a device whose clock moved ahead takes it; PROTOCOL.md,
   * "Clocks"); `now` when not given.
   */
  readonly time?: number
  /** Validates device entries' fields when given. */
  readonly schema?: RecordSchema
  /**
   * How far past `now` a device entry's stamp may be, when less than
   * `stampSkewMsMax` (what a device takes from a LAN peer:
   * `limits.lanStampSkewMsMax`).
   */
  readonly deviceStampSkewMs?: number
  /**
   * For links that relay the server's part (LAN): when given, a new item in
   * the server's part must come from one of these Yjs clients (see
   * {@link serverClientsOf}), and a delete of a server item this peer still
   * shows must come with the server item that replaces it (the server only
   * ever replaces its entries, never deletes them outright).
   */
  readonly serverClients?: ReadonlySet<number>
  /**
   * Tests only: checks to skip, to show that each one matters (a property
   * test finds an update that gets through without it). Never set it in
   * production code.
   */
  readonly disabledChecks?: ReadonlySet<CheckName>
}

type DeleteSet = ReturnType<typeof Y.decodeUpdate>['ds']

/** Where an item lives: its root map and its key in it (null: none). */
interface Place {
  readonly root: string
  readonly key: string | null
}

/** A struct of the update (item or GC range): its ids and its index in the update. */
interface Span {
  readonly clock: number
  readonly length: number
  readonly index: number
}

/**
 * Throws `MALFORMED_MESSAGE`, `MESSAGE_TOO_LARGE`, `FORBIDDEN_WRITE` or
 * `INVALID_RECORD` when the update must be refused; returns a summary
 * otherwise. Pure: reads `doc` without changing it.
 */
export function checkUpdate(doc: Y.Doc, update: Uint8Array, options: CheckOptions): UpdateSummary {
  let decoded: ReturnType<typeof Y.decodeUpdate>
  try {
    decoded = Y.decodeUpdate(update)
  } catch (cause) {
    throw new MalformedMessageError('update does not decode', cause)
  }
  return new UpdateCheck(doc, options).run(decoded.structs, decoded.ds)
}

/**
 * The Yjs clients that write the server's part in `doc`: those whose first
 * item lies in a root the server owns. On a device these came from the
 * server link, or over a relaying link that checked them against this same
 * set, so the set only ever holds clients the server itself used.
 */
export function serverClientsOf(doc: Y.Doc): Set<number> {
  const clients = new Set<number>()
  const names = new RootNames(doc)
  for (const client of doc.store.clients.keys()) {
    if (names.writerOfClient(client) === SERVER_ID) clients.add(client)
  }
  return clients
}

/**
 * The writer each of `clients` writes for in `doc` (the owner of its first
 * item's root), undefined for a client with no item left there.
 */
export function writersOfClients(
  doc: Y.Doc,
  clients: Iterable<number>,
): Map<number, WriterId | undefined> {
  const names = new RootNames(doc)
  const writers = new Map<number, WriterId | undefined>()
  for (const client of clients) writers.set(client, names.writerOfClient(client))
  return writers
}

/** Names of a document's root types, and the writer of each client, looked up once per check. */
class RootNames {
  private readonly writers = new Map<number, WriterId | undefined>()

  constructor(private readonly doc: Y.Doc) {}

  /** The root an item of the document lies in. */
  rootOf(item: Y.Item): string | undefined {
    let type = item.parent as Y.AbstractType<unknown> | null
    while (type?._item != null) type = type._item.parent as Y.AbstractType<unknown> | null
    if (type === null) return undefined
    return rootNameOf(this.doc, type)
  }

  /** The writer a client of the document writes for: the owner of its first item's root. */
  writerOfClient(client: number): WriterId | undefined {
    if (this.writers.has(client)) return this.writers.get(client)
    let writer: WriterId | undefined
    for (const struct of this.doc.store.clients.get(client) ?? []) {
      if (struct instanceof Y.Item) {
        const root = this.rootOf(struct)
        writer = root === undefined ? undefined : rootOwner(root)
        break
      }
    }
    this.writers.set(client, writer)
    return writer
  }
}

/** One run of the checks over one decoded update. */
class UpdateCheck {
  /** Per client: the update's items and GC ranges, sorted by clock. */
  private readonly spans = new Map<number, Span[]>()
  /** Per struct of the update: the place of each item, once found. */
  private places: Array<Place | undefined> = []
  private readonly names: RootNames
  /** Per user id: the greatest epoch of the server entries the update brings. */
  private readonly serverEpochs = new Map<string, number>()
  /** Origins of the update's new server items: what they replace. */
  private readonly serverOrigins: Y.ID[] = []
  private readonly roots = new Set<string>()
  private items = 0

  constructor(
    private readonly doc: Y.Doc,
    private readonly options: CheckOptions,
  ) {
    this.names = new RootNames(doc)
  }

  private on(check: CheckName): boolean {
    return this.options.disabledChecks?.has(check) !== true
  }

  run(structs: ReadonlyArray<Y.Item | Y.GC | Y.Skip>, ds: DeleteSet): UpdateSummary {
    if (this.on('size')) this.checkSize(structs, ds)
    this.locate(structs)
    for (const [i, struct] of structs.entries()) {
      const state = Y.getState(this.doc.store, struct.id.client)
      if (struct.id.clock + struct.length <= state) continue // held already: a no-op for Yjs
      if (struct instanceof Y.Skip) {
        if (this.on('skip'))
          throw forbidden(
            `update skips ids of Yjs client ${struct.id.client} this peer does not hold`,
          )
      } else if (struct instanceof Y.GC) {
        if (this.on('gc'))
          throw forbidden(
            `update holds a GC range of Yjs client ${struct.id.client}; rostersync content never produces one`,
          )
      } else {
        this.checkItem(struct, this.places[i])
      }
    }
    const deletes = this.checkDeletes(ds)
    return { roots: this.roots, items: this.items, deletes }
  }

  private checkSize(structs: ReadonlyArray<Y.Item | Y.GC | Y.Skip>, ds: DeleteSet): void {
    if (structs.length > limits.updateStructsMax) {
      throw tooLarge(
        `update holds ${structs.length} structs; the limit is ${limits.updateStructsMax}`,
      )
    }
    // A struct's length is clock units, counted as history toward a new
    // generation: 2^40 of them in a 40-byte deleted item (the spacing of
    // automatic generations bounds what many such items can do).
    for (const struct of structs)
      if (struct.length > limits.updateStructsMax)
        throw tooLarge(
          `update holds a struct ${struct.length} long; the limit is ${limits.updateStructsMax}`,
        )
    let ranges = 0
    for (const list of ds.clients.values()) ranges += list.length
    if (ranges > limits.updateDeleteRangesMax) {
      throw tooLarge(
        `update deletes ${ranges} ranges; the limit is ${limits.updateDeleteRangesMax}`,
      )
    }
    const fresh = new Set<number>()
    for (const struct of structs) {
      if (!this.doc.store.clients.has(struct.id.client)) fresh.add(struct.id.client)
    }
    if (fresh.size > limits.updateNewClientsMax) {
      throw new ForbiddenWriteError(
        `update introduces ${fresh.size} Yjs clients; the limit is ${limits.updateNewClientsMax}`,
      )
    }
  }

  /**
   * The place of every item, found through this update and the document.
   * An item's origin may come later in the update (Yjs writes clients in
   * descending order, and a writer's new clientID may replace an entry its
   * old one wrote), so an item whose origin is in the update is placed after
   * that origin, depth first with an explicit stack (a forged chain may be
   * as long as the update; a forged cycle leaves its items without a place).
   */
  private locate(structs: ReadonlyArray<Y.Item | Y.GC | Y.Skip>): void {
    for (const [index, struct] of structs.entries()) {
      if (struct instanceof Y.Skip) continue
      const list = this.spans.get(struct.id.client) ?? []
      list.push({ clock: struct.id.clock, length: struct.length, index })
      this.spans.set(struct.id.client, list)
    }
    for (const list of this.spans.values()) list.sort((a, b) => a.clock - b.clock)
    this.places = structs.map(() => undefined)
    /** 0: not visited, 1: waiting for its origin, 2: placed (or placeless). */
    const state = new Uint8Array(structs.length)
    for (const [start, struct] of structs.entries()) {
      if (!(struct instanceof Y.Item) || state[start] !== 0) continue
      state[start] = 1
      const stack = [start]
      while (stack.length > 0) {
        const i = stack[stack.length - 1] as number
        const item = structs[i] as Y.Item
        const on = dependencyOf(item)
        const j = on === undefined ? undefined : this.spanAt(on.client, on.clock)?.index
        if (j !== undefined && state[j] === 0 && structs[j] instanceof Y.Item) {
          state[j] = 1
          stack.push(j)
          continue
        }
        this.places[i] = this.placeOfItem(item)
        state[i] = 2
        stack.pop()
      }
    }
    for (const [i, struct] of structs.entries()) {
      const place = this.places[i]
      if (struct instanceof Y.Item && place !== undefined) this.noteServerEpoch(struct, place)
    }
  }

  /** The update's struct holding id (client, clock), if any. */
  private spanAt(client: number, clock: number): Span | undefined {
    const list = this.spans.get(client)
    if (list === undefined) return undefined
    let lo = 0
    let hi = list.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1
      const span = list[mid] as Span
      if (clock < span.clock) hi = mid - 1
      else if (clock >= span.clock + span.length) lo = mid + 1
      else return span
    }
    return undefined
  }

  private placeOfItem(item: Y.Item): Place | undefined {
    const parent = item.parent as unknown
    if (typeof parent === 'string') return { root: parent, key: item.parentSub }
    if (parent instanceof Y.ID) {
      const outer = this.placeAt(parent.client, parent.clock)
      return outer === undefined ? undefined : { root: outer.root, key: item.parentSub }
    }
    const origin = item.origin ?? item.rightOrigin
    if (origin === null) return undefined
    return this.placeAt(origin.client, origin.clock)
  }

  /** The place of the struct holding id (client, clock): in this update first, then in the document. */
  private placeAt(client: number, clock: number): Place | undefined {
    const span = this.spanAt(client, clock)
    if (span !== undefined) return this.places[span.index]
    const structs = this.doc.store.clients.get(client)
    if (structs === undefined) return undefined
    const i = findIndex(structs, clock)
    const struct = i < 0 ? undefined : structs[i]
    if (!(struct instanceof Y.Item)) return undefined
    const root = this.names.rootOf(struct)
    return root === undefined ? undefined : { root, key: struct.parentSub }
  }

  /** The writer a client is bound to: by its first item in the document, else in this update. */
  private writerOfClient(client: number): WriterId | undefined {
    const writer = this.names.writerOfClient(client)
    if (writer !== undefined) return writer
    // The update's structs of the client are sorted by clock: the first placed one binds it.
    for (const span of this.spans.get(client) ?? []) {
      const place = this.places[span.index]
      if (place !== undefined) return rootOwner(place.root)
    }
    return undefined
  }

  private noteServerEpoch(item: Y.Item, place: Place): void {
    if (place.root !== usersRootName(SERVER_ID) || place.key === null) return
    if (!(item.content instanceof Y.ContentAny)) return
    for (const value of item.content.arr) {
      const e = (value as { e?: unknown } | null)?.e
      if (typeof e === 'number' && Number.isSafeInteger(e) && e >= 0) {
        this.serverEpochs.set(place.key, Math.max(this.serverEpochs.get(place.key) ?? 0, e))
      }
    }
  }

  private checkItem(item: Y.Item, place: Place | undefined): void {
    if (place === undefined) {
      if (this.on('root')) throw forbidden('update holds an item whose parent cannot be found')
      return
    }
    const owner = rootOwner(place.root)
    if (this.on('root')) checkRoot(place.root, this.options)
    if (this.on('flat') && item.parent instanceof Y.ID) {
      throw forbidden(`update nests an item under another item in ${clip(place.root)}`)
    }
    if (this.on('clientBinding') && owner !== undefined) {
      const bound = this.writerOfClient(item.id.client)
      if (bound !== undefined && bound !== owner) {
        throw forbidden(
          `update writes into ${clip(place.root)} as Yjs client ${item.id.client}, which writes for ${clip(bound)}`,
        )
      }
    }
    if (this.on('serverWriter')) checkServerWriter(place.root, item.id.client, this.options)
    this.checkContent(item, place)
    if (owner === SERVER_ID && item.origin !== null) this.serverOrigins.push(item.origin)
    this.items++
    this.roots.add(place.root)
  }

  /** Only plain values (entries) belong in the roster, each within its bounds. */
  private checkContent(item: Y.Item, place: Place): void {
    const content = item.content
    if (this.on('key')) checkKey(place)
    if (content instanceof Y.ContentDeleted) return
    if (!(content instanceof Y.ContentAny)) {
      if (this.on('content'))
        throw forbidden(
          `update holds ${content.constructor.name} content; the roster holds plain values only`,
        )
      return
    }
    const owner = rootOwner(place.root)
    for (const value of content.arr) {
      // A `__proto__` key made an object's prototype (core/entries.ts, isPlainObject).
      if (this.on('entryShape') && !plainThroughout(value))
        throw invalid(
          `update holds a value with a "__proto__" key (an object that is not plain) in ${clip(place.root)} / ${clip(place.key ?? '')}`,
        )
      if (place.root === SERVER_META_ROOT) this.checkPolicyEntry(value, place)
      else if (place.root === REVOCATIONS_ROOT) this.checkRevocationEntry(value, place)
      else {
        try {
          if (owner === SERVER_ID) this.checkServerEntry(value, place)
          else this.checkDeviceEntry(value, place)
        } catch (error) {
          throw aboutUser(error, place.key)
        }
      }
    }
  }

  private checkDeviceEntry(value: unknown, place: Place): void {
    const where = `${clip(place.root)} / ${clip(place.key ?? '')}`
    if (this.on('entryShape')) {
      if (!isRecord(value) || !exactKeys(value, DEVICE_ENTRY_KEYS, DEVICE_ENTRY_KEYS))
        throw invalid(`update holds a device entry with keys other than e, f, s in ${where}`)
      if (typeof value.e !== 'number' || !isRecord(value.f) || !isNumberMap(value.s))
        throw invalid(`update holds a device entry of the wrong shape in ${where}`)
    }
    if (!isRecord(value)) return
    const { e, f, s } = value
    if (this.on('schema') && this.options.schema !== undefined) {
      checkFields(this.options.schema, f, where)
      for (const name of isRecord(s) ? Object.keys(s) : []) {
        if (!this.options.schema.hasField(name))
          throw invalid(`update stamps ${clip(JSON.stringify(name))}, not a field, in ${where}`)
      }
    }
    if (this.on('stamp') && isRecord(s))
      for (const stamp of Object.values(s))
        this.checkStamp(stamp, where, this.options.deviceStampSkewMs)
    if (this.on('epoch')) {
      const epoch = this.serverEpochOf(place.key ?? '')
      if (!isEpoch(e) || e > epoch) {
        throw forbidden(epochAheadMessage(clip(String(e)), where, epoch))
      }
    }
  }

  private checkServerEntry(value: unknown, place: Place): void {
    const where = `${clip(place.root)} / ${clip(place.key ?? '')}`
    if (this.on('entryShape')) {
      if (!isRecord(value) || !exactKeys(value, ['e', 't'], SERVER_ENTRY_KEYS))
        throw invalid(`update holds a server entry with keys other than its own in ${where}`)
      const { t, d, f, s, x } = value
      if (typeof value.e !== 'number' || typeof t !== 'number' || (d !== undefined && d !== 1))
        throw invalid(`update holds a server entry of the wrong shape in ${where}`)
      for (const part of [f, s, x]) {
        if (part !== undefined && !isRecord(part))
          throw invalid(`update holds a server entry of the wrong shape in ${where}`)
      }
      if ((s !== undefined && !isNumberMap(s)) || (x !== undefined && !isNumberMap(x)))
        throw invalid(`update holds a server entry of the wrong shape in ${where}`)
      if (value.a !== undefined && !isAdoptionMap(value.a))
        throw invalid(`update holds a server entry of the wrong shape in ${where}`)
    }
    if (!isRecord(value)) return
    if (this.on('stamp')) {
      this.checkStamp(value.t, where)
      for (const map of [value.s, value.x]) {
        if (isRecord(map)) for (const stamp of Object.values(map)) this.checkStamp(stamp, where)
      }
      if (isRecord(value.a))
        for (const adoption of Object.values(value.a))
          if (isAdoption(adoption))
            for (const [held, , takenAt] of adoption)
              for (const stamp of [held, takenAt]) this.checkStamp(stamp, where)
    }
    if (this.on('epoch') && !isEpoch(value.e))
      throw forbidden(`update holds server epoch ${clip(String(value.e))} in ${where}`)
  }

  private checkPolicyEntry(value: unknown, place: Place): void {
    const where = `${SERVER_META_ROOT} / ${clip(place.key ?? '')}`
    if (this.on('entryShape')) {
      if (
        !isRecord(value) ||
        !exactKeys(value, POLICY_ENTRY_KEYS, POLICY_ENTRY_KEYS) ||
        !FIELD_POLICIES.includes(value.p as FieldPolicy) ||
        typeof value.t !== 'number'
      )
        throw invalid(`update holds an invalid field policy in ${where}`)
    }
    if (this.on('stamp') && isRecord(value)) this.checkStamp(value.t, where)
  }

  private checkRevocationEntry(value: unknown, place: Place): void {
    const where = `${REVOCATIONS_ROOT} / ${clip(place.key ?? '')}`
    if (this.on('entryShape')) {
      if (
        !isRecord(value) ||
        !exactKeys(value, REVOCATION_ENTRY_KEYS, REVOCATION_ENTRY_KEYS) ||
        typeof value.t !== 'number'
      )
        throw invalid(`update holds an invalid revocation in ${where}`)
    }
    if (this.on('stamp') && isRecord(value)) this.checkStamp(value.t, where)
  }

  private checkStamp(stamp: unknown, where: string, skewMs = limits.stampSkewMsMax): void {
    const latestMs = this.options.now + skewMs
    if (typeof stamp !== 'number' || !Number.isSafeInteger(stamp) || stamp < 0) {
      throw invalid(
        `update holds stamp ${clip(String(stamp))} in ${where}; stamps are non-negative integers`,
      )
    }
    if (stampMs(stamp) > latestMs) {
      throw invalid(
        `update holds a stamp ${stampMs(stamp) - this.options.now} ms ahead of this peer's time in ${where}; the limit is ${skewMs}; peer time ${this.options.time ?? this.options.now}`,
      )
    }
  }

  /** The server's epoch of a user: what the document holds, or what this update brings. */
  private serverEpochOf(userId: string): number {
    const fromUpdate = this.serverEpochs.get(userId) ?? 0
    const root = this.doc.share.get(usersRootName(SERVER_ID))
    const item = root?._map.get(userId)
    if (item === undefined || item.deleted || !(item.content instanceof Y.ContentAny))
      return fromUpdate
    const e = (item.content.arr[item.content.arr.length - 1] as { e?: unknown } | null)?.e
    return typeof e === 'number' && Number.isSafeInteger(e) ? Math.max(e, fromUpdate) : fromUpdate
  }

  private checkDeletes(ds: DeleteSet): number {
    let deletes = 0
    for (const [client, ranges] of ds.clients) {
      for (const range of ranges) {
        if (this.checkDeleteRange(client, range.clock, range.clock + range.len)) deletes++
      }
    }
    return deletes
  }

  /** Checks one delete range; true when it deletes something not deleted yet. */
  private checkDeleteRange(client: number, clock: number, end: number): boolean {
    const state = Y.getState(this.doc.store, client)
    const live = liveItems(this.doc, client, clock, Math.min(end, state))
    if (live.length === 0 && end <= state) return false
    if (!this.on('delete')) return true
    for (const item of live) {
      const root = this.names.rootOf(item)
      if (root === undefined) throw forbidden('update deletes an item whose root cannot be found')
      checkRoot(root, this.options)
    }
    // Past what this peer holds, only the update's own structs may be named:
    // a range over ids nobody has sent yet would delete them when they come
    // (Yjs keeps it pending), whoever writes them.
    for (let at = Math.max(clock, state); at < end;) {
      const span = this.spanAt(client, at)
      if (span === undefined) throw forbidden('update deletes items this peer does not know')
      at = span.clock + span.length
    }
    if (this.on('serverReplacement') && this.options.serverClients !== undefined) {
      for (const item of live) {
        const root = this.names.rootOf(item)
        if (root !== undefined && rootOwner(root) === SERVER_ID)
          checkServerReplacement(item, this.serverOrigins)
      }
    }
    return true
  }
}

/**
 * A refusal of one user's entry, with the user's id as its details
 * (`{ userId }`): the server's `write-refused` event names the user, so
 * `events.query({ userId })` finds it (a black-box probe found none).
 */
function aboutUser(error: unknown, userId: string | null): unknown {
  if (userId === null || !(error instanceof RostersyncError) || error.details !== undefined)
    return error
  if (error instanceof InvalidRecordError) return new InvalidRecordError(error.message, { userId })
  if (error instanceof ForbiddenWriteError)
    return new ForbiddenWriteError(error.message, { userId })
  return error
}

/** The user a refusal is about (see aboutUser), if one. */
export function refusedUserOf(error: unknown): string | undefined {
  const details = error instanceof RostersyncError ? error.details : undefined
  const userId = (details as { userId?: unknown } | undefined)?.userId
  return typeof userId === 'string' ? userId : undefined
}

const forbidden = (message: string): ForbiddenWriteError => new ForbiddenWriteError(message)
const invalid = (message: string): InvalidRecordError => new InvalidRecordError(message)
const tooLarge = (message: string): RostersyncError =>
  new RostersyncError('MESSAGE_TOO_LARGE', message)

function checkServerWriter(root: string, client: number, options: CheckOptions): void {
  if (options.serverClients === undefined || rootOwner(root) !== SERVER_ID) return
  if (!options.serverClients.has(client)) {
    throw new ForbiddenWriteError(
      `update writes into the server's part as Yjs client ${client}, not known as the server's`,
    )
  }
}

/** A live server item a relayed update deletes must be replaced by a server item in it. */
function checkServerReplacement(item: Y.Item, origins: readonly Y.ID[]): void {
  const replaced = origins.some(
    (o) =>
      o.client === item.id.client &&
      o.clock >= item.id.clock &&
      o.clock < item.id.clock + item.length,
  )
  if (!replaced)
    throw new ForbiddenWriteError("update deletes a server entry without the server's replacement")
}

/** The items of `client` in [clock, end) that `doc` holds and has not deleted. */
function liveItems(doc: Y.Doc, client: number, clock: number, end: number): Y.Item[] {
  const structs = doc.store.clients.get(client)
  if (structs === undefined || end <= clock) return []
  const live: Y.Item[] = []
  let i = findIndex(structs, clock)
  if (i < 0) return []
  for (; i < structs.length; i++) {
    const s = structs[i]
    if (s === undefined || s.id.clock >= end) break
    if (s instanceof Y.Item && !s.deleted) live.push(s)
  }
  return live
}

function checkRoot(root: string, options: CheckOptions): void {
  const owner = rootOwner(root)
  if (
    owner === undefined ||
    owner.length > limits.writerIdCharsMax ||
    !WRITER_ID_PATTERN.test(owner)
  )
    throw new ForbiddenWriteError(`update writes into unknown root ${clip(JSON.stringify(root))}`)
  if (!options.mayWrite(owner)) {
    throw new ForbiddenWriteError(
      `update writes into ${owner === SERVER_ID ? "the server's" : `${owner}'s`} part`,
      { root },
    )
  }
}

/** Every root is a map: an item is one value under one key, a user id or a field name. */
function checkKey(place: Place): void {
  const key = place.key
  if (key === null)
    throw new ForbiddenWriteError(`update holds an item without a key in ${clip(place.root)}`)
  if (key.length === 0 || key.length > limits.userIdCharsMax || /\p{Cc}/u.test(key)) {
    throw new InvalidRecordError(
      `update holds key ${clip(JSON.stringify(key))} in ${clip(place.root)}; keys are 1 to ${limits.userIdCharsMax} characters without control characters`,
    )
  }
  // A user part's keys are user ids, each a segment of /api/users/<id>.
  if (place.root.startsWith('u:') && unreachableUserId(key))
    throw new InvalidRecordError(
      `update holds user id ${clip(JSON.stringify(key))}: not "." or "..", and no "/" or "\\"`,
    )
}

/** A device entry's fields parse against the site's schema (the key is judged by checkKey). */
function checkFields(schema: RecordSchema, fields: unknown, where: string): void {
  try {
    schema.parsePatch(KEY_PLACEHOLDER, fields)
  } catch (error) {
    // The schema's message may quote the peer's input: only an clip goes on.
    if (error instanceof RostersyncError)
      throw new InvalidRecordError(
        `update holds an invalid record in ${where}: ${clip(error.message)}`,
      )
    throw error
  }
}

/** A valid user id handed to the schema, which judges a patch with its id. */
const KEY_PLACEHOLDER = 'x'

const isRecord = (v: unknown): v is Record<string, unknown> => isPlainObject(v)
const isNumberMap = (v: unknown): boolean =>
  isRecord(v) && Object.values(v).every((n) => typeof n === 'number')
const isEpoch = (e: unknown): e is number =>
  typeof e === 'number' && Number.isSafeInteger(e) && e >= 0

/** True when `value` has every key of `required` and none outside `allowed`. */
function exactKeys(
  value: Record<string, unknown>,
  required: readonly string[],
  allowed: readonly string[],
): boolean {
  for (const key of required) if (!Object.hasOwn(value, key)) return false
  for (const key of Object.keys(value)) if (!allowed.includes(key)) return false
  return true
}

/** The id an item's place comes from (its parent item, else its origin), if not a root name. */
function dependencyOf(item: Y.Item): Y.ID | undefined {
  const parent = item.parent as unknown
  if (typeof parent === 'string') return undefined
  if (parent instanceof Y.ID) return parent
  return item.origin ?? item.rightOrigin ?? undefined
}

/** Index of the struct holding `clock`, or -1. */
function findIndex(structs: ReadonlyArray<Y.Item | Y.GC>, clock: number): number {
  let lo = 0
  let hi = structs.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const s = structs[mid]
    if (s === undefined) return -1
    if (clock < s.id.clock) hi = mid - 1
    else if (clock >= s.id.clock + s.length) lo = mid + 1
    else return mid
  }
  return -1
}

/** The refusal of a device entry whose epoch is above the server's (`where`: `u:<writer> / <user>`). */
const epochAheadMessage = (epoch: string, where: string, serverEpoch: number): string =>
  `update holds device epoch ${epoch} in ${where}; the server's is ${serverEpoch}`

/**
 * The writer whose part a refusal's message names as holding an epoch
 * above the server's (epochAheadMessage), or undefined for any other
 * message: to an honest device, its own part named is its server's restore
 * (peers/device-sync/server-exchange.ts refusedOwnEpoch).
 */
export function epochAheadWriter(message: string): string | undefined {
  return /^update holds device epoch \d+ in u:(.+?) \/ /.exec(message)?.[1]
}
