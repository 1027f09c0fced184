/**
 * A state-exchange answer (step 2) in parts that each fit a message
 * (PROTOCOL.md, "Answers in chunks"). One step 2 holding a whole large
 * roster outgrows any message bound (about 340 MB at 1M users, past
 * `netLimits.messageBytesMax`), and a receiver that refuses it reconnects
 * and asks again, forever.
 *
 * The parts are Yjs v1 updates a receiver applies in order as they come,
 * each complete when it arrives: a part never names an item (an origin, a
 * right origin or a parent) that only a later part brings, so nothing of it
 * waits in Yjs's pending store or in a replica's held-back updates. The
 * structs are taken in an order that respects those references (Kahn's
 * order over the clients' clock runs: a client's run goes on while what its
 * next struct names is sent or held by the receiver, else waits for the
 * client it names), and cut into parts of at most the byte bound. Every
 * reference points to an item its author held when it wrote, so the order
 * always exists; the delete set goes last, in parts of its own, when it
 * does not fit with the structs.
 *
 * One part holding everything is the bytes of `encodeDiff`
 * (core/delete-set.ts), byte for byte.
 */
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import { writeDeleteRanges } from './delete-set.js'
import { joinBytes } from './protocol.js'

type Struct = Y.GC | Y.Item
type Ranges = ReadonlyMap<number, ReadonlyArray<readonly [number, number]>>

/** Bytes a part's header and one client's header take at most (varUints of counts, clients, clocks). */
const HEADER_BYTES_MAX = 3 * 10
/** Bytes one delete range takes at most (two varUints), and one client's header in a delete set. */
const DELETE_RANGE_BYTES_MAX = 2 * 10

/** One client's run of structs in one part. */
interface Run {
  /** The clock the run starts at (inside its first struct when that is cut). */
  readonly clock: number
  /** The clock after its last struct. */
  end: number
  count: number
  /** Where its structs lie in the part's arena: [start, end) pairs, in order. */
  readonly ranges: number[]
}

/** Where a client stands: its structs, the next one to send and its clock. */
interface Cursor {
  readonly structs: Struct[]
  index: number
  clock: number
}

/**
 * The structs a peer at `target` lacks of `store`, in parts of at most
 * `partBytesMax` bytes (a single struct larger than that goes alone), each
 * complete given the parts before it, then the delete set `deletes`:
 * appended to the last part when it fits, else in parts of its own.
 * Always at least one part (an empty update when there is nothing to send).
 */
export function encodeDiffParts(
  store: Y.Doc['store'],
  target: ReadonlyMap<number, number>,
  deletes: Ranges,
  partBytesMax: number,
): Uint8Array[] {
  const parts: Uint8Array[] = []
  for (const part of diffParts(store, target, deletes, partBytesMax))
    if (part !== null) parts.push(part)
  return parts
}

/**
 * Structs between two pauses of {@link diffParts} (a `null`): a caller
 * making a part in slices of the event loop looks at its clock there (one
 * 16 MiB part of a 1M-user roster is about 300 ms of encoding here).
 */
export const DIFF_STRUCTS_PER_PAUSE = 256

/**
 * A request to stop an answer being made (diffParts' `cut`): set before
 * the store changes, then the generator is run to its end, which it
 * reaches at once, yielding the open part first (see diffParts).
 */
export interface CutSignal {
  requested: boolean
  /**
   * Set by the generator when it ends because of the request; one that
   * ends without it came to its natural end (the last part made before the
   * store changed: the answer is complete).
   */
  stopped?: boolean
}

/**
 * The delete ranges an answer's parts yielded so far, per client: start
 * and end clocks, flat, each walk's in order (diffParts).
 */
export type DeletesSent = Map<number, number[]>

/**
 * `deletes` (per client, sorted `[start, end)` clock ranges) without the
 * ranges in `sent`: a delete set only grows, and what a receiver was sent
 * of it stays deleted there, so the rest of a cut answer sends only the
 * ranges it lacks.
 */
