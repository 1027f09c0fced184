/**
 * The history count behind the automatic generation check
 * (core/history-count.ts, issue 13): after any sequence of local writes,
 * deletes, nested types, text, exchanges of whole states and of single
 * updates out of order (pending structs, pending delete sets), the count
 * equals a scan of every struct, without scanning again.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { HistoryCount, scanDeletedUnits } from '../core/history-count.js'
import { envInt, seedFromEnv } from './helpers/property-seed.js'

const seed = seedFromEnv()
const numRuns = envInt('ROSTERSYNC_PROPERTY_RUNS') ?? 100
console.log(
  `history-count: seed ${seed}, ${numRuns} runs — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/history-count.test.ts`,
)

type Step =
  | { kind: 'set'; replica: number; key: number; value: string }
  | { kind: 'delete'; replica: number; key: number }
  | { kind: 'text'; replica: number; at: number; insert: string; remove: number }
  | { kind: 'nest'; replica: number; key: number; sub: number }
  | { kind: 'sync'; from: number; to: number }
  /** Writes and deletes in one transaction (items born and deleted in it). */
  | { kind: 'churn'; replica: number; key: number; text: string }
  /** One update `from` made, delivered to `to` now (out of order: pending structs). */
  | { kind: 'deliver'; from: number; to: number; pick: number }

const REPLICAS = 3
const replica = fc.nat(REPLICAS - 1)
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant('set' as const),
    replica,
    key: fc.nat(5),
    value: fc.string({ maxLength: 8 }),
  }),
  fc.record({ kind: fc.constant('delete' as const), replica, key: fc.nat(5) }),
  fc.record({
    kind: fc.constant('text' as const),
    replica,
    at: fc.nat(40),
    insert: fc.string({ maxLength: 6 }),
    remove: fc.nat(4),
  }),
  fc.record({ kind: fc.constant('nest' as const), replica, key: fc.nat(2), sub: fc.nat(3) }),
  fc.record({ kind: fc.constant('sync' as const), from: replica, to: replica }),
  fc.record({
    kind: fc.constant('churn' as const),
    replica,
    key: fc.nat(5),
    text: fc.string({ minLength: 1, maxLength: 6 }),
  }),
  fc.record({
    kind: fc.constant('deliver' as const),
    from: replica,
    to: replica,
    pick: fc.nat(1_000),
  }),
)

function run(docs: readonly Y.Doc[], made: ReadonlyArray<Uint8Array[]>, step: Step): void {
  switch (step.kind) {
    case 'set':
      docs[step.replica]?.getMap('u').set(`k${step.key}`, { v: step.value })
      return
    case 'delete':
      docs[step.replica]?.getMap('u').delete(`k${step.key}`)
      return
    case 'text': {
      const text = docs[step.replica]?.getText('t')
      if (text === undefined) return
      text.insert(step.at % (text.length + 1), step.insert)
      const from = Math.floor(text.length / 3)
      const remove = Math.min(step.remove, text.length - from)
      if (remove > 0) text.delete(from, remove)
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
    case 'churn': {
      const doc = docs[step.replica]
      doc?.transact(() => {
        doc.getMap('u').set(`k${step.key}`, 1)
        doc.getMap('u').set(`k${step.key}`, 2)
        const text = doc.getText('t')
        text.insert(0, step.text)
        text.delete(0, Math.ceil(step.text.length / 2))
      })
      return
    }
    case 'sync': {
      const from = docs[step.from]
      const to = docs[step.to]
      if (from === undefined || to === undefined || from === to) return
      Y.applyUpdate(to, Y.encodeStateAsUpdate(from, Y.encodeStateVector(to)), 'remote')
      return
    }
    case 'deliver': {
      const updates = made[step.from] ?? []
      const to = docs[step.to]
      if (updates.length === 0 || to === undefined || step.from === step.to) return
      Y.applyUpdate(to, updates[step.pick % updates.length] as Uint8Array, 'remote')
    }
  }
}

describe('HistoryCount', () => {
  it('equals a scan of every struct after any history, scanning once per document', () => {
    fc.assert(
      fc.property(
        fc.array(stepArb, { minLength: 1, maxLength: 60 }),
        fc.boolean(),
        fc.nat(60),
        (steps, gc, attachAt) => {
          const docs = Array.from({ length: REPLICAS }, (_, i) => {
            const doc = new Y.Doc({ gc })
            doc.clientID = i + 1
            return doc
          })
          // What each replica wrote itself, update by update.
          const made = docs.map((doc) => {
            const list: Uint8Array[] = []
            doc.on('update', (update: Uint8Array, origin: unknown) => {
              if (origin !== 'remote') list.push(update)
            })
            return list
          })
          const count = new HistoryCount()
          const watched = docs[0] as Y.Doc
          let scanned = 0
          steps.forEach((step, i) => {
            if (i === attachAt) {
              count.of(watched)
              scanned = count.scannedStructs
            }
            run(docs, made, step)
            if (i >= attachAt) {
              const figures = count.of(watched)
              const scan = scanDeletedUnits(watched)
              let units = 0
              for (const clock of Y.decodeStateVector(Y.encodeStateVector(watched)).values())
                units += clock
              expect(figures.deleted).toBe(scan.deleted)
              expect(figures.live).toBe(units - scan.deleted)
              expect(figures.clients).toBe(watched.store.clients.size)
            }
          })
          // Followed, not scanned again.
          expect(count.scannedStructs).toBe(scanned)
          count.detach()
          for (const doc of docs) doc.destroy()
        },
      ),
      { seed, numRuns },
    )
  })

  it('counts a replaced document afresh, and stops following the old one', () => {
    const count = new HistoryCount()
    const first = new Y.Doc()
    first.getMap('u').set('a', 1)
    first.getMap('u').set('a', 2)
    expect(count.of(first)).toEqual({ clients: 1, deleted: 1, live: 1 })
    const second = new Y.Doc()
    second.getMap('u').set('b', 1)
    expect(count.of(second)).toEqual({ clients: 1, deleted: 0, live: 1 })
    // Changes of the old document no longer move the count.
    first.getMap('u').set('a', 3)
    expect(count.of(second)).toEqual({ clients: 1, deleted: 0, live: 1 })
    count.detach()
  })
})
