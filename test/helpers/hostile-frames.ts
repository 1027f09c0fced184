/**
 * Hostile messages for the adversarial suites (test/hostile-frames.test.ts):
 * seeded generators of bytes a peer must survive without a crash and
 * without a change of state. Each message is one transport message (a
 * WebSocket message, or the body of a libp2p message frame).
 *
 * The generators stay clear of bytes that a correct peer would accept as a
 * legitimate write: every update they build is invalid in several
 * independent ways (a forbidden root, and an entry that is not a device
 * entry), so that the one or two bytes a mutation changes cannot turn it
 * into a valid write that would change the state for good reason.
 */
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import { encodeMessage } from '../../core/protocol.js'
import type { Prng } from '../../sim/prng.js'

/** One hostile message and what kind of attack it is (for the test's summary). */
export interface HostileMessage {
  readonly kind: string
  readonly bytes: Uint8Array
}

/** Varints a decoder must not trust: 2^32, 2^53, beyond 2^53, and varints that do not end. */
export const HOSTILE_VARINTS: readonly Uint8Array[] = [
  varUint(2 ** 32),
  varUint(2 ** 32 - 1),
  varUint(2 ** 53),
  varUint(2 ** 53 - 1),
  // 2^63 written by hand: lib0 writes at most 2^53 exactly.
  Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01),
  // Eleven and twenty bytes: longer than any varint of a 64-bit number.
  Uint8Array.of(...new Array<number>(10).fill(0xff), 0x7f),
  new Uint8Array(20).fill(0xff),
]

/** The varUint encoding of `n` (lib0's). */
export function varUint(n: number): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, n)
  return encoding.toUint8Array(e)
}

/** Concatenates byte arrays. */
export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.byteLength
  }
  return out
}

/** `length` random bytes. */
export function randomBytes(prng: Prng, length: number): Uint8Array {
  const out = new Uint8Array(length)
  for (let i = 0; i < length; i++) out[i] = prng.nextUint32() & 0xff
  return out
}

/**
 * An update that is refused on several counts at once: it writes into the
 * server's part (forbidden to any device) an entry that is not a device
 * entry, and a nested type (forbidden everywhere).
 */
export function forbiddenUpdate(): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = 0x4242
  doc.getMap('u:server').set('u-forged', { e: 'x', f: 'not-an-object', s: 5 })
  doc.getMap('u:server').set('u-nested', new Y.Map())
  return Y.encodeStateAsUpdate(doc)
}

/**
 * Yjs content refs (the low five bits of a struct's info byte): 0 is GC,
 * 10 is Skip, 1..9 are item contents; the rest do not exist.
 */
const CONTENT_REFS = 32

/** A hand-made update: one struct group of one struct whose content is garbage. */
function garbageStruct(prng: Prng): Uint8Array {
  const ref = prng.int(1, CONTENT_REFS - 1)
  // Info: the content ref, with origin / right origin / parentSub bits at random.
  const info = ref | (prng.int(0, 7) << 5)
  return concat(
    varUint(1), // one struct group
    varUint(1), // one struct
    varUint(prng.int(1, 2 ** 31)), // client
    varUint(0), // clock
    Uint8Array.of(info),
    randomBytes(prng, prng.int(0, 24)),
  )
}

/** Update payloads a decoder must refuse (or find harmless). */
function garbageUpdate(prng: Prng, forbidden: Uint8Array): { kind: string; payload: Uint8Array } {
  const huge = (): Uint8Array => prng.pick(HOSTILE_VARINTS)
  switch (prng.int(0, 9)) {
    case 0:
      return { kind: 'update:random', payload: randomBytes(prng, prng.int(0, 128)) }
    case 1:
      return { kind: 'update:mutated', payload: mutate(prng, forbidden) }
    case 2:
      return {
        kind: 'update:truncated',
        payload: forbidden.subarray(0, prng.int(0, forbidden.byteLength - 1)),
      }
    case 3:
      return { kind: 'update:huge-group-count', payload: concat(huge(), randomBytes(prng, 8)) }
    case 4:
      return {
        kind: 'update:huge-struct-count',
        payload: concat(varUint(1), huge(), varUint(7), varUint(0), randomBytes(prng, 8)),
      }
    case 5:
      return { kind: 'update:garbage-content', payload: garbageStruct(prng) }
    case 6:
      // A string content whose length runs past the end of the update.
      return {
        kind: 'update:string-past-end',
        payload: concat(
          varUint(1),
          varUint(1),
          varUint(99),
          varUint(0),
          Uint8Array.of(4 | 0x20), // ContentString with a parentSub... and no parent info
          huge(),
          Uint8Array.of(0x61),
        ),
      }
    case 7:
      // Any content claiming 2^32 values.
      return {
        kind: 'update:any-count',
        payload: concat(varUint(1), varUint(1), varUint(99), varUint(0), Uint8Array.of(8), huge()),
      }
    case 8:
      // No structs; a delete set naming 2^32 clients, or a huge range.
      return {
        kind: 'update:delete-set',
        payload: prng.chance(0.5)
          ? concat(varUint(0), huge(), randomBytes(prng, 4))
          : concat(varUint(0), varUint(1), varUint(99), varUint(1), varUint(0), huge()),
      }
    default:
      return { kind: 'update:deep-nesting', payload: deepNesting(prng.int(1_000, 100_000)) }
  }
}