export function deletesNotSent(deletes: Ranges, sent: DeletesSent): Ranges {
  if (sent.size === 0) return deletes
  const rest = new Map<number, Array<readonly [number, number]>>()
  for (const [client, list] of deletes) {
    const flat = sent.get(client)
    if (flat === undefined || flat.length === 0) {
      rest.set(client, list as Array<readonly [number, number]>)
      continue
    }
    const done: Array<readonly [number, number]> = []
    for (let i = 0; i < flat.length; i += 2) done.push([flat[i] as number, flat[i + 1] as number])
    done.sort((a, b) => a[0] - b[0])
    const left: Array<readonly [number, number]> = []
    let d = 0
    for (const [start, end] of list) {
      let from = start
      while (d < done.length && (done[d] as readonly [number, number])[1] <= from) d++
      for (let k = d; k < done.length && from < end; k++) {
        const [doneStart, doneEnd] = done[k] as readonly [number, number]
        if (doneStart >= end) break
        if (doneStart > from) left.push([from, doneStart])
        from = Math.max(from, doneEnd)
      }
      if (from < end) left.push([from, end])
    }
    if (left.length > 0) rest.set(client, left)
  }
  return rest
}

/**
 * encodeDiffParts one part at a time: each part is made when the next is
 * asked for, so the first goes out before the last is encoded (a 1M-user
 * roster is about 20 parts; issue 13). The store and `deletes` must not
 * change until the generator is done (the replica finishes it before any
 * transaction: peers/replica/answer-stream.ts). Between parts it yields
 * `null` every {@link DIFF_STRUCTS_PER_PAUSE} structs: a pause, where a
 * caller may stop and go on later (before the store changes).
 *
 * `covered`, when given, is kept at what a receiver at `target` holds
 * once it has the parts yielded so far (each client's clock, set before
 * the part is yielded): the rest of the answer, should the store change
 * before the last part, is what a peer at `covered` lacks of it then
 * (peers/replica/answer-stream.ts, `cut`).
 *
 * `cut.requested`, seen where the generator goes on after a yield, ends
 * it there: the structs walked into the open part go out as one more
 * (smaller) part, complete as any, so that what a slice walked is never
 * walked again. Without that, writes coming faster than a part is made
 * (several answers sharing the turns: each gets a slice now and then)
 * threw every answer's walk away at each write, and no answer ever
 * finished. Cut while the delete set is going out, it stops there: the
 * ranges yielded so far are kept in `deletesSent` (when given), and the
 * rest sends the delete set of the document then without them
 * (`deletesNotSent`), or an answer whose delete set takes more slices than
 * come between two writes never ends.
 */
