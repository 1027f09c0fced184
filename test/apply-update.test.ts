/**
 * `applyUpdate` (core/apply-update.ts) against `Y.applyUpdate`: over random
 * updates (map values of every `Any` kind, strings ASCII and not, short and
 * long, empty, with a BOM; text; nested maps and arrays; deletes; several
 * writers), and over the same updates corrupted (bytes changed, cut short,
 * invalid UTF-8 spliced into a string), both must build the same document
 * or both refuse the update; ours reads it at an offset of a larger buffer.
 * Also: updates over 64 KiB (strings shared), updates applied out of order
 * (Yjs's pending structs), and `decodeValue` against lib0's `readAny`.
 *
 * Random; the seed is printed and replays the run:
 * `ROSTERSYNC_SEED=<seed> npx vitest run test/apply-update.test.ts`.
 */
import fc from 'fast-check'
import * as decoding from 'lib0/decoding'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { TruncatedStringError } from '../core/any-reader.js'
import { applyUpdate } from '../core/apply-update.js'
import { decodeValue, encodeValue } from '../core/codec.js'

const seed = Number(process.env.ROSTERSYNC_SEED ?? Date.now() % 1_000_000)

const text = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'grapheme', maxLength: 12 }),
  fc.string({ minLength: 100, maxLength: 300 }),
  fc.constantFrom('', '\uFEFF', '\uFEFFid', 'é', '\u007F', 'x'.repeat(128), 'y'.repeat(129)),
)

const anyValue: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    text,
    fc.integer(),
    fc.double(),
    fc.float(),
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    fc.constantFrom(null, true, false, undefined),
    fc.uint8Array({ maxLength: 8 }),
    fc.dictionary(text, tie('value'), { maxKeys: 4, noNullPrototype: true }),
    fc.array(tie('value'), { maxLength: 4 }),
  ),
})).value

const step = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), key: text, value: anyValue }),
  fc.record({ kind: fc.constant('delete' as const), key: text }),
  fc.record({ kind: fc.constant('text' as const), at: fc.nat(), insert: text }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat(), length: fc.nat({ max: 5 }) }),
  fc.record({ kind: fc.constant('nested' as const), key: text, value: anyValue }),
  fc.record({ kind: fc.constant('push' as const), values: fc.array(anyValue, { maxLength: 3 }) }),
)
type Step = typeof step extends fc.Arbitrary<infer T> ? T : never

/** `value` as Yjs takes it at the top of a map or array (a bigint or `undefined` only inside an `Any`). */
const storable = (value: unknown): unknown =>
  typeof value === 'bigint' || value === undefined ? [value] : value

const BULK_STRINGS = 3000

/**
 * A value large enough that the update shares its repeated strings (over
 * 64 KiB, core/apply-update.ts): drawn from `seed`, strings from a small
 * pool (repeated: the table's hits), ids of one length (distinct: the
 * table's collisions), non-ASCII and long ones.
 */
function bulk(seed: number): unknown[] {
  let state = seed >>> 0 || 1
  const next = (n: number): number => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0
    return (state >>> 8) % n
  }
  const pool = ['Engineering', 'Security', 'al-floor-1', 'al-floor-2', 'active', 'csn', 'Zoë', '']
  return Array.from({ length: BULK_STRINGS }, () => {
    switch (next(4)) {
      case 0:
        return pool[next(pool.length)]
      case 1:
        return `u-${String(next(100_000)).padStart(6, '0')}`
      case 2:
        return {
          department: pool[next(pool.length)],
          id: `c${next(1000)}`,
          note: 'é'.repeat(next(3)),
        }
      default:
        return 'w'.repeat(100 + next(60))
    }
  })
}

/**
 * Plays `steps`, spread over `writers` documents that meet at the end (the
 * first one writing a {@link bulk} value first when `bulkSeed` is given);
 * the merged state.
 */
function history(steps: Step[], writers: number, bulkSeed?: number): Uint8Array {
  const docs = Array.from({ length: writers }, () => new Y.Doc())
  if (bulkSeed !== undefined) docs[0]?.getMap('users').set('bulk', bulk(bulkSeed))
  steps.forEach((s, i) => {
    const doc = docs[i % writers] as Y.Doc
    const map = doc.getMap('users')
    const body = doc.getText('notes')
    switch (s.kind) {
      case 'set':
        map.set(s.key, storable(s.value))
        break
      case 'delete':
        map.delete(s.key)
        break
      case 'text':
        body.insert(s.at % (body.length + 1), s.insert)
        break
      case 'cut':
        body.delete(
          s.at % (body.length + 1),
          Math.min(s.length, body.length - (s.at % (body.length + 1))),
        )
        break
      case 'nested': {
        const inner = new Y.Map<unknown>()
        map.set(`nested:${s.key}`, inner)
        inner.set(s.key, storable(s.value))
        break
      }
      case 'push':
        doc.getArray('log').push(s.values.map(storable))
        break
    }
  })
  return Y.mergeUpdates(docs.map((d) => Y.encodeStateAsUpdate(d)))
}

