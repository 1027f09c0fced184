/**
 * The strict update scan (core/update-scan.ts) against `Y.decodeUpdate`:
 * on updates from random document edits it gives exactly the old answer;
 * on truncated, flipped and random bytes it either throws or gives the
 * answer Yjs gives (never a different one, never an accepted update Yjs
 * refuses); hand-built updates pin the cases the scan treats specially.
 *
 * Replay a failure: `ROSTERSYNC_SEED=<seed> npx vitest run test/update-scan.test.ts`
 * (add `ROSTERSYNC_PATH=<path>` from the report). More cases locally:
 * `ROSTERSYNC_PROPERTY_RUNS=2000`.
 */
import fc from 'fast-check'
import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import {
  decodeUpdateRanges,
  scanUpdate,
  UpdateScanError,
  type UpdateRanges,
} from '../core/update-scan.js'
import { envInt, seedFromEnv } from './helpers/property-seed.js'

const seed = seedFromEnv()
const path = process.env.ROSTERSYNC_PATH
const numRuns = envInt('ROSTERSYNC_PROPERTY_RUNS') ?? 150
// Printed up front so that a run killed by a timeout can still be replayed.
console.log(
  `update-scan: seed ${seed}, ${numRuns} runs — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/update-scan.test.ts`,
)
const params = { seed, numRuns, ...(path === undefined ? {} : { path }) }

/** Maps as entry lists, so that order differences show too. */
const plain = (r: UpdateRanges) => ({
  from: [...r.from],
  to: [...r.to],
  deletes: [...r.deletes],
})

type Outcome = { ok: true; ranges: UpdateRanges } | { ok: false; error: unknown }
const attempt = (run: () => UpdateRanges): Outcome => {
  try {
    return { ok: true, ranges: run() }
  } catch (error) {
    return { ok: false, error }
  }
}

/**
 * The safety property on arbitrary bytes: when the scan accepts, Yjs
 * accepts and agrees; when the scan throws something other than its own
 * error, that came from Yjs (where the scan defers), so Yjs throws too.
 * Returns whether the scan accepted.
 */
function agreesWithYjs(bytes: Uint8Array): boolean {
  const scanned = attempt(() => scanUpdate(bytes))
  const decoded = attempt(() => decodeUpdateRanges(bytes))
  if (scanned.ok) {
    expect(decoded.ok, 'the scan accepted bytes Y.decodeUpdate refuses').toBe(true)
    if (decoded.ok) expect(plain(scanned.ranges)).toEqual(plain(decoded.ranges))
    return true
  }
  if (!(scanned.error instanceof UpdateScanError)) expect(decoded.ok).toBe(false)
  return false
}

// ------------------------------------------------------------ random documents

const stringArb = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 12 }),
  fc.string({ unit: 'grapheme', maxLength: 6 }),
)

/** Values Yjs stores as `ContentAny` (every lib0 `Any` tag). */
const anyArb: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.constant(undefined),
    fc.boolean(),
    fc.integer(),
    fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
    fc.double(),
    fc.float(),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    stringArb,
    fc.uint8Array({ maxLength: 8 }),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(stringArb, tie('value'), { maxKeys: 4, noNullPrototype: true }),
  ),
})).value

type Edit =
  | { kind: 'map-set'; doc: number; key: string; value: unknown }
  | { kind: 'map-delete'; doc: number; key: string }
  | { kind: 'map-binary'; doc: number; key: string; value: Uint8Array }
  | { kind: 'nested-map'; doc: number; key: string; inner: string; value: unknown }
  | { kind: 'array-insert'; doc: number; at: number; values: unknown[] }
  | { kind: 'array-delete'; doc: number; at: number; count: number }
  | { kind: 'text-insert'; doc: number; at: number; text: string }
  | { kind: 'text-delete'; doc: number; at: number; count: number }
  | { kind: 'text-format'; doc: number; at: number; count: number; bold: boolean }
  | { kind: 'text-embed'; doc: number; at: number; value: string }
  | { kind: 'xml'; doc: number; element: string; text: string }
  | { kind: 'subdoc'; doc: number; key: string }
  | { kind: 'sync'; doc: number; to: number }
  | { kind: 'take'; doc: number; sinceOf: number }
  | { kind: 'merge'; picks: number[] }
  | { kind: 'merge-gaps'; doc: number }