export function* diffParts(
  store: Y.Doc['store'],
  target: ReadonlyMap<number, number>,
  deletes: Ranges,
  partBytesMax: number,
  covered?: Map<number, number>,
  cut?: CutSignal,
  deletesSent?: DeletesSent,
): Generator<Uint8Array | null, void, undefined> {
  // A function: the flag changes while the generator waits at a yield.
  const stopped = (): boolean => cutNow(cut)
  if (stopped()) return
  let sincePause = 0
  const cursors = new Map<number, Cursor>()
  for (const [client, structs] of store.clients as Map<number, Struct[]>) {
    const last = structs[structs.length - 1]
    if (last === undefined) continue
    const first = structs[0] as Struct
    const clock = Math.max(target.get(client) ?? 0, first.id.clock)
    if (last.id.clock + last.length <= clock) continue
    cursors.set(client, { structs, index: Y.findIndexSS(structs, clock), clock })
  }
  const parts = new PartWriter(partBytesMax, covered, deletesSent)
  /** Clients waiting for another's clock: client waited for -> (waiting client, clock needed). */
  const waiters = new Map<number, Array<{ client: number; clock: number }>>()
  const ready = [...cursors.keys()]
  for (let client = ready.pop(); client !== undefined; client = ready.pop()) {
    const cursor = cursors.get(client) as Cursor
    const before = cursor.clock
    while (cursor.index < cursor.structs.length) {
      const struct = cursor.structs[cursor.index] as Struct
      const offset = cursor.clock - struct.id.clock
      const missing = firstMissing(struct, offset, cursors)
      if (missing !== undefined) {
        const list = waiters.get(missing.client)
        if (list === undefined) waiters.set(missing.client, [{ client, clock: missing.clock }])
        else list.push({ client, clock: missing.clock })
        break
      }
      parts.add(client, cursor.clock, struct, offset)
      cursor.clock = struct.id.clock + struct.length
      cursor.index++
      if (parts.closed.length > 0) {
        yield* parts.take()
        if (stopped()) return yield* parts.cutHere()
      }
      if (++sincePause >= DIFF_STRUCTS_PER_PAUSE) {
        sincePause = 0
        yield null
        if (stopped()) return yield* parts.cutHere()
      }
    }
    if (cursor.clock === before) continue
    const list = waiters.get(client)
    if (list === undefined) continue
    const still = list.filter((w) => w.clock >= cursor.clock)
    for (const w of list) if (w.clock < cursor.clock) ready.push(w.client)
    if (still.length > 0) waiters.set(client, still)
    else waiters.delete(client)
  }
  // A reference no struct satisfies cannot happen in an integrated
  // document; should it, the rest goes in the last part as it is (the
  // receiver holds it back until it can, as it would one whole answer).
  for (const [client, cursor] of cursors)
    for (; cursor.index < cursor.structs.length; cursor.index++) {
      const struct = cursor.structs[cursor.index] as Struct
      parts.add(client, cursor.clock, struct, cursor.clock - struct.id.clock)
      cursor.clock = struct.id.clock + struct.length
      if (parts.closed.length > 0) {
        yield* parts.take()
        if (stopped()) return yield* parts.cutHere()
      }
    }
  yield* parts.finish(deletes, cut)
}

/**
 * The first item `struct` names (as written from `offset` on) that the
 * receiver will not hold after the structs sent so far: a client and the
 * clock it must reach. GC structs name nothing; a cut struct's origin is
 * its own client's previous clock, sent already.
 */
function firstMissing(
  struct: Struct,
  offset: number,
  cursors: ReadonlyMap<number, Cursor>,
): Y.ID | undefined {
  if (!(struct instanceof Y.Item)) return undefined
  const own = struct.id.client
  const origin = offset > 0 ? null : struct.origin
  if (lacks(origin, own, cursors)) return origin as Y.ID
  const right = struct.rightOrigin
  if (lacks(right, own, cursors)) return right as Y.ID
  // The parent is written (and needed) only when neither origin is.
  if (offset === 0 && struct.origin === null && right === null) {
    const parent = struct.parent as Y.AbstractType<unknown> | null
    const item = parent?._item ?? null
    if (item !== null && lacks(item.id, own, cursors)) return item.id
  }
  return undefined
}

/** Whether the receiver will lack `id` (another client's) after the structs sent so far. */
function lacks(id: Y.ID | null, own: number, cursors: ReadonlyMap<number, Cursor>): boolean {
  if (id === null || id.client === own) return false
  const cursor = cursors.get(id.client)
  return cursor !== undefined && cursor.clock <= id.clock
}

/**
 * Collects structs into parts of at most `partBytesMax` bytes (and keeps
 * `covered` at the clocks the parts taken bring: diffParts). Each struct
 * is written once, into an arena the parts reuse, and copied once, into
 * its part (an array of the part's exact size): a 1M-user answer is 340 MB,
 * and each more copy or growing buffer was as much garbage, whose backing
 * stores made V8 mark the whole heap again every 100 MB or so (issue 13).
 */