/**
 * `bytes` at `offset` of a larger buffer filled with ASCII, as a Node
 * Buffer from the pool or a message's payload is: a decoder that reads
 * from the start of the buffer, or past the view's end, reads other bytes.
 */
function inLargerBuffer(bytes: Uint8Array, offset: number): Uint8Array {
  const larger = new Uint8Array(offset + bytes.length + 16).fill(0x61)
  larger.set(bytes, offset)
  return larger.subarray(offset, offset + bytes.length)
}

/** `read()`, or 'unreadable' when it throws (Yjs can leave a document it cannot encode after a corrupt update). */
function guarded<T>(read: () => T): T | 'unreadable' {
  try {
    return read()
  } catch {
    return 'unreadable'
  }
}

/** What applying `update` to a fresh document with `apply` gives: its state, or that it threw. */
function outcome(apply: (doc: Y.Doc, update: Uint8Array) => void, update: Uint8Array) {
  const doc = new Y.Doc()
  let threw = false
  try {
    apply(doc, update)
  } catch {
    threw = true
  }
  return {
    threw,
    state: guarded(() => Y.encodeStateAsUpdate(doc)),
    users: guarded(() => doc.getMap('users').toJSON()),
    notes: guarded(() => doc.getText('notes').toJSON()),
    log: guarded((): unknown[] => doc.getArray<unknown>('log').toArray()),
  }
}

const corruption = fc.oneof(
  fc.record({
    kind: fc.constant('byte' as const),
    at: fc.nat(),
    value: fc.integer({ min: 0, max: 255 }),
  }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  // Invalid UTF-8 (a lone continuation byte, a truncated sequence, an encoded surrogate, an overlong).
  fc.record({
    kind: fc.constant('utf8' as const),
    at: fc.nat(),
    bytes: fc.constantFrom([0x80], [0xc3], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xff]),
  }),
)

