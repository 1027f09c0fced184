/**
 * Checks a decoded Yjs update against "a peer writes only its own part"
 * before any of it is applied (a Yjs update that throws part-way can leave
 * some of it applied, so the check comes first).
 *
 * Every item's root is found: directly when the item names its parent, else
 * through its origin (an item with a left or right origin is encoded without
 * its parent), looked up earlier in the same update or in the document. The
 * delete set names (client, clock) ranges; each deleted item's root is found
 * the same way. `mayWrite(owner)` decides per root owner.
 *
 * What the document already holds is a no-op for Yjs and is not judged: a
 * state exchange carries the sender's whole delete set, and relays carry
 * items the receiver may already have (the server's own, back to it).
 */
import * as Y from 'yjs'
import { asDeviceEntry, rootOwner, SERVER_META_ROOT } from './entries.js'
import {
  ForbiddenWriteError,
  InvalidRecordError,
  MalformedMessageError,
  RostersyncError,
} from './errors.js'
import { SERVER_ID, type WriterId } from './ids.js'
import type { RecordSchema } from './schema.js'

interface Span {
  readonly clock: number
  readonly length: number
  readonly root: string | undefined
}

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
  /** Validates device entries' fields when given. */
  readonly schema?: RecordSchema
  /**
   * For links that relay the server's part (LAN): when given, a new item or
   * GC range in the server's part must come from one of these Yjs clients
   * (see {@link serverClientsOf}), and a delete of a server item this peer
   * still shows must come with the server item that replaces it (the server
   * only ever replaces its entries, never deletes them outright).
   */
  readonly serverClients?: ReadonlySet<number>
}

/**
 * Throws `MALFORMED_MESSAGE`, `FORBIDDEN_WRITE` or `INVALID_RECORD` when the
 * update must be refused; returns a summary otherwise. Pure: reads `doc`
 * without changing it.
 */
export function checkUpdate(doc: Y.Doc, update: Uint8Array, options: CheckOptions): UpdateSummary {
  let decoded: ReturnType<typeof Y.decodeUpdate>
  try {
    decoded = Y.decodeUpdate(update)
  } catch (cause) {
    throw new MalformedMessageError('update does not decode', cause)
  }
  const spans = new Map<number, Span[]>()
  const roots = new Set<string>()
  /** Origins of the update's new server items: what they replace. */
  const serverOrigins: Y.ID[] = []
  let items = 0
  for (const struct of decoded.structs) {
    if (struct instanceof Y.Skip) continue
    const known = struct.id.clock + struct.length <= Y.getState(doc.store, struct.id.client)
    const root =
      struct instanceof Y.Item
        ? rootOfItem(doc, spans, struct)
        : clientRoot(doc, spans, struct.id.client)
    if (known) {
      // Yjs skips structs the document already holds: nothing to judge.
    } else if (struct instanceof Y.Item) {
      if (root === undefined)
        throw new ForbiddenWriteError('update holds an item whose parent cannot be found')
      checkRoot(root, options)
      checkServerWriter(root, struct.id.client, options)
      checkContent(struct, root, options)
      if (rootOwner(root) === SERVER_ID && struct.origin !== null) serverOrigins.push(struct.origin)
      items++
      roots.add(root)
    } else if (root !== undefined) {
      // A GC range claims ids of a client: it must be a client of a writer
      // the sender may write for, or it could shadow another writer's items.
      checkRoot(root, options)
      checkServerWriter(root, struct.id.client, options)
    }
    const list = spans.get(struct.id.client) ?? []
    list.push({ clock: struct.id.clock, length: struct.length, root })
    spans.set(struct.id.client, list)
  }
  let deletes = 0
  for (const [client, ranges] of decoded.ds.clients) {
    for (const range of ranges) {
      const live = liveStructs(doc, client, range.clock, range.len)
      if (live.length === 0 && range.clock + range.len <= Y.getState(doc.store, client)) continue
      const root = rootAt(doc, spans, client, range.clock)
      if (root === undefined)
        throw new ForbiddenWriteError('update deletes items this peer does not know')
      checkRoot(root, options)
      if (options.serverClients !== undefined && rootOwner(root) === SERVER_ID) {
        checkServerReplacements(live, serverOrigins)
      }
      deletes++
    }
  }
  return { roots, items, deletes }
}

/**
 * The Yjs clients that write the server's part in `doc`: those whose first
 * item lies in a root the server owns. On a device these came from the
 * server link, or over a relaying link that checked them against this same
 * set, so the set only ever holds clients the server itself used.
 */
export function serverClientsOf(doc: Y.Doc): Set<number> {
  const clients = new Set<number>()
  const spans = new Map<number, Span[]>()
  for (const client of doc.store.clients.keys()) {
    const root = clientRoot(doc, spans, client)
    if (root !== undefined && rootOwner(root) === SERVER_ID) clients.add(client)
  }
  return clients
}

