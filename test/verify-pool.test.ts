import { readdirSync, readFileSync } from 'node:fs'
import { getPriority } from 'node:os'
import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { checkUpdate } from '../core/authorize.js'
import {
  deriveClientId,
  encodeEnvelope,
  keyPairFromSeed,
  sealEnvelope,
  signBytes,
  verifyBytes,
  type KeyPair,
  type VerifyJob,
} from '../core/signing.js'
import { limits } from '../core/limits.js'
import { memoryStore } from '../storage/level-store.js'
import { Identity } from '../peers/identity.js'
import { ServerSigning } from '../peers/server-signing.js'
import type { OpenedEnvelope } from '../peers/signed-link.js'
import { createVerifyPool, type VerifyPool } from '../peers/verify-pool.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { seedFromEnv } from './helpers/property-seed.js'

const keys = [1, 2, 3].map((n) => keyPairFromSeed(new Uint8Array(32).fill(n)))

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

function pool(workers: number): VerifyPool {
  const p = createVerifyPool(workers)
  closers.push(() => p.close())
  return p
}

/** A job: signed by `signer` over `message`, checked against `claimed`, maybe with a byte flipped. */
const jobArb = fc
  .record({
    signer: fc.integer({ min: 0, max: 2 }),
    claimed: fc.integer({ min: 0, max: 2 }),
    message: fc.uint8Array({ maxLength: 300 }),
    flip: fc.option(fc.nat(), { nil: undefined }),
  })
  .map(({ signer, claimed, message, flip }): VerifyJob => {
    const signature = signBytes(keys[signer] as KeyPair, message)
    if (flip !== undefined) {
      const at = flip % (message.length + signature.length)
      if (at < signature.length) signature[at] = (signature[at] as number) ^ 1
      else message[at - signature.length] = (message[at - signature.length] as number) ^ 1
    }
    return { publicKey: (keys[claimed] as KeyPair).publicKey, message, signature }
  })

const truth = (job: VerifyJob): boolean => verifyBytes(job.publicKey, job.message, job.signature)