const docIndex = fc.nat(2)
const keyArb = fc.constantFrom('a', 'b', 'c', 'user:1', 'é', '')
const often = <T>(arbitrary: fc.Arbitrary<T>) => ({ arbitrary, weight: 3 })
const editArb: fc.Arbitrary<Edit> = fc.oneof(
  often(fc.record({ kind: fc.constant('map-set'), doc: docIndex, key: keyArb, value: anyArb })),
  often(fc.record({ kind: fc.constant('map-delete'), doc: docIndex, key: keyArb })),
  fc.record({
    kind: fc.constant('map-binary'),
    doc: docIndex,
    key: keyArb,
    value: fc.uint8Array({ maxLength: 16 }),
  }),
  often(
    fc.record({
      kind: fc.constant('nested-map'),
      doc: docIndex,
      key: keyArb,
      inner: keyArb,
      value: anyArb,
    }),
  ),
  fc.record({
    kind: fc.constant('array-insert'),
    doc: docIndex,
    at: fc.nat(),
    values: fc.array(anyArb, { minLength: 1, maxLength: 3 }),
  }),
  fc.record({ kind: fc.constant('array-delete'), doc: docIndex, at: fc.nat(), count: fc.nat(3) }),
  fc.record({ kind: fc.constant('text-insert'), doc: docIndex, at: fc.nat(), text: stringArb }),
  fc.record({ kind: fc.constant('text-delete'), doc: docIndex, at: fc.nat(), count: fc.nat(4) }),
  fc.record({
    kind: fc.constant('text-format'),
    doc: docIndex,
    at: fc.nat(),
    count: fc.nat(4),
    bold: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('text-embed'), doc: docIndex, at: fc.nat(), value: stringArb }),
  fc.record({ kind: fc.constant('xml'), doc: docIndex, element: keyArb, text: stringArb }),
  fc.record({ kind: fc.constant('subdoc'), doc: docIndex, key: keyArb }),
  fc.record({ kind: fc.constant('sync'), doc: docIndex, to: docIndex }),
  fc.record({ kind: fc.constant('take'), doc: docIndex, sinceOf: docIndex }),
  fc.record({ kind: fc.constant('merge'), picks: fc.array(fc.nat(), { maxLength: 4 }) }),
  fc.record({ kind: fc.constant('merge-gaps'), doc: docIndex }),
)

const scenarioArb = fc.record({
  gc: fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
  edits: fc.array(editArb, { minLength: 1, maxLength: 40 }),
})

/** Runs the edits on three documents; returns every update seen on the way. */
function updatesOf(scenario: { gc: boolean[]; edits: Edit[] }): Uint8Array[] {
  const docs = scenario.gc.map((gc, i) => {
    const doc = new Y.Doc({ gc })
    doc.clientID = i + 1
    return doc
  })
  const updates: Uint8Array[] = []
  /** Per document, the updates of its own edits. */
  const own: Uint8Array[][] = docs.map(() => [])
  docs.forEach((doc, i) =>
    doc.on('update', (update: Uint8Array, _origin: unknown, _doc: Y.Doc, tr: Y.Transaction) => {
      updates.push(update)
      if (tr.local) own[i]?.push(update)
    }),
  )
  const docOf = (i: number) => docs[i % docs.length] as Y.Doc
  for (const edit of scenario.edits) {
    if (edit.kind === 'merge-gaps') {
      // Every other update of one client: the gaps become Skips.
      const mine = own[edit.doc % docs.length] ?? []
      if (mine.length >= 3) updates.push(Y.mergeUpdates(mine.filter((_, i) => i % 2 === 0)))
      continue
    }
    if (edit.kind === 'merge') {
      // Merging some of the updates leaves gaps, which Yjs fills with Skips.
      const picked = edit.picks.map((p) => updates[p % Math.max(updates.length, 1)])
      const some = picked.filter((u): u is Uint8Array => u !== undefined)
      if (some.length > 0) updates.push(Y.mergeUpdates(some))
      continue
    }
    applyEdit(docOf(edit.doc), edit, docOf, updates)
  }
  for (const doc of docs) updates.push(Y.encodeStateAsUpdate(doc))
  return updates
}

