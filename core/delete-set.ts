/**
 * A document's delete set, kept up to date from its transactions, and the
 * state-exchange answer (step 2) encoded with it.
 *
 * `Y.encodeStateAsUpdate(doc, stateVector)` writes the structs the other
 * side lacks, then the document's whole delete set, which it rebuilds every
 * time by walking every struct in the store. For a server whose document
 * holds a few hundred thousand structs that walk is most of the cost of an
 * answer (120,000 structs: 1.7 ms of 1.9), paid on every step 1 of every
 * device. This keeps the same delete set incrementally and writes the same
 * bytes.
 *
 * What a transaction newly deletes is either an item that was there before
 * (listed in the transaction's own delete set) or a struct it added that is
 * deleted already (a GC range or deleted content from an update, or an item
 * deleted as it integrated): the second kind is found by walking only the
 * structs the transaction added. Deleted never becomes undeleted, and
 * garbage collection, splitting and merging of structs keep deletedness per
 * clock, so the ranges only ever grow.
 */
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import { grownClients } from './grown-clients.js'
import { joinBytes } from './protocol.js'

/** Per client: sorted, disjoint, non-touching [clock, end) ranges. */
type Ranges = Map<number, Array<[number, number]>>

/**
 * Adds [clock, end) to `list` (sorted, disjoint, non-touching), merging it
 * with the ranges it overlaps or touches, as the struct walk merges runs of
 * adjacent deleted structs.
 */
export function addRange(list: Array<[number, number]>, clock: number, end: number): void {
  if (end <= clock) return
  // First range whose end reaches `clock` (it may merge with the new one).
  let lo = 0
  let hi = list.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if ((list[mid] as [number, number])[1] < clock) lo = mid + 1
    else hi = mid
  }
  let last = lo
  let start = clock
  let stop = end
  while (last < list.length && (list[last] as [number, number])[0] <= end) {
    const range = list[last] as [number, number]
    start = Math.min(start, range[0])
    stop = Math.max(stop, range[1])
    last++
  }
  list.splice(lo, last - lo, [start, stop])
}

/**
 * The DeleteSetCache following each ranges map: writeDeleteRanges takes
 * its encoded bytes (every answer ends with the whole delete set, and a
 * server answering devices between two of its transactions writes the same
 * one each time, or one that changed for a few clients).
 */
const followers = new WeakMap<object, DeleteSetCache>()

/** The delete set of one document, as ranges per client; see the module comment. */
export class DeleteSetCache {
  /** Built on first use (a document that never answers a step 1 never pays for it). */
  private ranges: Ranges | undefined
  private following = true
  /**
   * Per client, its part of the encoded delete set (client, count, ranges),
   * dropped when a transaction adds to its ranges; and the clients highest
   * first (Yjs's order), dropped when one is added; and the whole.
   */
  private readonly chunks = new Map<number, Uint8Array>()
  private order: number[] | undefined
  private bytes: Uint8Array | undefined
  private readonly onTransaction = (tr: Y.Transaction): void => this.note(tr)

  constructor(private readonly doc: Y.Doc) {
    doc.on('afterTransaction', this.onTransaction)
  }

  /** Stops following the document: from then on every answer walks the store. */
  destroy(): void {
    this.doc.off('afterTransaction', this.onTransaction)
    this.following = false
    this.ranges = undefined
  }

  /** The delete set now: what `Y.createDeleteSetFromStructStore` would return, as ranges. */
  current(): ReadonlyMap<number, ReadonlyArray<readonly [number, number]>> {
    if (!this.following) return deleteRangesOf(this.doc.store)
    if (this.ranges === undefined) {
      this.ranges = deleteRangesOf(this.doc.store)
      followers.set(this.ranges, this)
    }
    return this.ranges
  }

  /**
   * `ranges` in UpdateEncoderV1's layout (see writeDeleteRanges) when they
   * are the ranges this cache follows now, else undefined.
   */
  encodedIf(asked: object): Uint8Array | undefined {
    const ranges = this.ranges
    if (!this.following || ranges === undefined || asked !== ranges) return undefined
    if (this.bytes !== undefined) return this.bytes
    this.order ??= [...ranges.keys()].sort((a, b) => b - a)
    const pieces: Uint8Array[] = [encoding.encode((e) => encoding.writeVarUint(e, ranges.size))]
    for (const client of this.order) {
      let chunk = this.chunks.get(client)
      if (chunk === undefined) {
        const own = new Y.UpdateEncoderV1()
        writeClientRanges(own, client, ranges.get(client) ?? [])
        chunk = own.toUint8Array()
        this.chunks.set(client, chunk)
      }
      pieces.push(chunk)
    }
    this.bytes = joinBytes(pieces)
    return this.bytes
  }