class PartWriter {
  /** Parts closed and not taken yet. */
  closed: Uint8Array[] = []
  /** The clock each client's run in each closed part ends at, in the order of `closed`. */
  private closedEnds: Array<Array<readonly [number, number]>> = []
  /** The delete ranges of each closed part, in the order of `closed`. */
  private closedDeletes: Ranges[] = []
  /** Parts closed in all. */
  private made = 0
  private runs = new Map<number, Run>()
  private bytes = HEADER_BYTES_MAX
  /** The open part's structs, in the order added (clients interleaved). */
  private readonly arena = new Y.UpdateEncoderV1()

  constructor(
    private readonly partBytesMax: number,
    private readonly covered?: Map<number, number>,
    private readonly deletesSent?: DeletesSent,
  ) {}

  /** Adds `struct` (written from `offset`), starting at `clock`, to the open part. */
  add(client: number, clock: number, struct: Struct, offset: number): void {
    const arena = this.arena.restEncoder
    const start = arena.cpos
    struct.write(this.arena, offset)
    if (arena.bufs.length > 0) flatten(arena)
    const end = arena.cpos
    const run = this.runs.get(client)
    const cost = end - start + (run === undefined ? HEADER_BYTES_MAX : 0)
    if (this.runs.size > 0 && this.bytes + cost > this.partBytesMax) {
      // The part closes without it; it opens the next one.
      this.close(new Map(), start)
      arena.cbuf.copyWithin(0, start, end)
      arena.cpos = end - start
      const runEnd = struct.id.clock + struct.length
      this.runs.set(client, { clock, end: runEnd, count: 1, ranges: [0, end - start] })
      this.bytes += end - start + HEADER_BYTES_MAX
      return
    }
    const runEnd = struct.id.clock + struct.length
    if (run === undefined)
      this.runs.set(client, { clock, end: runEnd, count: 1, ranges: [start, end] })
    else {
      run.count++
      run.end = runEnd
      // Structs of one client in a row lie side by side.
      const ranges = run.ranges
      if (ranges[ranges.length - 1] === start) ranges[ranges.length - 1] = end
      else ranges.push(start, end)
    }
    this.bytes += cost
  }

  /**
   * The parts closed since the last take, each yielded as `covered` (if
   * kept) is set to what it brings.
   */
  *take(): Generator<Uint8Array, void, undefined> {
    const parts = this.closed
    const ends = this.closedEnds
    const deletes = this.closedDeletes
    this.closed = []
    this.closedEnds = []
    this.closedDeletes = []
    for (let i = 0; i < parts.length; i++) {
      const covered = this.covered
      if (covered !== undefined)
        for (const [client, end] of ends[i] ?? [])
          if ((covered.get(client) ?? 0) < end) covered.set(client, end)
      const sent = this.deletesSent
      if (sent !== undefined)
        for (const [client, list] of deletes[i] ?? (new Map() as Ranges)) {
          let flat = sent.get(client)
          if (flat === undefined) sent.set(client, (flat = []))
          for (const [start, end] of list) flat.push(start, end)
        }
      yield parts[i] as Uint8Array
    }
  }

  /** Closes the open part, if it holds anything, and yields it (a cut: diffParts). */
  *cutHere(): Generator<Uint8Array, void, undefined> {
    if (this.runs.size > 0) this.close()
    yield* this.take()
  }

  /**
   * Closes the last parts, yielding them: the delete set appended to the
   * last when it fits, else after it, in parts of its own with a pause
   * after each and every {@link DIFF_STRUCTS_PER_PAUSE} ranges (a delete
   * set of 300k ranges took 44 ms in one step). A `cut` requested on the
   * way ends it (diffParts).
   */
  *finish(deletes: Ranges, cut?: CutSignal): Generator<Uint8Array | null, void, undefined> {
    let deleteBytes = 0
    for (const list of deletes.values()) deleteBytes += (list.length + 1) * DELETE_RANGE_BYTES_MAX
    if (this.bytes + deleteBytes <= this.partBytesMax) {
      this.close(deletes)
      yield* this.take()
      return
    }
    if (this.runs.size > 0) {
      this.close()
      yield* this.take()
      if (cutNow(cut)) return
    }
    yield* this.deleteParts(deletes, cut)
    // A step 2 goes out even with nothing in it.
    if (this.made === 0) {
      this.close()
      yield* this.take()
    }
  }