function applyEdit(
  doc: Y.Doc,
  edit: Exclude<Edit, { kind: 'merge' | 'merge-gaps' }>,
  docOf: (i: number) => Y.Doc,
  updates: Uint8Array[],
): void {
  const map = doc.getMap<unknown>('map')
  const array = doc.getArray<unknown>('array')
  const text = doc.getText('text')
  const at = (n: number, length: number) => n % (length + 1)
  switch (edit.kind) {
    case 'map-set':
    case 'map-binary':
      map.set(edit.key, edit.value)
      break
    case 'map-delete':
      map.delete(edit.key)
      break
    case 'nested-map': {
      const inner = new Y.Map<unknown>()
      map.set(edit.key, inner)
      inner.set(edit.inner, edit.value)
      break
    }
    case 'array-insert':
      // Wrapped: a list takes only JSON-like values at its top level.
      array.insert(
        at(edit.at, array.length),
        edit.values.map((value) => [value]),
      )
      break
    case 'array-delete': {
      const from = at(edit.at, array.length)
      array.delete(from, Math.min(edit.count, array.length - from))
      break
    }
    case 'text-insert':
      text.insert(at(edit.at, text.length), edit.text)
      break
    case 'text-delete': {
      const from = at(edit.at, text.length)
      text.delete(from, Math.min(edit.count, text.length - from))
      break
    }
    case 'text-format': {
      const from = at(edit.at, text.length)
      text.format(from, Math.min(edit.count, text.length - from), { bold: edit.bold })
      break
    }
    case 'text-embed':
      text.insertEmbed(at(edit.at, text.length), { image: edit.value })
      break
    case 'xml': {
      const element = new Y.XmlElement(edit.element === '' ? 'p' : edit.element)
      // Yjs takes hooks in XML lists; its types list only elements and texts.
      const hook = new Y.XmlHook('hook') as unknown as Y.XmlText
      element.insert(0, [new Y.XmlText(edit.text), hook])
      doc.getXmlFragment('xml').insert(0, [element])
      break
    }
    case 'subdoc':
      doc.getMap('docs').set(edit.key, new Y.Doc())
      break
    case 'sync': {
      const to = docOf(edit.to)
      Y.applyUpdate(to, Y.encodeStateAsUpdate(doc, Y.encodeStateVector(to)))
      break
    }
    case 'take':
      updates.push(Y.encodeStateAsUpdate(doc, Y.encodeStateVector(docOf(edit.sinceOf))))
      break
  }
}

// ------------------------------------------------------------------ properties

describe('scanUpdate on updates from random edits', () => {
  it('gives exactly what Y.decodeUpdate gives', () => {
    fc.assert(
      fc.property(scenarioArb, (scenario) => {
        for (const update of updatesOf(scenario)) {
          expect(plain(scanUpdate(update))).toEqual(plain(decodeUpdateRanges(update)))
        }
      }),
      params,
    )
  })

  it('on every truncation and on random byte changes, throws or agrees with Yjs', () => {
    let accepted = 0
    let refused = 0
    const count = (ok: boolean) => (ok ? accepted++ : refused++)
    fc.assert(
      fc.property(
        scenarioArb,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
          minLength: 1,
          maxLength: 40,
        }),
        (scenario, flips) => {
          const updates = updatesOf(scenario)
          const update = updates.reduce((a, b) => (b.length > a.length ? b : a))
          // A copy per case: Yjs reads byte views against the whole buffer.
          for (let end = 0; end < update.length; end++) count(agreesWithYjs(update.slice(0, end)))
          for (const [at, xor] of flips) {
            const flipped = update.slice()
            const i = at % flipped.length
            flipped[i] = (flipped[i] as number) ^ xor
            count(agreesWithYjs(flipped))
          }
          // Several flips at once reach states one flip does not.
          const many = update.slice()
          for (const [at, xor] of flips)
            many[at % many.length] = (many[at % many.length] as number) ^ xor
          count(agreesWithYjs(many))
        },
      ),
      params,
    )
    // Both outcomes happened, so both branches of the check ran.
    expect(accepted).toBeGreaterThan(0)
    expect(refused).toBeGreaterThan(0)
  })

  it('on random bytes, throws or agrees with Yjs', () => {
    const header = fc.constantFrom(
      new Uint8Array([]),
      new Uint8Array([1, 1, 1, 0]),
      new Uint8Array([1, 2, 7, 0, 8]),
    )
    fc.assert(
      fc.property(header, fc.uint8Array({ maxLength: 64 }), (prefix, tail) => {
        const bytes = new Uint8Array(prefix.length + tail.length)
        bytes.set(prefix)
        bytes.set(tail, prefix.length)
        agreesWithYjs(bytes)
      }),
      { ...params, numRuns: numRuns * 20 },
    )
  })
})

