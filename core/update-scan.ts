/**
 * A strict scan of a Yjs v1 update that reads only its shape: per client,
 * the clock range its structs cover, and the ranges its delete set names.
 *
 * `Y.decodeUpdate` answers the same question but builds every struct and
 * every content value on the way (for a full roster, a third of a second
 * spent on objects that are thrown away at once). This scan walks the same
 * grammar and skips over content values instead, without allocating them.
 *
 * It is also the validator that stands between the network and
 * `Y.applyUpdate`: Yjs can integrate part of an update and then throw, so a
 * replica checks the bytes first. Hence every read is bounds-checked, every
 * string must be UTF-8 that Yjs's (fatal) decoder accepts, unknown struct
 * and content kinds and bit patterns no Yjs encoder writes are refused, and
 * so are trailing bytes. Where well-formedness depends on what Yjs does with
 * a value rather than on the grammar (JSON text, sub-document options,
 * values nested deeper than this scan vouches for), the answer comes from
 * `Y.decodeUpdate` itself, after the strict walk has passed.
 *
 * The grammar (lib0 encoding, `UpdateEncoderV1`):
 *
 *     update     = varUint(#sections) section* deleteSet
 *     section    = varUint(#structs) varUint(client) varUint(clock) struct*
 *     struct     = 0 varUint(len)                        GC
 *                | 10 varUint(len)                       Skip
 *                | info item                             info & 31 in 1..9
 *     item       = [id(origin)] [id(rightOrigin)] [parent [string(parentSub)]] content
 *     parent     = varUint(1) string(rootName) | varUint(0) id
 *     deleteSet  = varUint(#clients) (varUint(client) varUint(#ranges) (varUint(clock) varUint(len))*)*
 */
import * as Y from 'yjs'

/** What an update covers: per client, its first clock and one past its last; the ranges it deletes. */
export interface UpdateRanges {
  /** Per client: the first clock of the update's structs (Skips included). */
  readonly from: Map<number, number>
  /** Per client: one past the last clock of the update's structs. */
  readonly to: Map<number, number>
  /** Per client: the [clock, clock + len) ranges of the delete set, in the update's order. */
  readonly deletes: Map<number, Array<readonly [number, number]>>
}

/** The update's bytes do not follow the grammar (or hold something Yjs refuses). */
export class UpdateScanError extends Error {
  constructor(message: string, at: number) {
    super(`${message} (at byte ${at})`)
    this.name = 'UpdateScanError'
  }
}

/**
 * Nesting of `Any` values (objects, arrays) this scan vouches for. lib0
 * reads them recursively, so a deep enough value makes Yjs itself throw
 * (stack overflow); past this depth the verdict is left to Yjs.
 */
const ANY_DEPTH_VOUCHED_MAX = 64

const STRUCT_GC = 0
const STRUCT_SKIP = 10
const CONTENT_DELETED = 1
const CONTENT_JSON = 2
const CONTENT_BINARY = 3
const CONTENT_STRING = 4
const CONTENT_EMBED = 5
const CONTENT_FORMAT = 6
const CONTENT_TYPE = 7
const CONTENT_ANY = 8
const CONTENT_DOC = 9
const INFO_ORIGIN = 0x80
const INFO_RIGHT_ORIGIN = 0x40
const INFO_PARENT_SUB = 0x20
const INFO_CONTENT_REF = 0x1f
/** Type refs of `ContentType` (YArray .. YXmlText); 3 and 5 carry a node name. */
const TYPE_REF_MAX = 6
const TYPE_REF_XML_ELEMENT = 3
const TYPE_REF_XML_HOOK = 5

/**
 * Scans a Yjs v1 update. Throws {@link UpdateScanError} on malformed bytes
 * (and whatever `Y.decodeUpdate` throws where the scan defers to it);
 * otherwise returns exactly what {@link decodeUpdateRanges} returns.
 */
export function scanUpdate(update: Uint8Array): UpdateRanges {
  const reader = new Reader(update)
  const { from, to } = reader.structs()
  const deletes = reader.deleteSet()
  if (reader.pos !== update.length) reader.fail('trailing bytes after the delete set')
  // Yjs decides these itself (JSON.parse, sub-document options, deep
  // nesting): its decoder must accept them too, and then its answer is used.
  if (reader.deferred) return decodeUpdateRanges(update)
  return { from, to, deletes }
}

/**
 * The same answer through `Y.decodeUpdate`, which builds every struct: the
 * reference {@link scanUpdate} is checked against, and its fallback.
 */
export function decodeUpdateRanges(update: Uint8Array): UpdateRanges {
  const decoded = Y.decodeUpdate(update)
  const from = new Map<number, number>()
  const to = new Map<number, number>()
  for (const struct of decoded.structs) {
    const { client, clock } = struct.id
    if (!from.has(client) || clock < (from.get(client) ?? 0)) from.set(client, clock)
    to.set(client, Math.max(to.get(client) ?? 0, clock + struct.length))
  }
  const deletes = new Map<number, Array<readonly [number, number]>>()
  for (const [client, ranges] of decoded.ds.clients) {
    deletes.set(
      client,
      ranges.map((r) => [r.clock, r.clock + r.len] as const),
    )
  }
  return { from, to, deletes }
}