describe('verification pool', () => {
  it('answers every job as the main thread does, batched or not', async () => {
    const verifier = pool(2)
    const seed = seedFromEnv()
    console.log(`verify pool property: seed ${seed} (replay with ROSTERSYNC_SEED=${seed})`)
    await fc.assert(
      fc.asyncProperty(fc.array(jobArb, { minLength: 1, maxLength: 40 }), async (jobs) => {
        // All in one turn (one batch), then one per turn.
        const together = await Promise.all(jobs.map((job) => verifier.verify(job)))
        expect(together).toEqual(jobs.map(truth))
        for (const job of jobs) expect(await verifier.verify(job)).toBe(truth(job))
      }),
      { seed, numRuns: 60 },
    )
  })

  it('a backlog larger than a batch, arriving while the worker is busy, gets every answer in order', async () => {
    const verifier = pool(1)
    const jobs = fc.sample(jobArb, { seed: 7, numRuns: 700 })
    const first = jobs.slice(0, 300).map((job) => verifier.verify(job))
    // Queued while the first batches are out.
    await new Promise((resolve) => setImmediate(resolve))
    const rest = jobs.slice(300).map((job) => verifier.verify(job))
    expect(await Promise.all([...first, ...rest])).toEqual(jobs.map(truth))
  })

  it('gives the answers of a batch to their callers verifyAnswersPerTurnMax per turn of the event loop, in order', async () => {
    const verifier = pool(1)
    const perTurn = limits.verifyAnswersPerTurnMax
    const jobs = fc.sample(jobArb, { seed: 11, numRuns: 3 * perTurn + 1 })
    // The turn each answer arrives in: `turn` grows once per turn of the
    // loop (a check-phase callback that schedules itself again).
    let turn = 0
    let ticking = true
    const tick = (): void => {
      turn++
      if (ticking) setImmediate(tick)
    }
    setImmediate(tick)
    const order: number[] = []
    const turns: number[] = []
    const answers = await Promise.all(
      jobs.map((job, i) =>
        verifier.verify(job).then((ok) => {
          order.push(i)
          turns.push(turn)
          return ok
        }),
      ),
    )
    ticking = false
    expect(answers).toEqual(jobs.map(truth))
    expect(order).toEqual(jobs.map((_, i) => i))
    const perTurnCounts = new Map<number, number>()
    for (const t of turns) perTurnCounts.set(t, (perTurnCounts.get(t) ?? 0) + 1)
    expect(perTurnCounts.size).toBeGreaterThanOrEqual(4)
    for (const n of perTurnCounts.values()) expect(n).toBeLessThanOrEqual(perTurn)
  })

  it.runIf(process.platform === 'linux')(
    'its workers run limits.verifyWorkerNice below the thread that started them (Linux: per thread)',
    async () => {
      const niceOf = (tid: string): number => {
        const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
        // Fields after the command name: state is the 3rd, niceness the 19th.
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])
      }
      // This thread's own niceness (Linux's getpriority(PRIO_PROCESS, 0)).
      const own = getPriority()
      const before = new Set(readdirSync('/proc/self/task'))
      const verifier = pool(1)
      // Answered by the worker: it has lowered itself by then.
      const key = keys[0] as KeyPair
      const message = new Uint8Array([1])
      const job = { publicKey: key.publicKey, message, signature: signBytes(key, message) }
      expect(await verifier.verify(job)).toBe(true)
      const started = readdirSync('/proc/self/task').filter((tid) => !before.has(tid))
      expect(started.map(niceOf)).toContain(Math.min(19, own + limits.verifyWorkerNice))
      // The thread that made the pool keeps its own.
      expect(getPriority()).toBe(own)
    },
  )

  it('a signature of the wrong length is refused, not sent', async () => {
    const verifier = pool(1)
    const message = new Uint8Array([1, 2, 3])
    const signature = signBytes(keys[0] as KeyPair, message)
    const job = { publicKey: (keys[0] as KeyPair).publicKey, message }
    expect(await verifier.verify({ ...job, signature })).toBe(true)
    expect(await verifier.verify({ ...job, signature: signature.subarray(1) })).toBe(false)
  })

  it('jobs still out when the pool closes get their true answers, and so do later ones', async () => {
    const verifier = createVerifyPool(1)
    const message = new Uint8Array([9, 9, 9])
    const good = {
      publicKey: (keys[0] as KeyPair).publicKey,
      message,
      signature: signBytes(keys[0] as KeyPair, message),
    }
    const bad = { ...good, publicKey: (keys[1] as KeyPair).publicKey }
    const out = [verifier.verify(good), verifier.verify(bad)]
    await verifier.close()
    expect(await Promise.all(out)).toEqual([true, false])
    expect(await verifier.verify(good)).toBe(true)
    expect(await verifier.verify(bad)).toBe(false)
  })
})

/** An update of `writer`'s own part under its clientID for nonce 1. */
function ownUpdate(key: KeyPair, writer: string, root = `u:${writer}`): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = deriveClientId(key.publicKey, 1)
  doc.getMap(root).set('u1', { e: 0, f: { email: 'a@b.c' }, s: { email: 1 } })
  return Y.encodeStateAsUpdate(doc)
}