// ---------------------------------------------------------- hand-built updates

/** One struct section of one client, then an empty delete set (or `ds`). */
function handBuilt(
  writeStructs: (e: encoding.Encoder) => void,
  structs = 1,
  ds: (e: encoding.Encoder) => void = (e) => encoding.writeVarUint(e, 0),
): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 1) // sections
  encoding.writeVarUint(e, structs)
  encoding.writeVarUint(e, 7) // client
  encoding.writeVarUint(e, 0) // clock
  writeStructs(e)
  ds(e)
  return encoding.toUint8Array(e)
}

/** An item at the start of root array "r", with the given content ref and content. */
const rootItem =
  (ref: number, content: (e: encoding.Encoder) => void) =>
  (e: encoding.Encoder): void => {
    encoding.writeUint8(e, ref)
    encoding.writeVarUint(e, 1) // parent is a root type
    encoding.writeVarString(e, 'r')
    content(e)
  }

const json = (...texts: string[]) =>
  handBuilt(
    rootItem(2, (e) => {
      encoding.writeVarUint(e, texts.length)
      for (const text of texts) encoding.writeVarString(e, text)
    }),
  )

/** An Any value nested `depth` arrays deep. */
const nestedAny = (depth: number) =>
  handBuilt(
    rootItem(8, (e) => {
      encoding.writeVarUint(e, 1)
      for (let i = 0; i < depth; i++) {
        encoding.writeUint8(e, 117)
        encoding.writeVarUint(e, 1)
      }
      encoding.writeUint8(e, 126)
    }),
  )