/** A cursor over the update; every read checks the bounds first. */
class Reader {
  pos = 0
  /** Set when part of the update is for Yjs to judge (see scanUpdate). */
  deferred = false
  /** Values left to skip per open `Any` container, innermost last (reused). */
  private readonly left: number[] = []
  /** Whether each open container is an object (a key before each value). */
  private readonly isObject: boolean[] = []

  constructor(private readonly bytes: Uint8Array) {}

  fail(message: string, at = this.pos): never {
    throw new UpdateScanError(message, at)
  }

  /** The struct sections: per client, the first clock and one past the last. */
  structs(): { from: Map<number, number>; to: Map<number, number> } {
    const from = new Map<number, number>()
    const to = new Map<number, number>()
    const sections = this.varUint()
    for (let s = 0; s < sections; s++) {
      const count = this.varUint()
      const client = this.varUint()
      const first = this.varUint()
      let clock = first
      for (let i = 0; i < count; i++) {
        const at = this.pos
        const length = this.struct()
        // Yjs makes none; one names a clientID while bringing nothing (a
        // review: counted against another writer's clientIDs, unsigned).
        if (length === 0) this.fail('a struct of length 0', at)
        clock += length
        if (clock > Number.MAX_SAFE_INTEGER) this.fail('clock past the safe integer range')
      }
      // A section without structs adds nothing (Yjs yields no struct for it).
      if (count === 0) continue
      const known = from.get(client)
      if (known === undefined || first < known) from.set(client, first)
      to.set(client, Math.max(to.get(client) ?? 0, clock))
    }
    return { from, to }
  }

  /** One struct; returns its length in clock units. */
  private struct(): number {
    const at = this.pos
    const info = this.byte()
    // Yjs reads any info with no content ref as GC; its encoders write 0.
    if (info === STRUCT_GC || info === STRUCT_SKIP) return this.varUint()
    const ref = info & INFO_CONTENT_REF
    if (ref === STRUCT_GC || ref >= STRUCT_SKIP) this.fail(`unknown struct info ${info}`, at)
    if ((info & INFO_ORIGIN) !== 0) this.id()
    if ((info & INFO_RIGHT_ORIGIN) !== 0) this.id()
    if ((info & (INFO_ORIGIN | INFO_RIGHT_ORIGIN)) === 0) {
      const parentAt = this.pos
      const parentIsRoot = this.varUint()
      if (parentIsRoot === 1) this.string()
      else if (parentIsRoot === 0) this.id()
      else this.fail(`unknown parent info ${parentIsRoot}`, parentAt)
      if ((info & INFO_PARENT_SUB) !== 0) this.string()
    }
    return this.content(ref)
  }

  /** An item's content, skipped; returns its length in clock units. */
  private content(ref: number): number {
    switch (ref) {
      case CONTENT_DELETED:
        return this.varUint()
      case CONTENT_BINARY:
        this.skip(this.varUint())
        return 1
      case CONTENT_STRING:
        return this.string()
      case CONTENT_TYPE: {
        const at = this.pos
        const typeRef = this.varUint()
        if (typeRef > TYPE_REF_MAX) this.fail(`unknown type ref ${typeRef}`, at)
        if (typeRef === TYPE_REF_XML_ELEMENT || typeRef === TYPE_REF_XML_HOOK) this.string()
        return 1
      }
      case CONTENT_ANY: {
        const count = this.varUint()
        for (let i = 0; i < count; i++) this.any()
        return count
      }
      case CONTENT_JSON: {
        const count = this.varUint()
        for (let i = 0; i < count; i++) this.string()
        this.deferred = true
        return count
      }
      case CONTENT_EMBED:
        this.string()
        this.deferred = true
        return 1
      case CONTENT_FORMAT:
        this.string()
        this.string()
        this.deferred = true
        return 1
      case CONTENT_DOC:
        this.string()
        this.any()
        this.deferred = true
        return 1
      default:
        return this.fail(`unknown content ref ${ref}`)
    }
  }

  /** The delete set: per client, its ranges as [clock, end). */
  deleteSet(): Map<number, Array<readonly [number, number]>> {
    const deletes = new Map<number, Array<readonly [number, number]>>()
    const clients = this.varUint()
    for (let c = 0; c < clients; c++) {
      const client = this.varUint()
      const count = this.varUint()
      if (count === 0) continue
      let ranges = deletes.get(client)
      if (ranges === undefined) deletes.set(client, (ranges = []))
      for (let i = 0; i < count; i++) {
        const clock = this.varUint()
        const end = clock + this.varUint()
        if (end > Number.MAX_SAFE_INTEGER) this.fail('delete range past the safe integer range')
        ranges.push([clock, end])
      }
    }
    return deletes
  }

