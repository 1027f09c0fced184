/**
 * Signed writes (issue 11): what a signature costs, side by side with the
 * work it guards, in one process.
 *
 * - Per device update (one user's entry, as a device writes it): the
 *   receiver's cost to open an envelope (decode, one strict scan, signature,
 *   derived clientIDs, the update check) against the plain path (the update
 *   check alone) and against applying the update (Yjs); and the same with
 *   the signatures verified on the server's worker pool
 *   (peers/verify-pool.ts): what is left on the main thread, and the wall
 *   time per update.
 * - A full sync of N users (the server's step 2): what the server adds to
 *   sign it (one SHA-256 of the update and a signature) and the device to
 *   check it, against Yjs applying the same update into an empty document
 *   (the plain full sync's receiving side, its largest cost).
 *
 * Targets: a full sync <= 1.2x plain Yjs; per-update verification reported.
 */
import { performance } from 'node:perf_hooks'
import * as Y from 'yjs'
import { checkUpdate } from '../core/authorize.js'
import { asWriterId } from '../core/ids.js'
import { RecordSchema } from '../core/schema.js'
import {
  decodeEnvelope,
  deriveClientId,
  encodeEnvelope,
  envelopeClients,
  envelopeVerifyJob,
  keyPairFromSeed,
  sealEnvelope,
  verifyEnvelope,
  type Envelope,
} from '../core/signing.js'
import { scanUpdate, type UpdateRanges } from '../core/update-scan.js'
import { createVerifyPool } from '../peers/verify-pool.js'
import { printTable, ratioText, round, type Bench } from './bench.js'
import { makeRecords } from './records.js'

const SITE = 'bench-site'
/** Updates timed per side. */
const UPDATES = 5_000
/** Envelopes in flight on the pool at once (what 200 links may have out). */
const POOL_BATCH = 200
/** Target: a signed full sync over a plain one. */
const FULL_SYNC_RATIO_MAX = 1.2

function best(runs: number, time: () => number): number {
  let min = Infinity
  for (let i = 0; i < runs; i++) min = Math.min(min, time())
  return min
}

function timeIt(work: () => void): number {
  const start = performance.now()
  work()
  return performance.now() - start
}

/** One device's edits: `count` updates, each replacing one user's entry. */
function deviceUpdates(clientId: number, count: number): Uint8Array[] {
  const doc = new Y.Doc()
  doc.clientID = clientId
  const updates: Uint8Array[] = []
  doc.on('update', (u: Uint8Array) => updates.push(u))
  const now = Date.now()
  for (let i = 0; i < count; i++) {
    doc
      .getMap('u:D1')
      .set(`u${i % 500}`, { e: 0, f: { email: `u${i}@example.com` }, s: { email: now } })
  }
  return updates
}

