/**
 * The incremental delete set (core/delete-set.ts) against Yjs: after random
 * edits, deletes, merged remote updates (with GC ranges and deleted
 * content), garbage collection on and off, `encodeDiff` writes exactly the
 * bytes `Y.encodeStateAsUpdate` writes, for the empty state vector and for
 * the state vector of every replica.
 *
 * Replay a failure: `ROSTERSYNC_SEED=<seed> npx vitest run test/delete-set.test.ts`
 * (add `ROSTERSYNC_PATH=<path>` from the report). More cases locally:
 * `ROSTERSYNC_PROPERTY_RUNS=2000`.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { addRange, DeleteSetCache, encodeDiff } from '../core/delete-set.js'
import { envInt, seedFromEnv } from './helpers/property-seed.js'

const seed = seedFromEnv()
const path = process.env.ROSTERSYNC_PATH
const numRuns = envInt('ROSTERSYNC_PROPERTY_RUNS') ?? 150
console.log(
  `delete-set: seed ${seed}, ${numRuns} runs — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/delete-set.test.ts`,
)
const params = { seed, numRuns, ...(path === undefined ? {} : { path }) }

/** One step on one of the replicas. */
type Step =
  | { kind: 'set'; replica: number; root: number; key: number; value: number }
  | { kind: 'delete'; replica: number; root: number; key: number }
  | { kind: 'array'; replica: number; insert: number; remove: number }
  | { kind: 'sync'; from: number; to: number }
  | { kind: 'check'; replica: number }

const REPLICAS = 3
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant('set' as const),
    replica: fc.nat(REPLICAS - 1),
    root: fc.nat(2),
    key: fc.nat(5),
    value: fc.nat(1000),
  }),
  fc.record({
    kind: fc.constant('delete' as const),
    replica: fc.nat(REPLICAS - 1),
    root: fc.nat(2),
    key: fc.nat(5),
  }),
  fc.record({
    kind: fc.constant('array' as const),
    replica: fc.nat(REPLICAS - 1),
    insert: fc.nat(4),
    remove: fc.nat(3),
  }),
  fc.record({
    kind: fc.constant('sync' as const),
    from: fc.nat(REPLICAS - 1),
    to: fc.nat(REPLICAS - 1),
  }),
  fc.record({ kind: fc.constant('check' as const), replica: fc.nat(REPLICAS - 1) }),
)

function expectSameAnswers(doc: Y.Doc, cache: DeleteSetCache, others: readonly Y.Doc[]): void {
  const vectors = [new Uint8Array([0]), ...others.map((o) => Y.encodeStateVector(o))]
  for (const vector of vectors)
    expect(Buffer.from(encodeDiff(doc, vector, cache))).toEqual(
      Buffer.from(Y.encodeStateAsUpdate(doc, vector)),
    )
}