/** Flips one to three bytes of `bytes` (a copy). */
function mutate(prng: Prng, bytes: Uint8Array): Uint8Array {
  const out = Uint8Array.from(bytes)
  for (let n = prng.int(1, 2); n > 0; n--) out[prng.int(0, out.length - 1)] = prng.int(0, 255)
  return out
}

/**
 * An update whose one item holds an Any value nested `depth` arrays deep
 * (lib0 reads Any recursively): written by hand, since encoding it with
 * lib0 would recurse as deep. It writes into the server's part, so even a
 * decoder that survives it must refuse it.
 */
export function deepNesting(depth: number): Uint8Array {
  const root = new TextEncoder().encode('u:server')
  const key = new TextEncoder().encode('u-deep')
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 1) // one struct group
  encoding.writeVarUint(e, 1) // one struct
  encoding.writeVarUint(e, 0x5151) // client
  encoding.writeVarUint(e, 0) // clock
  // ContentAny (8), with parentSub (0x20); no origins, so the parent follows.
  encoding.writeUint8(e, 8 | 0x20)
  encoding.writeVarUint(e, 1) // parent is a root type named by string
  encoding.writeVarUint8Array(e, root)
  encoding.writeVarUint8Array(e, key)
  encoding.writeVarUint(e, 1) // one Any value
  const head = encoding.toUint8Array(e)
  // lib0 Any: 117 is an array, then its length; 127 is undefined.
  const nest = new Uint8Array(depth * 2 + 1)
  for (let i = 0; i < depth; i++) nest.set([117, 1], i * 2)
  nest[depth * 2] = 127
  return concat(head, nest, varUint(0)) // and an empty delete set
}

/** State vectors a peer must refuse or survive. */
function garbageStateVector(prng: Prng): { kind: string; payload: Uint8Array } {
  const huge = (): Uint8Array => prng.pick(HOSTILE_VARINTS)
  switch (prng.int(0, 4)) {
    case 0:
      return { kind: 'step1:random', payload: randomBytes(prng, prng.int(0, 64)) }
    case 1:
      return { kind: 'step1:huge-count', payload: concat(huge(), randomBytes(prng, 4)) }
    case 2:
      // A client the peer does not have, at a clock far ahead.
      return {
        kind: 'step1:huge-clock',
        payload: concat(varUint(1), varUint(prng.int(1, 2 ** 31)), huge()),
      }
    case 3:
      return {
        kind: 'step1:count-past-end',
        payload: concat(varUint(prng.int(2, 1_000)), varUint(7), varUint(1)),
      }
    default:
      return {
        kind: 'step1:trailing',
        payload: concat(varUint(1), varUint(7), varUint(1), randomBytes(prng, prng.int(1, 16))),
      }
  }
}

/** The kinds {@link hostileMessage} draws from, with their weights. */
const KINDS: ReadonlyArray<
  readonly [number, (prng: Prng, forbidden: Uint8Array) => HostileMessage]
