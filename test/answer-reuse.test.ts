/**
 * What an answer to a step 1 reuses between two transactions of the
 * document (issue 13, 1,000 devices: every answer carried the server's
 * whole state vector and delete set, made again each time): the state
 * vector the durable gate hands out is Yjs's own after any history, and a
 * small answer is made afresh, byte for byte what Yjs writes, and never
 * kept. Oracle: Yjs itself (`Y.encodeStateVector`, `Y.encodeStateAsUpdate`
 * on the same document). Seeds are printed; SEED=n replays one.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { usersRootName, type DeviceEntry } from '../core/entries.js'
import { asUserId, asWriterId } from '../core/ids.js'
import { limits } from '../core/limits.js'
import { RecordSchema } from '../core/schema.js'
import { deviceWrite } from '../core/writes.js'
import { Replica } from '../peers/replica.js'
import { joinBytes } from '../core/protocol.js'
import { memoryStore } from '../storage/level-store.js'

async function openServer(): Promise<Replica> {
  let next = 1
  return Replica.open({
    writerId: asWriterId('server'),
    store: memoryStore(),
    clock: { now: () => 1_000, setTimeout: () => undefined, clearTimeout: () => undefined },
    schema: new RecordSchema(),
    randomUint32: () => next++,
  })
}

/**
 * Device `d`'s document: each call writes one title (an overwrite deletes
 * the last one as it integrates) or, with `remove`, deletes an entry (a
 * delete only the delete set carries).
 */
function writer(d: number): (n: number, remove?: boolean) => Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = 5000 + d
  const root = doc.getMap<DeviceEntry>(usersRootName(asWriterId(`d${d}`)))
  return (n, remove = false) => {
    const before = Y.encodeStateVector(doc)
    // A remove takes an entry the device holds (the first), if any.
    const held = [...root.keys()][0]
    if (remove && held !== undefined) root.delete(held)
    else {
      const id = asUserId(`u${n % 4}`)
      root.set(id, deviceWrite(root.get(id), 0, new Map([['title', `t${d}.${n}`]]), 1_000 + n))
    }
    return Y.encodeStateAsUpdate(doc, before)
  }
}

const vectorOf = (replica: Replica): Promise<Uint8Array> =>
  replica.whenDurable((_doc, vector) => vector)

const seed = Number(process.env.SEED ?? Date.now() % 1_000_000)

describe('answers between two transactions', () => {
  it(`state the document's state vector and write what Yjs writes, after any history (seed ${seed})`, async () => {
    console.log(`answer-reuse: seed ${seed} (SEED=${seed} replays it)`)
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({
              kind: fc.constant('edit' as const),
              device: fc.integer({ min: 0, max: 2 }),
              remove: fc.boolean(),
            }),
            fc.record({
              kind: fc.constant('ask' as const),
              behind: fc.integer({ min: 0, max: 6 }),
            }),
          ),
          { minLength: 1, maxLength: 40, size: 'max' },
        ),
        async (steps) => {
          const replica = await openServer()
          try {
            const writers = [0, 1, 2].map(writer)
            const counts = [0, 0, 0]
            // What an asker that is `behind` edits short of everything holds.
            const sent: Uint8Array[] = []
            for (const step of steps) {
              if (step.kind === 'edit') {
                const write = writers[step.device] as ReturnType<typeof writer>
                const n = counts[step.device] ?? 0
                counts[step.device] = n + 1
                const update = write(n, step.remove)
                sent.push(update)
                await replica.applyRemote(update)
                continue
              }
              // Twice in a row: the second answer reuses what the first made.
              for (let twice = 0; twice < 2; twice++) {
                const vector = await vectorOf(replica)
                expect(vector).toEqual(Y.encodeStateVector(replica.doc))
                const asker = new Y.Doc()
                for (const update of sent.slice(0, Math.max(0, sent.length - step.behind)))
                  Y.applyUpdate(asker, update)
                const theirs = Y.encodeStateVector(asker)
                const kept = replica.answerParts(theirs)
                kept.finish()
                const answer = joinBytes([...kept.all()])
                if (kept.all().length === 1)
                  expect(answer).toEqual(Y.encodeStateAsUpdate(replica.doc, theirs))
                // Whatever its parts, the asker ends up holding the document.
                for (const part of kept.all()) Y.applyUpdate(asker, part)
                expect(Y.encodeStateVector(asker)).toEqual(Y.encodeStateVector(replica.doc))
                expect(Y.encodeStateAsUpdate(asker)).toEqual(Y.encodeStateAsUpdate(replica.doc))
              }
            }
          } finally {
            await replica.close()
          }
        },
      ),
      { seed, numRuns: 40 },
    )
  })

  it('a small answer is made afresh and not kept; past answerLookupOpsMin it is looked up', async () => {
    const replica = await openServer()
    const mutable = limits as { answerLookupOpsMin: number; answerCachedBytesMin: number }
    const saved = { ...mutable }
    // Every answer large enough to keep: only the lookup decides.
    mutable.answerCachedBytesMin = 0
    try {
      const edit = writer(0)
      for (let n = 0; n < 4; n++) await replica.applyRemote(edit(n))
      const empty = Y.encodeStateVector(new Y.Doc())
      const first = replica.answerParts(empty)
      const second = replica.answerParts(empty)
      // Made afresh each time: two streams, the same bytes.
      expect(second).not.toBe(first)
      expect(second.all()).toEqual(first.all())
      // With the bound below the asker's lack, the answer is kept and found.
      mutable.answerLookupOpsMin = 0
      const kept = replica.answerParts(empty)
      expect(replica.answerParts(empty)).toBe(kept)
      expect(kept.all()).toEqual(first.all())
    } finally {
      Object.assign(mutable, saved)
      await replica.close()
    }
  })
})
