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
  let items = 0
  for (const struct of decoded.structs) {
    if (struct instanceof Y.Skip) continue
    const root =
      struct instanceof Y.Item
        ? rootOfItem(doc, spans, struct)
        : clientRoot(doc, spans, struct.id.client)
    if (struct instanceof Y.Item) {
      if (root === undefined)
        throw new ForbiddenWriteError('update holds an item whose parent cannot be found')
      checkRoot(root, options)
      checkContent(struct, root, options)
      items++
      roots.add(root)
    } else if (root !== undefined) {
      // A GC range claims ids of a client: it must be a client of a writer
      // the sender may write for, or it could shadow another writer's items.
      checkRoot(root, options)
    }
    const list = spans.get(struct.id.client) ?? []
    list.push({ clock: struct.id.clock, length: struct.length, root })
    spans.set(struct.id.client, list)
  }
  let deletes = 0
  for (const [client, ranges] of decoded.ds.clients) {
    for (const range of ranges) {
      const root = rootAt(doc, spans, client, range.clock)
      if (root === undefined)
        throw new ForbiddenWriteError('update deletes items this peer does not know')
      checkRoot(root, options)
      deletes++
    }
  }
  return { roots, items, deletes }
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
  let lo = 0
  let hi = structs.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const s = structs[mid]
    if (s === undefined) return undefined
    if (clock < s.id.clock) hi = mid - 1
    else if (clock >= s.id.clock + s.length) lo = mid + 1
    else return s
  }
  return undefined
}

function rootNameOf(doc: Y.Doc, item: Y.Item): string | undefined {
  let type = item.parent as Y.AbstractType<unknown> | null
  while (type?._item != null) type = type._item.parent as Y.AbstractType<unknown> | null
  if (type === null) return undefined
  for (const [name, shared] of doc.share) if ((shared as unknown) === type) return name
  return undefined
}