  /**
   * Closes the open part (with `deletes` as its delete set, none by
   * default): its runs, from the arena up to `upTo` (all of it by default),
   * copied once into one array of its exact size; the arena is free again.
   */
  private close(deletes: Ranges = new Map(), upTo = this.arena.restEncoder.cpos): void {
    const arena = this.arena.restEncoder.cbuf.subarray(0, upTo)
    const pieces: Uint8Array[] = []
    const header = encoding.createEncoder()
    encoding.writeVarUint(header, this.runs.size)
    // As Yjs writes them: higher clientIDs first.
    for (const [client, run] of [...this.runs].sort((a, b) => b[0] - a[0])) {
      encoding.writeVarUint(header, run.count)
      encoding.writeVarUint(header, client)
      encoding.writeVarUint(header, run.clock)
      pieces.push(encoding.toUint8Array(header))
      header.cpos = 0
      header.bufs.length = 0
      const { ranges } = run
      for (let i = 0; i < ranges.length; i += 2)
        pieces.push(arena.subarray(ranges[i], ranges[i + 1]))
    }
    // The count of runs, when there was none.
    pieces.push(encoding.toUint8Array(header))
    const tail = new Y.UpdateEncoderV1()
    writeDeleteRanges(tail, deletes)
    pieces.push(tail.toUint8Array())
    this.closed.push(joinBytes(pieces))
    this.closedEnds.push([...this.runs].map(([client, run]) => [client, run.end] as const))
    this.closedDeletes.push(deletes)
    this.made++
    this.runs = new Map()
    this.bytes = HEADER_BYTES_MAX
    this.arena.restEncoder.cpos = 0
  }

  /** The delete set in parts of no structs, each within the bound, yielded with pauses (see finish). */
  private *deleteParts(
    deletes: Ranges,
    cut?: CutSignal,
  ): Generator<Uint8Array | null, void, undefined> {
    let part = new Map<number, Array<readonly [number, number]>>()
    let bytes = HEADER_BYTES_MAX
    let sincePause = 0
    for (const [client, list] of deletes) {
      for (const range of list) {
        const cost = DELETE_RANGE_BYTES_MAX * (part.has(client) ? 1 : 2)
        if (bytes + cost > this.partBytesMax && part.size > 0) {
          this.close(part)
          part = new Map()
          bytes = HEADER_BYTES_MAX
          yield* this.take()
          yield null
          if (cutNow(cut)) return
        }
        const ranges = part.get(client)
        if (ranges === undefined) part.set(client, [range])
        else ranges.push(range)
        bytes += DELETE_RANGE_BYTES_MAX * (ranges === undefined ? 2 : 1)
        if (++sincePause >= DIFF_STRUCTS_PER_PAUSE) {
          sincePause = 0
          yield null
          if (cutNow(cut)) return
        }
      }
    }
    if (part.size > 0) {
      this.close(part)
      yield* this.take()
    }
  }
}

/** Whether `cut` was requested (noting that the generator stops for it). */
function cutNow(cut: CutSignal | undefined): boolean {
  if (cut?.requested !== true) return false
  cut.stopped = true
  return true
}

/**
 * Makes `encoder`'s bytes one buffer again (lib0 starts a new one when the
 * current is full), with room to grow: offsets into it stay valid.
 */
function flatten(encoder: encoding.Encoder): void {
  const all = encoding.toUint8Array(encoder)
  const buffer = new Uint8Array(all.byteLength * 2)
  buffer.set(all)
  encoder.bufs.length = 0
  encoder.cbuf = buffer
  encoder.cpos = all.byteLength
}
