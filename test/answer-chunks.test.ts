/**
 * Answers in parts (core/answer-chunks.ts): after any history of several
 * writers (map overwrites, array inserts and deletes, nested maps, garbage
 * collection on and off), the parts of what a peer lacks, applied in
 * order, each leave nothing pending in Yjs (no part names an item only a
 * later one brings), each stays within the bound, and together rebuild
 * the document; one part holding everything is `encodeDiff`'s bytes.
 *
 * Replay a failure: `ROSTERSYNC_SEED=<seed> npx vitest run test/answer-chunks.test.ts`
 * (add `ROSTERSYNC_PATH=<path>` from the report). More cases locally:
 * `ROSTERSYNC_PROPERTY_RUNS=2000`.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { encodeDiffParts } from '../core/answer-chunks.js'
import { DeleteSetCache, encodeDiff } from '../core/delete-set.js'
import { envInt, seedFromEnv } from './helpers/property-seed.js'

const seed = seedFromEnv()
const path = process.env.ROSTERSYNC_PATH
const numRuns = envInt('ROSTERSYNC_PROPERTY_RUNS') ?? 100
console.log(
  `answer-chunks: seed ${seed}, ${numRuns} runs — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/answer-chunks.test.ts`,
)
const params = { seed, numRuns, ...(path === undefined ? {} : { path }) }

type Step =
  | { kind: 'set'; replica: number; key: number; value: string }
  | { kind: 'delete'; replica: number; key: number }
  | { kind: 'array'; replica: number; at: number; insert: number; remove: number }
  | { kind: 'nest'; replica: number; key: number; sub: number }
  | { kind: 'sync'; from: number; to: number }

const REPLICAS = 4
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant('set' as const),
    replica: fc.nat(REPLICAS - 1),
    key: fc.nat(6),
    value: fc.string({ maxLength: 40 }),
  }),
  fc.record({
    kind: fc.constant('delete' as const),
    replica: fc.nat(REPLICAS - 1),
    key: fc.nat(6),
  }),
  fc.record({
    kind: fc.constant('array' as const),
    replica: fc.nat(REPLICAS - 1),
    at: fc.nat(100),
    insert: fc.nat(4),
    remove: fc.nat(3),
  }),
  fc.record({
    kind: fc.constant('nest' as const),
    replica: fc.nat(REPLICAS - 1),
    key: fc.nat(2),
    sub: fc.nat(3),
  }),
  fc.record({
    kind: fc.constant('sync' as const),
    from: fc.nat(REPLICAS - 1),
    to: fc.nat(REPLICAS - 1),
  }),
)

function run(docs: readonly Y.Doc[], step: Step): void {
  switch (step.kind) {
    case 'set':
      docs[step.replica]?.getMap('u').set(`k${step.key}`, { v: step.value })
      return
    case 'delete':
      docs[step.replica]?.getMap('u').delete(`k${step.key}`)
      return
    case 'array': {
      const array = docs[step.replica]?.getArray<number>('a')
      if (array === undefined) return
      const at = step.at % (array.length + 1)
      array.insert(
        at,
        Array.from({ length: step.insert }, (_, i) => i),
      )
      const from = Math.floor(array.length / 2)
      const remove = Math.min(step.remove, array.length - from)
      if (remove > 0) array.delete(from, remove)
      return
    }
    case 'nest': {
      const root = docs[step.replica]?.getMap<Y.Map<number>>('n')
      if (root === undefined) return
      const nested = root.get(`k${step.key}`)
      if (nested instanceof Y.Map) nested.set(`s${step.sub}`, step.sub)
      else root.set(`k${step.key}`, new Y.Map<number>())
      return
    }
    case 'sync': {
      const from = docs[step.from]
      const to = docs[step.to]
      if (from === undefined || to === undefined || from === to) return
      Y.applyUpdate(to, Y.encodeStateAsUpdate(from, Y.encodeStateVector(to)))
    }
  }
}

/** Applies `parts` in order to a copy of `receiver`; each must leave nothing pending. */
function applyParts(receiver: Y.Doc | undefined, parts: readonly Uint8Array[]): Y.Doc {
  const doc = new Y.Doc({ gc: receiver?.gc ?? true })
  if (receiver !== undefined) Y.applyUpdate(doc, Y.encodeStateAsUpdate(receiver))
  for (const part of parts) {
    Y.applyUpdate(doc, part)
    expect(doc.store.pendingStructs).toBeNull()
    expect(doc.store.pendingDs).toBeNull()
  }
  return doc
}