describe('scanUpdate on hand-built updates', () => {
  it('reads ContentJSON (which no current Yjs writes) through Yjs: valid JSON agrees', () => {
    const update = json('{"a":1}', 'undefined', '[2]')
    expect(plain(scanUpdate(update))).toEqual(plain(decodeUpdateRanges(update)))
    expect(scanUpdate(update).to.get(7)).toBe(3)
  })

  it('refuses ContentJSON whose text is not JSON, as Yjs does', () => {
    expect(() => decodeUpdateRanges(json('{oops'))).toThrow()
    expect(() => scanUpdate(json('{oops'))).toThrow()
  })

  it('defers deep nesting to Yjs: agrees where Yjs reads it, throws where Yjs cannot', () => {
    const deep = nestedAny(200)
    expect(plain(scanUpdate(deep))).toEqual(plain(decodeUpdateRanges(deep)))
    const hostile = nestedAny(200_000)
    expect(() => decodeUpdateRanges(hostile)).toThrow()
    expect(() => scanUpdate(hostile)).toThrow()
  })

  it('refuses trailing bytes, which Y.decodeUpdate ignores', () => {
    const update = Y.encodeStateAsUpdate(docWith('x', 1))
    const longer = new Uint8Array([...update, 0])
    expect(() => decodeUpdateRanges(longer)).not.toThrow()
    expect(() => scanUpdate(longer)).toThrow(UpdateScanError)
  })

  it('refuses GC info bits and parent markers that no Yjs encoder writes', () => {
    const gcWithBits = handBuilt((e) => {
      encoding.writeUint8(e, 0x80)
      encoding.writeVarUint(e, 3)
    })
    expect(() => decodeUpdateRanges(gcWithBits)).not.toThrow()
    expect(() => scanUpdate(gcWithBits)).toThrow(UpdateScanError)
    const parentMarker2 = handBuilt((e) => {
      encoding.writeUint8(e, 8)
      encoding.writeVarUint(e, 2) // neither 1 (root name) nor 0 (parent id)
      encoding.writeVarUint(e, 1)
      encoding.writeVarUint(e, 0)
      encoding.writeVarUint(e, 1)
      encoding.writeUint8(e, 126)
    })
    expect(() => scanUpdate(parentMarker2)).toThrow(UpdateScanError)
  })

  it('refuses unknown content refs and type refs', () => {
    for (const ref of [10 | 0x20, 11, 31]) {
      const update = handBuilt(rootItem(ref, () => undefined))
      expect(() => scanUpdate(update)).toThrow(UpdateScanError)
    }
    const badType = handBuilt(rootItem(7, (e) => encoding.writeVarUint(e, 7)))
    expect(() => decodeUpdateRanges(badType)).toThrow()
    expect(() => scanUpdate(badType)).toThrow(UpdateScanError)
  })

  it('refuses a string that is not UTF-8, as Yjs does, and counts UTF-16 units as Yjs does', () => {
    const text = (bytes: number[]) =>
      handBuilt(
        rootItem(4, (e) => {
          encoding.writeVarUint(e, bytes.length)
          for (const b of bytes) encoding.writeUint8(e, b)
        }),
      )
    // Overlong, surrogate, past U+10FFFF, truncated.
    for (const bad of [
      [0xc0, 0x80],
      [0xed, 0xa0, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
      [0xe2, 0x82],
    ]) {
      expect(() => decodeUpdateRanges(text(bad))).toThrow()
      expect(() => scanUpdate(text(bad))).toThrow(UpdateScanError)
    }
    // "a", "é", "€", "😀", BOM: 1 + 1 + 1 + 2 + 1 units.
    const good = text([
      0x61, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xef, 0xbb, 0xbf,
    ])
    expect(scanUpdate(good).to.get(7)).toBe(6)
    expect(plain(scanUpdate(good))).toEqual(plain(decodeUpdateRanges(good)))
  })

  it('reads only its own view of a larger buffer (Yjs may read past a view)', () => {
    const update = Y.encodeStateAsUpdate(docWith('key', 'a value long enough'))
    const buffer = new Uint8Array(update.length + 16)
    buffer.set(update)
    const cut = buffer.subarray(0, update.length - 10)
    expect(() => scanUpdate(cut)).toThrow(UpdateScanError)
  })

  it('refuses clocks and delete ranges past the safe integer range', () => {
    const big = handBuilt(
      (e) => {
        encoding.writeUint8(e, 0)
        encoding.writeVarUint(e, 1)
      },
      1,
      (e) => {
        encoding.writeVarUint(e, 1)
        encoding.writeVarUint(e, 7)
        encoding.writeVarUint(e, 1)
        encoding.writeVarUint(e, Number.MAX_SAFE_INTEGER)
        encoding.writeVarUint(e, 2)
      },
    )
    expect(() => scanUpdate(big)).toThrow(UpdateScanError)
  })

  it('skips sections without structs and merges a client named twice, as Yjs does', () => {
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, 3)
    for (const [count, clock] of [
      [0, 50],
      [1, 9],
      [1, 2],
    ] as const) {
      encoding.writeVarUint(e, count)
      encoding.writeVarUint(e, 4)
      encoding.writeVarUint(e, clock)
      for (let i = 0; i < count; i++) {
        encoding.writeUint8(e, 0)
        encoding.writeVarUint(e, 3)
      }
    }
    encoding.writeVarUint(e, 2)
    for (const [client, ranges] of [
      [4, 1],
      [4, 0],
    ] as const) {
      encoding.writeVarUint(e, client)
      encoding.writeVarUint(e, ranges)
      for (let i = 0; i < ranges; i++) {
        encoding.writeVarUint(e, 1)
        encoding.writeVarUint(e, 1)
      }
    }
    const update = encoding.toUint8Array(e)
    expect(plain(scanUpdate(update))).toEqual({
      from: [[4, 2]],
      to: [[4, 12]],
      deletes: [[4, [[1, 2]]]],
    })
    expect(plain(scanUpdate(update))).toEqual(plain(decodeUpdateRanges(update)))
  })
})

function docWith(key: string, value: unknown): Y.Doc {
  const doc = new Y.Doc()
  doc.getMap('m').set(key, value)
  return doc
}