describe('applyUpdate', () => {
  it(`builds what Y.applyUpdate builds, and refuses what it refuses (seed ${seed})`, () => {
    console.log(
      `apply-update: seed ${seed} — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/apply-update.test.ts`,
    )
    let valid = 0
    let refused = 0
    let corruptAccepted = 0
    let large = 0
    fc.assert(
      fc.property(
        fc.array(step, { minLength: 1, maxLength: 20 }),
        fc.integer({ min: 1, max: 3 }),
        fc.option(fc.nat(), { freq: 3 }),
        fc.array(corruption, { maxLength: 2 }),
        fc.nat({ max: 64 }),
        (steps, writers, bulkSeed, corruptions, offset) => {
          let update = history(steps, writers, bulkSeed ?? undefined)
          if (bulkSeed !== null && update.length >= 64 * 1024) large++
          for (const c of corruptions) {
            const at = c.at % update.length
            if (c.kind === 'byte') {
              update = Uint8Array.from(update)
              update[at] = c.value
            } else if (c.kind === 'cut') {
              update = update.slice(0, at)
            } else {
              // Inside the first ASCII run of at least the length of the bytes, if any.
              const copy = Uint8Array.from(update)
              let run = 0
              for (let i = at; i < copy.length; i++) {
                run = (copy[i] as number) >= 0x20 && (copy[i] as number) < 0x7f ? run + 1 : 0
                if (run === c.bytes.length) {
                  copy.set(c.bytes, i + 1 - run)
                  break
                }
              }
              update = copy
            }
          }
          const theirs = outcome((doc, u) => Y.applyUpdate(doc, u), update)
          const ours = outcome((doc, u) => applyUpdate(doc, u), inLargerBuffer(update, offset))
          expect(ours.threw).toBe(theirs.threw)
          // The same state, byte for byte, is the same document (every string included).
          if (ours.state === 'unreadable' || theirs.state === 'unreadable') {
            expect(ours.state).toEqual(theirs.state)
          } else {
            expect(Buffer.from(ours.state).equals(theirs.state)).toBe(true)
          }
          if (bulkSeed === null) {
            expect(ours.users).toEqual(theirs.users)
            expect(ours.notes).toBe(theirs.notes)
            expect(ours.log).toEqual(theirs.log)
          }
          if (corruptions.length === 0) valid++
          else if (theirs.threw) refused++
          else corruptAccepted++
        },
      ),
      { seed, numRuns: 600 },
    )
    console.log(
      `apply-update: ${valid} valid, ${large} of all over 64 KiB, ${refused} corrupt refused by both, ${corruptAccepted} corrupt accepted by both`,
    )
    expect(valid).toBeGreaterThan(100)
    expect(large).toBeGreaterThan(50)
    expect(refused).toBeGreaterThan(50)
  })

  it('keeps the values lib0 reads: types, a BOM, non-ASCII, long strings, bytes', () => {
    const doc = new Y.Doc()
    const values: Record<string, unknown> = {
      ascii: 'Aisha Abiodun',
      bom: '\uFEFFcard',
      accents: 'François Müller',
      astral: 'id-\u{1F511}',
      long: 'z'.repeat(500),
      edge: 'q'.repeat(128),
      empty: '',
      int: -42,
      float: 0.1,
      big: 2n ** 60n,
      bytes: new Uint8Array([1, 2, 255]),
      nested: { 'é-key': ['a', null, true, false, undefined, { x: 1 }] },
    }
    for (const [key, value] of Object.entries(values)) doc.getMap('users').set(key, value)
    const copy = new Y.Doc()
    applyUpdate(copy, Y.encodeStateAsUpdate(doc))
    expect(copy.getMap('users').toJSON()).toEqual(values)
    expect(copy.getMap('users').get('big')).toBe(2n ** 60n)
  })

  it('refuses a string that runs past the update, not reading the bytes of the buffer after it', () => {
    const doc = new Y.Doc()
    doc.getMap('users').set('k', 'value')
    const update = Y.encodeStateAsUpdate(doc)
    // The update as a view into a larger buffer whose next bytes look like more string.
    const larger = new Uint8Array(update.length + 16).fill(0x61)
    larger.set(update)
    const at = Buffer.from(larger).indexOf('value') - 1 // the length before 'value'
    expect(larger[at]).toBe(5)
    const view = larger.subarray(0, update.length)
    const cutShort = view.subarray(0, at + 3)
    expect(() => applyUpdate(new Y.Doc(), cutShort)).toThrow(TruncatedStringError)
    // Whole, it applies.
    const fresh = new Y.Doc()
    applyUpdate(fresh, view)
    expect(fresh.getMap('users').get('k')).toBe('value')
  })

  it('applies with the origin given', () => {
    const doc = new Y.Doc()
    const seen: unknown[] = []
    doc.on('update', (_u: Uint8Array, origin: unknown) => seen.push(origin))
    const source = new Y.Doc()
    source.getMap('users').set('a', 'b')
    applyUpdate(doc, Y.encodeStateAsUpdate(source), 'remote')
    expect(seen).toEqual(['remote'])
  })

  it(`gives the same document for updates applied out of order (pending structs) (seed ${seed})`, () => {
    let pending = 0
    fc.assert(
      fc.property(
        fc.array(step, { minLength: 2, maxLength: 16 }),
        fc.integer({ min: 1, max: 3 }),
        fc.func(fc.integer()),
        (steps, writers, order) => {
          // Each step's update as it was emitted, from `writers` documents that see each other's.
          const docs = Array.from({ length: writers }, () => new Y.Doc())
          const updates: Uint8Array[] = []
          docs.forEach((doc) => doc.on('update', (u: Uint8Array) => updates.push(u)))
          steps.forEach((s, i) => {
            const doc = docs[i % writers] as Y.Doc
            const last = updates.length
            const map = doc.getMap('users')
            if (s.kind === 'set') map.set(s.key, storable(s.value))
            else if (s.kind === 'delete') map.delete(s.key)
            else if (s.kind === 'push') doc.getArray('log').push(s.values.map(storable))
            else doc.getText('notes').insert(0, s.kind === 'text' ? s.insert : 'x')
            for (const other of docs)
              if (other !== doc) for (const u of updates.slice(last)) Y.applyUpdate(other, u)
          })
          const shuffled = updates
            .map((u, i) => ({ u, k: order(i) }))
            .sort((a, b) => a.k - b.k)
            .map(({ u }) => u)
          const theirs = new Y.Doc()
          const ours = new Y.Doc()
          for (const u of shuffled) {
            Y.applyUpdate(theirs, u)
            applyUpdate(ours, u)
            if (ours.store.pendingStructs !== null) pending++
          }
          expect(
            Buffer.from(Y.encodeStateAsUpdate(ours)).equals(Y.encodeStateAsUpdate(theirs)),
          ).toBe(true)
          // Entries, not toJSON(): a key "__proto__" set the JSON object's
          // prototype (to a Uint8Array value), which toEqual cannot walk.
          const entries = (doc: Y.Doc): Array<[string, unknown]> =>
            [...doc.getMap('users').entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
          expect(entries(ours)).toEqual(entries(theirs))
        },
      ),
      { seed, numRuns: 300 },
    )
    expect(pending).toBeGreaterThan(0)
  })

  it(`decodeValue reads what lib0's readAny reads, and refuses what it refuses (seed ${seed})`, () => {
    let refused = 0
    fc.assert(
      fc.property(
        anyValue,
        fc.option(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) })),
        fc.nat(),
        fc.nat({ max: 64 }),
        (value, change, cut, offset) => {
          let bytes = encodeValue(value)
          if (change !== null) {
            bytes = Uint8Array.from(bytes)
            bytes[change.at % bytes.length] = change.value
          }
          if (cut % 4 === 0) bytes = bytes.slice(0, cut % bytes.length)
          const lib0 = guarded(() => {
            const decoder = decoding.createDecoder(bytes)
            const read: unknown = decoding.readAny(decoder)
            return decoding.hasContent(decoder) ? 'unreadable' : read
          })
          const view = inLargerBuffer(bytes, offset)
          if (lib0 === 'unreadable') {
            refused++
            expect(() => decodeValue(view)).toThrow('value does not decode')
          } else {
            expect(decodeValue(view)).toStrictEqual(lib0)
          }
        },
      ),
      { seed, numRuns: 1000 },
    )
    expect(refused).toBeGreaterThan(50)
  })
})