function expectSameDoc(a: Y.Doc, b: Y.Doc): void {
  expect(Y.encodeStateVector(a)).toEqual(Y.encodeStateVector(b))
  expect(a.getMap('u').toJSON()).toEqual(b.getMap('u').toJSON())
  expect(a.getArray('a').toJSON()).toEqual(b.getArray('a').toJSON())
  expect(a.getMap('n').toJSON()).toEqual(b.getMap('n').toJSON())
  // The same delete set: what either holds deleted, the other does too.
  const ds = (doc: Y.Doc): unknown =>
    [...Y.createDeleteSetFromStructStore(doc.store).clients]
      .map(([c, items]) => [c, items.map((i) => [i.clock, i.len])])
      .sort((x, y) => (x[0] as number) - (y[0] as number))
  expect(ds(a)).toEqual(ds(b))
}

describe('encodeDiffParts', () => {
  it('parts apply in order with nothing pending, within the bound, and rebuild the document', () => {
    fc.assert(
      fc.property(
        fc.array(stepArb, { minLength: 1, maxLength: 80 }),
        fc.boolean(),
        fc.integer({ min: 1, max: 400 }),
        (steps, gc, partBytesMax) => {
          const docs = Array.from({ length: REPLICAS }, () => new Y.Doc({ gc }))
          for (const step of steps) run(docs, step)
          const [source, ...others] = docs as [Y.Doc, ...Y.Doc[]]
          const deletes = new DeleteSetCache(source)
          for (const receiver of [undefined, ...others]) {
            const vector =
              receiver === undefined ? new Uint8Array([0]) : Y.encodeStateVector(receiver)
            const parts = encodeDiffParts(
              source.store,
              Y.decodeStateVector(vector),
              deletes.current(),
              partBytesMax,
            )
            expect(parts.length).toBeGreaterThan(0)
            // A single struct may be larger than the bound: it goes alone.
            for (const part of parts)
              if (part.byteLength > partBytesMax)
                expect(Y.decodeUpdate(part).structs.length).toBeLessThanOrEqual(1)
            const rebuilt = applyParts(receiver, parts)
            const whole = applyParts(receiver, [Y.encodeStateAsUpdate(source, vector)])
            expectSameDoc(rebuilt, whole)
            // Large enough for everything: one part, encodeDiff's bytes.
            const one = encodeDiffParts(
              source.store,
              Y.decodeStateVector(vector),
              deletes.current(),
              1 << 30,
            )
            expect(one).toHaveLength(1)
            expect(Buffer.from(one[0] as Uint8Array)).toEqual(
              Buffer.from(encodeDiff(source, vector, deletes)),
            )
          }
        },
      ),
      params,
    )
  })

  it('an aged roster (overwrites under many clientIDs, deletes) splits into many parts', () => {
    const docs = Array.from({ length: 40 }, () => new Y.Doc())
    const server = docs[0] as Y.Doc
    for (let round = 0; round < 5; round++)
      for (const [i, doc] of docs.entries()) {
        Y.applyUpdate(doc, Y.encodeStateAsUpdate(server, Y.encodeStateVector(doc)))
        const users = doc.getMap('u:server')
        for (let u = 0; u < 50; u++) users.set(`user${(u * 7 + i) % 200}`, { n: `r${round}d${i}` })
        for (let u = 0; u < 5; u++) users.delete(`user${(u * 13 + i + round) % 200}`)
        Y.applyUpdate(server, Y.encodeStateAsUpdate(doc, Y.encodeStateVector(server)))
      }
    const parts = encodeDiffParts(
      server.store,
      new Map(),
      new DeleteSetCache(server).current(),
      4_096,
    )
    expect(parts.length).toBeGreaterThan(10)
    for (const part of parts) expect(part.byteLength).toBeLessThanOrEqual(4_096)
    const rebuilt = applyParts(undefined, parts)
    expect(rebuilt.getMap('u:server').toJSON()).toEqual(server.getMap('u:server').toJSON())
  })
})