describe('DeleteSetCache and encodeDiff', () => {
  it('write the bytes Y.encodeStateAsUpdate writes, after any history', () => {
    fc.assert(
      fc.property(
        fc.array(stepArb, { minLength: 1, maxLength: 60 }),
        fc.array(fc.boolean(), { minLength: REPLICAS, maxLength: REPLICAS }),
        fc.boolean(),
        (steps, gc, buildEarly) => {
          const docs = gc.map((on) => new Y.Doc({ gc: on }))
          const caches = docs.map((doc) => new DeleteSetCache(doc))
          // Built before the first change or only when first asked: both
          // must end up the same.
          if (buildEarly) for (const cache of caches) cache.current()
          for (const step of steps) {
            switch (step.kind) {
              case 'set':
                docs[step.replica]?.getMap(`r${step.root}`).set(`k${step.key}`, step.value)
                break
              case 'delete':
                docs[step.replica]?.getMap(`r${step.root}`).delete(`k${step.key}`)
                break
              case 'array': {
                const array = docs[step.replica]?.getArray<number>('a')
                if (array === undefined) break
                array.insert(
                  0,
                  Array.from({ length: step.insert }, (_, i) => i),
                )
                const at = Math.floor(array.length / 3)
                const remove = Math.min(step.remove, array.length - at)
                if (remove > 0) array.delete(at, remove)
                break
              }
              case 'sync': {
                const from = docs[step.from]
                const to = docs[step.to]
                if (from === undefined || to === undefined || from === to) break
                Y.applyUpdate(to, Y.encodeStateAsUpdate(from, Y.encodeStateVector(to)))
                break
              }
              case 'check': {
                const doc = docs[step.replica] as Y.Doc
                expectSameAnswers(doc, caches[step.replica] as DeleteSetCache, docs)
                break
              }
            }
          }
          docs.forEach((doc, i) => expectSameAnswers(doc, caches[i] as DeleteSetCache, docs))
        },
      ),
      params,
    )
  })

  it('follows GC ranges and deleted content that arrive in an update', () => {
    const origin = new Y.Doc({ gc: true })
    const map = origin.getMap('m')
    for (let i = 0; i < 50; i++) map.set(`k${i % 7}`, i)
    const text = origin.getText('t')
    text.insert(0, 'abcdefghij')
    text.delete(2, 5)
    // A nested type deleted with its content: garbage collection turns its
    // items into GC structs.
    const nested = new Y.Map<number>()
    map.set('nested', nested)
    for (let i = 0; i < 10; i++) nested.set(`n${i}`, i)
    map.delete('nested')
    const update = Y.encodeStateAsUpdate(origin)
    expect(Y.decodeUpdate(update).structs.some((s) => s instanceof Y.GC)).toBe(true)
    // The update's GC structs are not deletes of items the receiver had,
    // so Yjs does not list them in the transaction's delete set: only the
    // walk of the structs it added sees them.
    const receiver = new Y.Doc({ gc: true })
    const cache = new DeleteSetCache(receiver)
    cache.current()
    Y.applyUpdate(receiver, update)
    expect(cache.current().size).toBeGreaterThan(0)
    expectSameAnswers(receiver, cache, [origin])
  })

  it('falls back to Yjs while structs are pending', () => {
    const a = new Y.Doc()
    a.getMap('m').set('x', 1)
    const first = Y.encodeStateAsUpdate(a)
    const before = Y.encodeStateVector(a)
    a.getMap('m').set('x', 2)
    const second = Y.encodeStateAsUpdate(a, before)
    const b = new Y.Doc()
    const cache = new DeleteSetCache(b)
    cache.current()
    Y.applyUpdate(b, second)
    expect(b.store.pendingStructs).not.toBeNull()
    expectSameAnswers(b, cache, [a])
    Y.applyUpdate(b, first)
    expect(b.store.pendingStructs).toBeNull()
    expectSameAnswers(b, cache, [a])
  })

  it('answers like Yjs from inside an observer, before the transaction is followed', () => {
    const doc = new Y.Doc()
    const cache = new DeleteSetCache(doc)
    cache.current()
    const map = doc.getMap<number>('m')
    map.set('x', 1)
    const seen: Array<[Uint8Array, Uint8Array]> = []
    map.observe(() => {
      const vector = new Uint8Array([0])
      seen.push([encodeDiff(doc, vector, cache), Y.encodeStateAsUpdate(doc, vector)])
    })
    doc.on('update', () => {
      const vector = new Uint8Array([0])
      seen.push([encodeDiff(doc, vector, cache), Y.encodeStateAsUpdate(doc, vector)])
    })
    map.set('x', 2)
    map.delete('x')
    expect(seen.length).toBe(4)
    for (const [ours, yjs] of seen) expect(Buffer.from(ours)).toEqual(Buffer.from(yjs))
    expectSameAnswers(doc, cache, [])
  })

  it('stops following a destroyed cache', () => {
    const doc = new Y.Doc()
    const cache = new DeleteSetCache(doc)
    cache.current()
    cache.destroy()
    doc.getMap('m').set('x', 1)
    doc.getMap('m').set('x', 2)
    // Walked from the store on every answer from then on.
    expectSameAnswers(doc, cache, [])
    doc.getMap('m').set('x', 3)
    expectSameAnswers(doc, cache, [])
  })
})

describe('addRange', () => {
  it('keeps ranges sorted, disjoint and merged when they touch', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(200), fc.integer({ min: 1, max: 20 })), { maxLength: 40 }),
        (adds) => {
          const list: Array<[number, number]> = []
          const covered = new Set<number>()
          for (const [clock, len] of adds) {
            addRange(list, clock, clock + len)
            for (let c = clock; c < clock + len; c++) covered.add(c)
          }
          for (let i = 1; i < list.length; i++)
            expect((list[i] as [number, number])[0]).toBeGreaterThan(
              (list[i - 1] as [number, number])[1],
            )
          const fromList = new Set<number>()
          for (const [start, end] of list) for (let c = start; c < end; c++) fromList.add(c)
          expect([...fromList].sort((x, y) => x - y)).toEqual([...covered].sort((x, y) => x - y))
        },
      ),
      params,
    )
  })
})