describe("the server's signed links with a verification pool", () => {
  const device = keys[0] as KeyPair
  const other = keys[1] as KeyPair

  /** A ServerSigning over a server's replica; `key()` is the registry's answer for D9. */
  async function signer(
    withPool: boolean,
    key: () => Uint8Array | undefined,
  ): Promise<{ signing: ServerSigning; server: ServerPeer }> {
    const server = await createServer({ store: memoryStore(), siteKey: 'k', listen: false })
    closers.push(() => server.close())
    const identity = await Identity.open(memoryStore(), () => 7)
    const signing = new ServerSigning({
      identity,
      replica: server.replica,
      deviceKey: (id) => (id === 'D9' ? key() : undefined),
      check: (update, writer) => {
        checkUpdate(server.replica.doc, update, {
          mayWrite: (owner) => owner === writer,
          now: Date.now(),
        })
      },
      ...(withPool ? { pool: pool(1) } : {}),
    })
    return { signing, server }
  }

  const outcome = async (
    open: () => OpenedEnvelope | Promise<OpenedEnvelope>,
  ): Promise<{ fresh: boolean } | { code: unknown; message: unknown }> => {
    try {
      const opened = await open()
      return { fresh: opened.fresh }
    } catch (error) {
      const e = error as { code?: unknown; message?: unknown }
      return { code: e.code, message: e.message }
    }
  }

  it('opens, and refuses with the same typed errors, as the in-line path', async () => {
    const inline = (await signer(false, () => device.publicKey)).signing
    const pooled = (await signer(true, () => device.publicKey)).signing
    const cases = (site: string): Uint8Array[] => {
      const good = encodeEnvelope(
        sealEnvelope(device, site, { writer: 'D9', nonces: [1], update: ownUpdate(device, 'D9') }),
      )
      const tampered = new Uint8Array(good)
      tampered[tampered.length - 5] = (tampered[tampered.length - 5] as number) ^ 1
      return [
        good,
        tampered,
        // Signed by another key.
        encodeEnvelope(
          sealEnvelope(other, site, { writer: 'D9', nonces: [1], update: ownUpdate(device, 'D9') }),
        ),
        // Its own signature, another writer's part.
        encodeEnvelope(
          sealEnvelope(device, site, {
            writer: 'D9',
            nonces: [1],
            update: ownUpdate(device, 'D9', 'u:D2'),
          }),
        ),
        // A clientID its key does not derive.
        encodeEnvelope(
          sealEnvelope(device, site, {
            writer: 'D9',
            nonces: [2],
            update: ownUpdate(device, 'D9'),
          }),
        ),
        // No such device.
        encodeEnvelope(
          sealEnvelope(device, site, {
            writer: 'D8',
            nonces: [1],
            update: ownUpdate(device, 'D8'),
          }),
        ),
        new Uint8Array([1, 2, 3]),
      ]
    }
    // Both signers share no key, so each gets envelopes for its own site.
    const a = await Promise.all(
      cases(inline.site).map((bytes) => outcome(() => inline.link('D9').open(bytes))),
    )
    const b = await Promise.all(
      cases(pooled.site).map((bytes) => outcome(() => pooled.link('D9').open(bytes))),
    )
    expect(b).toEqual(a)
    expect(a.map((o) => ('code' in o ? o.code : 'ok'))).toEqual([
      'ok',
      'SIGNATURE_INVALID',
      'SIGNATURE_INVALID',
      'FORBIDDEN_WRITE',
      'FORBIDDEN_WRITE',
      'SIGNATURE_INVALID',
      'MALFORMED_MESSAGE',
    ])
  })

  it("a device revoked while its envelope's signature is checked is refused", async () => {
    let registered: Uint8Array | undefined = device.publicKey
    const { signing } = await signer(true, () => registered)
    const bytes = encodeEnvelope(
      sealEnvelope(device, signing.site, {
        writer: 'D9',
        nonces: [1],
        update: ownUpdate(device, 'D9'),
      }),
    )
    const opening = signing.link('D9').open(bytes)
    expect(opening).toBeInstanceOf(Promise)
    registered = undefined
    await expect(opening).rejects.toMatchObject({ code: 'SIGNATURE_INVALID' })
    // Registered again (another key): checked against the key held now.
    registered = other.publicKey
    const again = signing.link('D9').open(bytes)
    registered = device.publicKey
    await expect(again).resolves.toMatchObject({ writer: 'D9', fresh: true })
  })
})
