/**
 * `transactionUpdate` (core/transaction-update.ts) against Yjs's own
 * 'update' event, byte for byte, after any history: local sets and
 * deletes in root maps, other writers' updates merged in (one or several
 * per transaction, so that a transaction grows several clients), map
 * overwrites that Yjs garbage-collects and merges, and transactions that
 * change nothing.
 *
 * Random; the seed is printed and replays the run:
 * `ROSTERSYNC_SEED=<seed> npx vitest run test/transaction-update.test.ts`.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { transactionUpdate } from '../core/transaction-update.js'

const seed = Number(process.env.ROSTERSYNC_SEED ?? Date.now() % 1_000_000)

const step = fc.oneof(
  // This document writes: sets and deletes in one or two maps, in one transaction.
  fc.record({
    kind: fc.constant('local' as const),
    writes: fc.array(
      fc.record({
        map: fc.constantFrom('a', 'b'),
        key: fc.integer({ min: 0, max: 4 }),
        remove: fc.boolean(),
      }),
      { maxLength: 4 },
    ),
  }),
  // Other writers write, and some of what they wrote arrives, in one transaction.
  fc.record({
    kind: fc.constant('remote' as const),
    writers: fc.uniqueArray(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 3 }),
    key: fc.integer({ min: 0, max: 4 }),
    remove: fc.boolean(),
  }),
)

describe('transactionUpdate', () => {
  it(`writes what Yjs's update event carries, after any history (seed ${seed})`, () => {
    console.log(
      `transaction-update: seed ${seed} — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/transaction-update.test.ts`,
    )
    let compared = 0
    let severalClients = 0
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 25 }), (steps) => {
        const doc = new Y.Doc()
        const writers = [0, 1, 2, 3].map(() => new Y.Doc())
        const fromYjs: Array<Uint8Array | undefined> = []
        const ours: Array<Uint8Array | undefined> = []
        let emitted: Uint8Array | undefined
        doc.on('update', (update: Uint8Array) => {
          emitted = update
        })
        doc.on('afterTransactionCleanup', (tr: Y.Transaction) => {
          ours.push(transactionUpdate(tr))
          if (tr.afterState.size > 1) severalClients++
        })
        for (const s of steps) {
          emitted = undefined
          if (s.kind === 'local') {
            doc.transact(() => {
              for (const w of s.writes) {
                const map = doc.getMap(w.map)
                if (w.remove) map.delete(String(w.key))
                else map.set(String(w.key), { v: w.key, at: fromYjs.length })
              }
            })
          } else {
            const updates = s.writers.map((i) => {
              const writer = writers[i] as Y.Doc
              const map = writer.getMap(`u:${i}`)
              if (s.remove) map.delete(String(s.key))
              else map.set(String(s.key), `${i}:${fromYjs.length}`)
              return Y.encodeStateAsUpdate(writer, Y.encodeStateVector(doc))
            })
            doc.transact(() => {
              for (const update of updates) Y.applyUpdate(doc, update)
            })
          }
          fromYjs.push(emitted)
        }
        expect(ours).toEqual(fromYjs)
        compared += fromYjs.filter((u) => u !== undefined).length
      }),
      { seed, numRuns: 300 },
    )
    // The runs reach updates, and transactions over documents of several
    // clients: about 1,000 to 1,300 of each with 300 runs, so the bound is
    // half that (1,000 failed for some seeds: 939 for seed 865558).
    expect(compared).toBeGreaterThan(500)
    expect(severalClients).toBeGreaterThan(500)
  })
})