export const signingBench: Bench = {
  name: 'signing',
  summary: 'signed writes: per-update verification and a full sync, against the plain paths',
  async run({ users, runs }) {
    const device = keyPairFromSeed(new Uint8Array(32).fill(1))
    const server = keyPairFromSeed(new Uint8Array(32).fill(2))
    const schema = new RecordSchema({})
    const nonce = 7
    const updates = deviceUpdates(deriveClientId(device.publicKey, nonce), UPDATES)
    const envelopes = updates.map((update) =>
      encodeEnvelope(sealEnvelope(device, SITE, { writer: 'D1', nonces: [nonce], update })),
    )
    // Each update is checked, then applied, as a receiver does: the check
    // of a later update finds the entry it replaces in the document.
    const checkThenApply = (receiver: Y.Doc, update: Uint8Array): void => {
      checkUpdate(receiver, update, {
        mayWrite: (owner) => owner === asWriterId('D1'),
        schema,
        now: Date.now(),
      })
      Y.applyUpdate(receiver, update)
    }
    const plainMs = best(runs, () => {
      const receiver = new Y.Doc()
      return timeIt(() => updates.forEach((update) => checkThenApply(receiver, update)))
    })
    // What the server does past the signature, once it is known good.
    const admit = (receiver: Y.Doc, envelope: Envelope, ranges: UpdateRanges): void => {
      const allowed = envelopeClients(envelope, device.publicKey)
      for (const client of ranges.from.keys())
        if (!allowed.has(client)) throw new Error('not derived')
      checkThenApply(receiver, envelope.update)
    }
    const signedMs = best(runs, () => {
      const receiver = new Y.Doc()
      return timeIt(() => {
        for (const bytes of envelopes) {
          const envelope = decodeEnvelope(bytes)
          const ranges = scanUpdate(envelope.update)
          verifyEnvelope(envelope, device.publicKey, SITE)
          admit(receiver, envelope, ranges)
        }
      })
    })
    // On the pool: decode, scan and the signed body on the main thread,
    // the signatures on a worker, POOL_BATCH envelopes in flight at a time.
    const pool = createVerifyPool(1)
    let pooledMainMs = Infinity
    let pooledWallMs = Infinity
    try {
      for (let r = 0; r < runs; r++) {
        const receiver = new Y.Doc()
        let main = 0
        const start = performance.now()
        for (let at = 0; at < envelopes.length; at += POOL_BATCH) {
          let t = performance.now()
          const opening = envelopes.slice(at, at + POOL_BATCH).map((bytes) => {
            const envelope = decodeEnvelope(bytes)
            const ranges = scanUpdate(envelope.update)
            const verdict = pool.verify(envelopeVerifyJob(envelope, device.publicKey, SITE))
            return { envelope, ranges, verdict }
          })
          main += performance.now() - t
          const verdicts = await Promise.all(opening.map((o) => o.verdict))
          t = performance.now()
          opening.forEach((o, i) => {
            if (verdicts[i] !== true) throw new Error('signature refused')
            admit(receiver, o.envelope, o.ranges)
          })
          main += performance.now() - t
        }
        pooledWallMs = Math.min(pooledWallMs, performance.now() - start)
        pooledMainMs = Math.min(pooledMainMs, main)
      }
    } finally {
      await pool.close()
    }
    const applyMs = best(runs, () =>
      timeIt(() => {
        const doc = new Y.Doc()
        for (const update of updates) Y.applyUpdate(doc, update)
      }),
    )
    const signMs = best(runs, () =>
      timeIt(() => {
        for (const update of updates)
          sealEnvelope(device, SITE, { writer: 'D1', nonces: [nonce], update })
      }),
    )
    const perUpdate = (ms: number): number => round((ms / UPDATES) * 1000, 1)
    printTable(
      `signing — per device update (${UPDATES.toLocaleString('en')} updates, best of ${runs})`,
      ['path', 'µs per update'],
      [
        ['plain: update check + apply', perUpdate(plainMs)],
        ['signed: decode + verify + clientIDs + update check + apply', perUpdate(signedMs)],
        ['  of which verification (signed - plain)', perUpdate(signedMs - plainMs)],
        ['signed, verified on the pool: main thread', perUpdate(pooledMainMs)],
        ['signed, verified on the pool: wall (1 worker)', perUpdate(pooledWallMs)],
        ['device: sign one update', perUpdate(signMs)],
        ['Yjs: apply one update', perUpdate(applyMs)],
      ],
    )

    // A full sync of `users` users: the server's step 2.
    const full = new Y.Doc()
    full.clientID = deriveClientId(server.publicKey, 1)
    full.transact(() => {
      const map = full.getMap('u:server')
      for (const record of makeRecords(0, users)) {
        const { id, ...fields } = record
        map.set(id, { e: 0, t: 1, f: fields })
      }
    })
    const step2 = Y.encodeStateAsUpdate(full)
    const applyFullMs = best(runs, () => timeIt(() => Y.applyUpdate(new Y.Doc(), step2)))
    let sealed: Uint8Array = new Uint8Array(0)
    const sealMs = best(runs, () =>
      timeIt(() => {
        sealed = encodeEnvelope(
          sealEnvelope(server, SITE, { writer: 'server', nonces: [], update: step2 }),
        )
      }),
    )
    const openMs = best(runs, () =>
      timeIt(() => verifyEnvelope(decodeEnvelope(sealed), server.publicKey, SITE)),
    )
    const ratio = (applyFullMs + sealMs + openMs) / applyFullMs
    printTable(
      `signing — full sync of ${users.toLocaleString('en')} users (${(step2.byteLength / 1e6).toFixed(1)} MB step 2, best of ${runs})`,
      ['side', 'ms'],
      [
        ['plain: Yjs applies the step 2', round(applyFullMs, 1)],
        ['server: sign it (SHA-256 + Ed25519)', round(sealMs, 1)],
        ['device: check it (decode + SHA-256 + Ed25519)', round(openMs, 1)],
        [
          `signed / plain (target <= ${FULL_SYNC_RATIO_MAX}): ${ratio <= FULL_SYNC_RATIO_MAX ? 'PASS' : 'MISS'}`,
          ratioText(ratio),
        ],
      ],
    )
    return {
      signingPlainCheckApplyUsPerUpdate: perUpdate(plainMs),
      signingSignedCheckApplyUsPerUpdate: perUpdate(signedMs),
      signingVerifyUsPerUpdate: perUpdate(signedMs - plainMs),
      signingPooledMainUsPerUpdate: perUpdate(pooledMainMs),
      signingPooledWallUsPerUpdate: perUpdate(pooledWallMs),
      signingSignUsPerUpdate: perUpdate(signMs),
      signingApplyUsPerUpdate: perUpdate(applyMs),
      signingFullSyncApplyMs: round(applyFullMs, 1),
      signingFullSyncSealMs: round(sealMs, 1),
      signingFullSyncOpenMs: round(openMs, 1),
      signingFullSyncRatio: round(ratio, 3),
    }
  },
}