  private note(tr: Y.Transaction): void {
    const ranges = this.ranges
    if (ranges === undefined) return
    const listOf = (client: number): Array<[number, number]> => {
      // Every caller adds a range: what was encoded of this client is old.
      this.bytes = undefined
      this.chunks.delete(client)
      let list = ranges.get(client)
      if (list === undefined) {
        list = []
        ranges.set(client, list)
        this.order = undefined
      }
      return list
    }
    for (const [client, items] of tr.deleteSet.clients) {
      const list = listOf(client)
      for (const item of items) addRange(list, item.clock, item.clock + item.len)
    }
    const store = tr.doc.store
    for (const { client, before } of grownClients(tr)) {
      const structs = store.clients.get(client)
      if (structs === undefined) continue
      for (let i = Y.findIndexSS(structs, before); i < structs.length; i++) {
        const struct = structs[i] as Y.AbstractStruct
        if (struct.deleted)
          addRange(listOf(client), struct.id.clock, struct.id.clock + struct.length)
      }
    }
  }
}

/** The delete set of `store`, walked from every struct (the first build). */
export function deleteRangesOf(store: Y.Doc['store']): Ranges {
  const ranges: Ranges = new Map()
  for (const [client, items] of Y.createDeleteSetFromStructStore(store).clients) {
    if (items.length > 0)
      ranges.set(
        client,
        items.map((item): [number, number] => [item.clock, item.clock + item.len]),
      )
  }
  return ranges
}

/**
 * `Y.encodeStateAsUpdate(doc, targetStateVector)`, byte for byte, with the
 * delete set taken from `deletes` (which must follow `doc`). Falls back to
 * Yjs when the document holds pending structs or deletes (Yjs merges those
 * in) or a transaction is open or being cleaned up.
 */
export function encodeDiff(
  doc: Y.Doc,
  targetStateVector: Uint8Array,
  deletes: DeleteSetCache,
): Uint8Array {
  const store = doc.store
  // During a transaction's cleanup (observers, 'update' handlers, their
  // follow-up transactions) `_transaction` is null already, but the cache
  // hears of the transaction only once cleanup is over.
  if (
    store.pendingStructs !== null ||
    store.pendingDs !== null ||
    doc._transaction !== null ||
    doc._transactionCleanups.length > 0
  )
    return Y.encodeStateAsUpdate(doc, targetStateVector)
  const target = Y.decodeStateVector(targetStateVector)
  const encoder = new Y.UpdateEncoderV1()
  // The structs: as Yjs's writeClientsStructs, higher clientIDs first.
  const from = new Map<number, number>()
  for (const [client, structs] of store.clients) {
    const last = structs[structs.length - 1]
    if (last === undefined) continue
    const clock = target.get(client) ?? 0
    if (last.id.clock + last.length > clock) from.set(client, clock)
  }
  writeStructsFrom(encoder, store, from)
  // The delete set: as Yjs's writeDeleteSet, higher clientIDs first.
  writeDeleteRanges(encoder, deletes.current())
  return encoder.toUint8Array()
}

/**
 * Writes, as Yjs's writeClientsStructs does (higher clientIDs first), the
 * structs of each client in `from` from its clock on (a struct the clock
 * falls in is written from there).
 */
export function writeStructsFrom(
  encoder: Y.UpdateEncoderV1,
  store: Y.Doc['store'],
  from: ReadonlyMap<number, number>,
): void {
  const rest = encoder.restEncoder
  encoding.writeVarUint(rest, from.size)
  for (const [client, wanted] of [...from].sort((a, b) => b[0] - a[0])) {
    const structs = store.clients.get(client) as Array<Y.GC | Y.Item>
    const clock = Math.max(wanted, (structs[0] as Y.GC | Y.Item).id.clock)
    const start = Y.findIndexSS(structs, clock)
    encoding.writeVarUint(rest, structs.length - start)
    encoder.writeClient(client)
    encoding.writeVarUint(rest, clock)
    const first = structs[start] as Y.GC | Y.Item
    first.write(encoder, clock - first.id.clock)
    for (let i = start + 1; i < structs.length; i++) (structs[i] as Y.GC | Y.Item).write(encoder, 0)
  }
}

/** Writes a delete set (client -> [clock, end) ranges) as Yjs's writeDeleteSet does: higher clientIDs first. */
export function writeDeleteRanges(
  encoder: Y.UpdateEncoderV1,
  ranges: ReadonlyMap<number, ReadonlyArray<readonly [number, number]>>,
): void {
  // V1 writes a delete set as plain varUints: the same bytes wherever they
  // go, kept by the cache that follows these ranges.
  const bytes = followers.get(ranges)?.encodedIf(ranges)
  if (bytes !== undefined) encoding.writeUint8Array(encoder.restEncoder, bytes)
  else writeRanges(encoder, ranges)
}

function writeRanges(
  encoder: Y.UpdateEncoderV1,
  ranges: ReadonlyMap<number, ReadonlyArray<readonly [number, number]>>,
): void {
  encoding.writeVarUint(encoder.restEncoder, ranges.size)
  for (const [client, list] of [...ranges].sort((a, b) => b[0] - a[0]))
    writeClientRanges(encoder, client, list)
}

/** One client's part of a delete set: its id, its count of ranges, each range. */
function writeClientRanges(
  encoder: Y.UpdateEncoderV1,
  client: number,
  list: ReadonlyArray<readonly [number, number]>,
): void {
  const rest = encoder.restEncoder
  encoder.resetDsCurVal()
  encoding.writeVarUint(rest, client)
  encoding.writeVarUint(rest, list.length)
  for (const [clock, end] of list) {
    encoder.writeDsClock(clock)
    encoder.writeDsLen(end - clock)
  }
}