> = [
  [2, (prng) => ({ kind: 'random', bytes: randomBytes(prng, prng.int(0, 64)) })],
  [1, (prng) => ({ kind: 'random-long', bytes: randomBytes(prng, prng.int(65, 4_096)) })],
  [
    2,
    (prng, forbidden) => {
      const valid = prng.pick([
        encodeMessage({ type: 'sync-update', update: forbidden }),
        encodeMessage({ type: 'sync-step2', update: forbidden }),
        encodeMessage({
          type: 'sync-step1',
          stateVector: concat(varUint(1), varUint(7), varUint(3)),
        }),
        encodeMessage({ type: 'error', code: 'INVALID_RECORD', message: 'you are wrong' }),
        encodeMessage({ type: 'awareness', payload: randomBytes(prng, 16) }),
      ])
      return { kind: 'truncated', bytes: valid.subarray(0, prng.int(0, valid.byteLength - 1)) }
    },
  ],
  [
    1,
    (prng) => {
      // A huge varint in the type, the sync subtype or the payload length.
      const huge = prng.pick(HOSTILE_VARINTS)
      const where = prng.int(0, 2)
      const bytes =
        where === 0
          ? concat(huge, randomBytes(prng, 4))
          : where === 1
            ? concat(varUint(0), huge, randomBytes(prng, 4))
            : concat(varUint(0), varUint(prng.int(0, 2)), huge, randomBytes(prng, 4))
      return { kind: `varint@${['type', 'subtype', 'length'][where]}`, bytes }
    },
  ],
  [
    1,
    (prng) => {
      // A payload length past the end of the message.
      const declared = prng.pick([10, 1_000, 2 ** 31, 2 ** 32])
      return {
        kind: 'length-past-end',
        bytes: concat(varUint(0), varUint(prng.int(0, 2)), varUint(declared), randomBytes(prng, 9)),
      }
    },
  ],
  [
    1,
    (prng) => {
      const type = prng.int(0, 255)
      return {
        kind: 'type-any',
        bytes: concat(varUint(type), randomBytes(prng, prng.int(0, 16))),
      }
    },
  ],
  [
    1,
    (prng) => {
      const sub = prng.int(0, 255)
      const payload = randomBytes(prng, prng.int(0, 16))
      return {
        kind: 'subtype-any',
        bytes: concat(varUint(0), varUint(sub), varUint(payload.byteLength), payload),
      }
    },
  ],
  [
    2,
    (prng) => {
      const { kind, payload } = garbageStateVector(prng)
      return { kind, bytes: encodeMessage({ type: 'sync-step1', stateVector: payload }) }
    },
  ],
  [
    4,
    (prng, forbidden) => {
      const { kind, payload } = garbageUpdate(prng, forbidden)
      const step2 = prng.chance(0.5)
      return {
        kind: `${step2 ? 'step2' : 'update'}/${kind}`,
        bytes: encodeMessage({ type: step2 ? 'sync-step2' : 'sync-update', update: payload }),
      }
    },
  ],
]

const WEIGHT_TOTAL = KINDS.reduce((n, [w]) => n + w, 0)

/** One hostile message drawn from `prng`; `forbidden` is {@link forbiddenUpdate}'s bytes. */
export function hostileMessage(prng: Prng, forbidden: Uint8Array): HostileMessage {
  let draw = prng.int(0, WEIGHT_TOTAL - 1)
  for (const [weight, make] of KINDS) {
    if (draw < weight) return make(prng, forbidden)
    draw -= weight
  }
  throw new Error('unreachable')
}

/**
 * Every top-level message type 0..255 and every sync subtype 0..255, each
 * with an empty body and with a few random bytes: the exhaustive sweep that
 * the random draw may miss. A type of 128 or more is written both as its
 * varUint and as one raw byte (an unfinished varint).
 */
export function typeSweep(prng: Prng): HostileMessage[] {
  const out: HostileMessage[] = []
  for (let t = 0; t < 256; t++) {
    out.push({ kind: 'sweep:type', bytes: varUint(t) })
    out.push({ kind: 'sweep:type', bytes: concat(varUint(t), randomBytes(prng, 8)) })
    if (t >= 128) out.push({ kind: 'sweep:type-raw-byte', bytes: Uint8Array.of(t) })
  }
  for (let s = 0; s < 256; s++) {
    out.push({ kind: 'sweep:subtype', bytes: concat(varUint(0), varUint(s)) })
    const payload = randomBytes(prng, 8)
    out.push({
      kind: 'sweep:subtype',
      bytes: concat(varUint(0), varUint(s), varUint(payload.byteLength), payload),
    })
  }
  return out
}

/** Huge strings where the grammar has strings: 1 MB error code and message, and awareness. */
export function hugeStrings(): HostileMessage[] {
  const mb = 'x'.repeat(1024 * 1024)
  return [
    { kind: 'huge:error', bytes: encodeMessage({ type: 'error', code: mb, message: mb }) },
    {
      kind: 'huge:awareness',
      bytes: encodeMessage({ type: 'awareness', payload: new Uint8Array(2 ** 20) }),
    },
    { kind: 'huge:auth', bytes: encodeMessage({ type: 'auth', payload: new Uint8Array(2 ** 20) }) },
    {
      kind: 'huge:deep-nesting',
      bytes: encodeMessage({ type: 'sync-update', update: deepNesting(500_000) }),
    },
  ]
}
