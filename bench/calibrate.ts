/**
 * The machine's speed today, for comparing figures across days on a shared
 * VM (whose speed moves by tens of percent from one evening to the next):
 * a fixed single-threaded workload of the kinds the product spends its CPU
 * on (20,000 Yjs map sets in one transaction, the document encoded and
 * applied to a fresh one, 300 Ed25519 signatures and verifications), run
 * once to warm the JIT, then three times; the best of the three, in ms.
 * Lower is a faster machine; a figure taken at calibration C compares with
 * one taken at C' after scaling by C / C'.
 */
import { generateKeyPairSync, sign, verify } from 'node:crypto'
import * as Y from 'yjs'

function once(): number {
  const started = performance.now()
  const doc = new Y.Doc()
  const users = doc.getMap('u')
  doc.transact(() => {
    for (let i = 0; i < 20_000; i++) users.set(`u${i}`, { e: 0, f: { name: `N${i}` } })
  })
  const copy = new Y.Doc()
  Y.applyUpdate(copy, Y.encodeStateAsUpdate(doc))
  if (copy.getMap('u').size !== 20_000) throw new Error('calibration: the copy lost sets')
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const message = Buffer.alloc(64, 7)
  for (let i = 0; i < 300; i++) {
    if (!verify(null, message, publicKey, sign(null, message, privateKey)))
      throw new Error('calibration: a signature did not verify')
  }
  return performance.now() - started
}

/** The calibration workload's best time of three, in ms (after one warm-up run). */
export function calibrationMs(): number {
  once()
  return Math.round(Math.min(once(), once(), once()))
}