  /**
   * Skips one lib0 `Any` value (tags 116..127), nested containers included,
   * with an explicit stack: a hostile nesting depth costs memory bounded by
   * the update's size, never the call stack.
   */
  private any(): void {
    const left = this.left
    const isObject = this.isObject
    let depth = 0
    left[0] = 1
    isObject[0] = false
    while (depth >= 0) {
      if (left[depth] === 0) {
        depth--
        continue
      }
      left[depth] = (left[depth] as number) - 1
      if (isObject[depth] === true) this.string()
      const at = this.pos
      const tag = this.byte()
      switch (tag) {
        case 127: // undefined
        case 126: // null
        case 121: // false
        case 120: // true
          break
        case 125: // varInt
          this.varInt()
          break
        case 124: // float32
          this.skip(4)
          break
        case 123: // float64
        case 122: // bigint64
          this.skip(8)
          break
        case 119: // string
          this.string()
          break
        case 116: // Uint8Array
          this.skip(this.varUint())
          break
        // An object (a count, then key-value pairs) or an array (a count,
        // then values): its values are skipped by the loop, one level down.
        case 118:
        case 117: {
          const count = this.varUint()
          if (count === 0) break
          depth++
          if (depth > ANY_DEPTH_VOUCHED_MAX) this.deferred = true
          left[depth] = count
          isObject[depth] = tag === 118
          break
        }
        default:
          this.fail(`unknown value tag ${tag}`, at)
      }
    }
  }

  private byte(): number {
    const bytes = this.bytes
    if (this.pos >= bytes.length) this.fail('unexpected end of update')
    return bytes[this.pos++] as number
  }

  private skip(count: number): void {
    if (count > this.bytes.length - this.pos) this.fail(`${count} bytes run past the end`)
    this.pos += count
  }

  /** lib0's varUint, refused where it is not a safe integer. */
  private varUint(): number {
    const bytes = this.bytes
    const start = this.pos
    let num = 0
    let mult = 1
    while (this.pos < bytes.length) {
      const r = bytes[this.pos++] as number
      num += (r & 0x7f) * mult
      if (num > Number.MAX_SAFE_INTEGER) this.fail('integer out of range', start)
      if (r < 0x80) return num
      mult *= 128
    }
    return this.fail('unexpected end of update', start)
  }

  /** lib0's signed varInt (6 bits and a sign in the first byte), skipped. */
  private varInt(): void {
    const bytes = this.bytes
    const start = this.pos
    let r = this.byte()
    if (r < 0x80) return
    let num = r & 0x3f
    let mult = 64
    while (this.pos < bytes.length) {
      r = bytes[this.pos++] as number
      num += (r & 0x7f) * mult
      if (r < 0x80) return
      // lib0 refuses the next byte once the value is past the safe range.
      if (num > Number.MAX_SAFE_INTEGER) this.fail('integer out of range', start)
      mult *= 128
    }
    this.fail('unexpected end of update', start)
  }

  private id(): void {
    this.varUint()
    this.varUint()
  }

  /**
   * Skips a length-prefixed string; returns its length in UTF-16 code units
   * (what Yjs counts for a string's clock length). Refuses bytes that
   * `TextDecoder('utf-8', { fatal: true })` refuses.
   */
  private string(): number {
    const start = this.pos
    const length = this.varUint()
    if (length > this.bytes.length - this.pos) this.fail('string runs past the end', start)
    const begin = this.pos
    this.pos += length
    const units = utf16Units(this.bytes, begin, this.pos)
    if (units < 0) this.fail('string is not valid UTF-8', start)
    return units
  }
}

/**
 * The UTF-16 length of the UTF-8 bytes in [start, end), or -1 when they are
 * not well-formed UTF-8 (the WHATWG decoder's rules: no overlong forms, no
 * surrogates, nothing past U+10FFFF, no truncated sequence).
 */
function utf16Units(bytes: Uint8Array, start: number, end: number): number {
  let units = 0
  let i = start
  while (i < end) {
    const b = bytes[i] as number
    if (b < 0x80) {
      i++
      units++
      continue
    }
    if (b < 0xc2 || b > 0xf4) return -1
    if (b < 0xe0) {
      if (i + 1 >= end || !isContinuation(bytes[i + 1])) return -1
      i += 2
      units++
      continue
    }
    // The second byte's range excludes overlong forms, surrogates (ED A0..)
    // and code points past U+10FFFF (F4 90..).
    const b1 = bytes[i + 1] as number
    const low = b === 0xe0 ? 0xa0 : b === 0xf0 ? 0x90 : 0x80
    const high = b === 0xed ? 0x9f : b === 0xf4 ? 0x8f : 0xbf
    if (b < 0xf0) {
      if (i + 2 >= end || b1 < low || b1 > high || !isContinuation(bytes[i + 2])) return -1
      i += 3
      units++
      continue
    }
    if (i + 3 >= end || b1 < low || b1 > high) return -1
    if (!isContinuation(bytes[i + 2]) || !isContinuation(bytes[i + 3])) return -1
    i += 4
    units += 2
  }
  return units
}

function isContinuation(byte: number | undefined): boolean {
  return byte !== undefined && (byte & 0xc0) === 0x80
}
