/**
 * What an answer to a step 1 reuses between two transactions of the
 * document (issue 13, 1,000 devices: every answer carried the server's
 * whole state vector and delete set, made again each time): the state
 * vector the durable gate hands out is Yjs's own after any history, an
 * answer is byte for byte what Yjs writes, and askers that lack the same
 * share one kept answer (its key: what they lack, not their whole vector). Oracle: Yjs itself (`Y.encodeStateVector`, `Y.encodeStateAsUpdate`
 * on the same document). Seeds are printed; replay one with
 * `ROSTERSYNC_SEED=<seed> npx vitest run test/answer-reuse.test.ts`.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { usersRootName, type DeviceEntry } from '../core/entries.js'
import { asUserId, asWriterId } from '../core/ids.js'
import { encodeStateVectorMap } from '../core/codec.js'
import { limits } from '../core/limits.js'
import { RecordSchema } from '../core/schema.js'
import { deviceWrite } from '../core/writes.js'
import { Replica } from '../peers/replica.js'
import { joinBytes } from '../core/protocol.js'
import { memoryStore } from '../storage/level-store.js'
import { withLimits } from './helpers/limits.js'

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

const seed = Number(process.env.ROSTERSYNC_SEED ?? Date.now() % 1_000_000)

describe('answers between two transactions', () => {
  it(`state the document's state vector and write what Yjs writes, after any history (seed ${seed})`, async () => {
    console.log(
      `answer-reuse: seed ${seed} — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/answer-reuse.test.ts`,
    )
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
                const kept = replica.answers.parts(theirs)
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

  it('share one kept answer when they bring the same, whatever else their vectors say', async () => {
    const replica = await openServer()
    // Every answer large enough to keep (a roster of photos): the key decides.
    withLimits(limits, { answerCachedBytesMin: 0 })
    try {
      const first = writer(0)
      const second = writer(1)
      for (let n = 0; n < 4; n++) await replica.applyRemote(first(n))
      const level = Y.encodeStateVector(replica.doc)
      for (let n = 4; n < 6; n++) await replica.applyRemote(second(n))
      // Level with d0 and the server, lacking all of d1: said three ways.
      const claims = Y.decodeStateVector(level)
      const plain = replica.answers.parts(level)
      // Identity compared by hand: expect's toBe / not.toBe walk a
      // stream's generator when the two differ, consuming its parts.
      const overstated = new Map([...claims].map(([client, clock]) => [client, clock + 7]))
      overstated.set(424242, 9) // a client the document never saw
      expect(replica.answers.parts(encodeStateVectorMap(overstated)) === plain).toBe(true)
      const zeros = new Map(claims)
      zeros.set(5001, 0) // d1 named, at zero: the same lack
      expect(replica.answers.parts(encodeStateVectorMap(zeros)) === plain).toBe(true)
      // Lacking less of d1: another answer.
      const further = new Map(claims)
      further.set(5001, 1)
      const other = replica.answers.parts(encodeStateVectorMap(further))
      expect(other === plain).toBe(false)
      expect(joinBytes([...plain.all()])).toEqual(Y.encodeStateAsUpdate(replica.doc, level))
      expect(joinBytes([...other.all()])).toEqual(
        Y.encodeStateAsUpdate(replica.doc, encodeStateVectorMap(further)),
      )
    } finally {
      await replica.close()
    }
  })
})