function checkServerWriter(root: string, client: number, options: CheckOptions): void {
  if (options.serverClients === undefined || rootOwner(root) !== SERVER_ID) return
  if (!options.serverClients.has(client)) {
    throw new ForbiddenWriteError(
      `update writes into the server's part as Yjs client ${client}, not known as the server's`,
      { root },
    )
  }
}

/** Every live server item a relayed update deletes must be replaced by a server item in it. */
function checkServerReplacements(live: readonly Y.Item[], origins: readonly Y.ID[]): void {
  for (const item of live) {
    const replaced = origins.some(
      (o) =>
        o.client === item.id.client &&
        o.clock >= item.id.clock &&
        o.clock < item.id.clock + item.length,
    )
    if (!replaced)
      throw new ForbiddenWriteError(
        "update deletes a server entry without the server's replacement",
      )
  }
}

/** The items of `client` in [clock, clock + length) that `doc` holds and has not deleted. */
function liveStructs(doc: Y.Doc, client: number, clock: number, length: number): Y.Item[] {
  const structs = doc.store.clients.get(client)
  if (structs === undefined) return []
  const live: Y.Item[] = []
  let i = findIndex(structs, clock)
  if (i < 0) return []
  for (; i < structs.length; i++) {
    const s = structs[i]
    if (s === undefined || s.id.clock >= clock + length) break
    if (s instanceof Y.Item && !s.deleted) live.push(s)
  }
  return live
}

function checkRoot(root: string, options: CheckOptions): void {
  const owner = rootOwner(root)
  if (owner === undefined)
    throw new ForbiddenWriteError(`update writes into unknown root ${JSON.stringify(root)}`)
  if (!options.mayWrite(owner)) {
    throw new ForbiddenWriteError(
      `update writes into ${owner === SERVER_ID ? "the server's" : `${owner}'s`} part`,
      {
        root,
      },
    )
  }
}

/** Only plain values (entries) belong in the roster; no nested types. */
function checkContent(item: Y.Item, root: string, options: CheckOptions): void {
  const content = item.content
  if (content instanceof Y.ContentDeleted) return
  if (!(content instanceof Y.ContentAny)) {
    throw new ForbiddenWriteError(
      `update holds ${content.constructor.name} content; the roster holds plain values only`,
    )
  }
  if (root === SERVER_META_ROOT || rootOwner(root) === SERVER_ID || options.schema === undefined)
    return
  for (const value of content.arr) {
    const entry = asDeviceEntry(value)
    if (entry === undefined)
      throw new InvalidRecordError(`update holds an invalid device entry in ${root}`)
    try {
      options.schema.parsePatch(item.parentSub ?? 'x', entry.f)
    } catch (error) {
      if (error instanceof RostersyncError)
        throw new InvalidRecordError(`update holds an invalid record: ${error.message}`)
      throw error
    }
  }
}

function rootOfItem(doc: Y.Doc, spans: Map<number, Span[]>, item: Y.Item): string | undefined {
  const parent = item.parent as unknown
  if (typeof parent === 'string') return parent
  if (parent instanceof Y.ID) return rootAt(doc, spans, parent.client, parent.clock)
  const origin = item.origin ?? item.rightOrigin
  if (origin === null) return undefined
  return rootAt(doc, spans, origin.client, origin.clock)
}

/** The root of the struct holding id (client, clock): in this update first, then in the document. */
function rootAt(
  doc: Y.Doc,
  spans: Map<number, Span[]>,
  client: number,
  clock: number,
): string | undefined {
  const span = spans.get(client)?.find((s) => clock >= s.clock && clock < s.clock + s.length)
  if (span !== undefined) return span.root
  const structs = doc.store.clients.get(client)
  if (structs === undefined) return undefined
  const struct = findStruct(structs, clock)
  if (struct === undefined) return undefined
  return struct instanceof Y.Item ? rootNameOf(doc, struct) : clientRoot(doc, spans, client)
}

/** The root a client writes into, judged by its first item in the document. */
function clientRoot(doc: Y.Doc, spans: Map<number, Span[]>, client: number): string | undefined {
  const fromUpdate = spans.get(client)?.find((s) => s.root !== undefined)
  if (fromUpdate !== undefined) return fromUpdate.root
  for (const struct of doc.store.clients.get(client) ?? []) {
    if (struct instanceof Y.Item) return rootNameOf(doc, struct)
  }
  return undefined
}

function findStruct(
  structs: ReadonlyArray<Y.Item | Y.GC>,
  clock: number,
): Y.Item | Y.GC | undefined {
  const i = findIndex(structs, clock)
  return i < 0 ? undefined : structs[i]
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

function rootNameOf(doc: Y.Doc, item: Y.Item): string | undefined {
  let type = item.parent as Y.AbstractType<unknown> | null
  while (type?._item != null) type = type._item.parent as Y.AbstractType<unknown> | null
  if (type === null) return undefined
  for (const [name, shared] of doc.share) if ((shared as unknown) === type) return name
  return undefined
}
