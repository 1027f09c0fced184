/**
 * Ed25519 verification on worker threads (the server's side of signed
 * writes, PROTOCOL.md "Signed writes").
 *
 * Under load a server verifies one signature per device update (about 90 µs
 * each on the 2-core bench machine, a third of its main thread at 2,000
 * updates a second: bench/README.md, "load"). Verification depends on
 * nothing but its three inputs, so it can run anywhere; everything that
 * reads the document (the update check, clientID bindings, what is fresh)
 * stays on the main thread, after the signature is known good, exactly as
 * before. The pool changes where a signature is computed, never whether
 * an update is checked or in what order a link's updates are applied (the
 * session awaits each envelope before the next).
 *
 * Jobs go to a worker as one message (one buffer, transferred, not copied
 * per job): those of one turn of the event loop, and while every worker is
 * busy with a batch, all that arrive until one answers (a message each way
 * per job cost the main thread a tenth of its time under the load bench:
 * posting, and waking up for each answer). A worker keeps its own
 * parsed keys. Keys are checked (length, small order) on the main thread
 * before a job is made (core/signing.ts, `envelopeVerifyJob`), so a worker
 * only computes. If a worker fails or the pool is closed, its outstanding
 * jobs are verified on the main thread: a job always gets its true answer,
 * never a default one.
 *
 * The worker's code is plain JavaScript over `node:crypto`, evaluated from
 * a string: it runs the same from the TypeScript sources (tsx, vitest) and
 * from the built package.
 */
import { Worker } from 'node:worker_threads'
import { limits } from '../core/limits.js'
import { PUBLIC_KEY_BYTES, SIGNATURE_BYTES, SPKI_PREFIX, verifyBytes } from '../core/signing.js'
import type { VerifyJob } from '../core/signing.js'

/** Verifies signatures off the main thread. */
export interface VerifyPool {
  /** True when `job.signature` is `job.publicKey`'s signature of `job.message`. */
  verify(job: VerifyJob): Promise<boolean>
  /** Stops the workers; jobs still out are verified on the main thread. */
  close(): Promise<void>
}

/** Most jobs in one batch: a flood's backlog goes in parts, answered as each is done. */
const BATCH_JOBS_MAX = 256

/** Bytes of a job's header in a batch: the key, the signature, the message length. */
const HEADER_BYTES = PUBLIC_KEY_BYTES + SIGNATURE_BYTES + 4

/**
 * A batch is one buffer: per job the raw key, the signature, the message
 * length (uint32, little-endian) and the message. The answer is one byte
 * per job (1: verified).
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createPublicKey, verify } = require('node:crypto')
const SPKI_PREFIX = Buffer.from('${SPKI_PREFIX.toString('hex')}', 'hex')
const KEYS_MAX = ${limits.publicKeysCachedMax}
// Below the event loop (limits.verifyWorkerNice). Linux only: there a
// thread's niceness is its own, while elsewhere the same call renices the
// whole process (macOS, BSD) or sets its priority class (Windows).
if (process.platform === 'linux') {
  try {
    const os = require('node:os')
    os.setPriority(Math.min(19, os.getPriority() + ${limits.verifyWorkerNice}))
  } catch {}
}
const keys = new Map()
function keyOf(raw) {
  const id = raw.toString('base64')
  let key = keys.get(id)
  if (key === undefined) {
    key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' })
    if (keys.size >= KEYS_MAX) keys.delete(keys.keys().next().value)
    keys.set(id, key)
  }
  return key
}
parentPort.on('message', ({ id, count, buffer }) => {
  const bytes = Buffer.from(buffer)
  const ok = new Uint8Array(count)
  let at = 0
  for (let i = 0; i < count; i++) {
    const key = bytes.subarray(at, at + ${PUBLIC_KEY_BYTES})
    const signature = bytes.subarray(at + ${PUBLIC_KEY_BYTES}, at + ${PUBLIC_KEY_BYTES + SIGNATURE_BYTES})
    const length = bytes.readUInt32LE(at + ${PUBLIC_KEY_BYTES + SIGNATURE_BYTES})
    const message = bytes.subarray(at + ${HEADER_BYTES}, at + ${HEADER_BYTES} + length)
    at += ${HEADER_BYTES} + length
    try {
      ok[i] = verify(null, message, keyOf(key), signature) ? 1 : 0
    } catch {
      ok[i] = 0
    }
  }
  parentPort.postMessage({ id, ok }, [ok.buffer])
})
`

interface Pending {
  readonly job: VerifyJob
  readonly resolve: (ok: boolean) => void
  readonly reject: (error: unknown) => void
}

interface PoolWorker {
  readonly worker: Worker
  /** Batches sent and not answered, by id. */
  readonly batches: Map<number, Pending[]>
  /** Jobs sent and not answered. */
  outstanding: number
  alive: boolean
}

/** Verifies a job on this thread: the answer a worker would give. */
const verifyHere = (job: VerifyJob): boolean =>
  verifyBytes(job.publicKey, job.message, job.signature)

/** Answers a pending job on this thread. */
function settle(p: Pending): void {
  try {
    p.resolve(verifyHere(p.job))
  } catch (error) {
    p.reject(error)
  }
}

/**
 * A pool of `workers` threads (at least 1). Its threads do not keep the
 * process alive; `close` stops them.
 */
export function createVerifyPool(workers: number): VerifyPool {
  const pool: PoolWorker[] = []
  let queued: Pending[] = []
  let flushScheduled = false
  let nextBatch = 1
  let closed = false
  // Answers from workers not yet given to their callers, in order: at most
  // `verifyAnswersPerTurnMax` per turn of the event loop. Each caller goes
  // on at once (checks and applies the update), so a batch of 256 answers
  // settled together was one turn of 4-11 ms under the load bench, and a
  // device's step 1 read meanwhile waited for all of it.
  const answers: Array<{ p: Pending; ok: boolean } | undefined> = []
  let answered = 0
  let answering: NodeJS.Immediate | undefined
  const answerTurn = (): void => {
    answering = undefined
    const end = Math.min(answers.length, answered + limits.verifyAnswersPerTurnMax)
    while (answered < end) {
      const a = answers[answered] as { p: Pending; ok: boolean }
      // Let go of the job (its message) as soon as it is answered.
      answers[answered++] = undefined
      a.p.resolve(a.ok)
    }
    if (answered >= answers.length) {
      answers.length = 0
      answered = 0
      return
    }
    // Compacted now and then: a backlog that never drains is not kept whole.
    if (answered > 1_024 && answered * 2 > answers.length) {
      answers.splice(0, answered)
      answered = 0
    }
    answering = setImmediate(answerTurn)
  }

  /** A worker's outstanding jobs, answered here (it failed, or the pool closed). */
  const settleHere = (w: PoolWorker): void => {
    w.alive = false
    const batches = [...w.batches.values()]
    w.batches.clear()
    w.outstanding = 0
    for (const batch of batches) for (const p of batch) settle(p)
    // Jobs waiting for a worker go to another, or are answered here.
    if (queued.length > 0) schedule()
  }
  const schedule = (): void => {
    if (flushScheduled) return
    flushScheduled = true
    // After the poll phase: the jobs of every message read in this turn
    // of the loop go as one batch.
    setImmediate(flush)
  }

  for (let i = 0; i < Math.max(1, workers); i++) {
    let worker: Worker
    try {
      worker = new Worker(WORKER_SOURCE, { eval: true })
    } catch {
      // No thread to be had (resource limits): this thread verifies.
      break
    }
    worker.unref()
    const w: PoolWorker = { worker, batches: new Map(), outstanding: 0, alive: true }
    worker.on('message', ({ id, ok }: { id: number; ok: Uint8Array }) => {
      const batch = w.batches.get(id)
      if (batch === undefined) return
      w.batches.delete(id)
      w.outstanding -= batch.length
      batch.forEach((p, i) => answers.push({ p, ok: ok[i] === 1 }))
      answering ??= setImmediate(answerTurn)
      // What queued meanwhile goes now, as one batch.
      if (queued.length > 0) flush()
    })
    worker.on('error', () => settleHere(w))
    worker.on('exit', () => settleHere(w))
    pool.push(w)
  }

  const flush = (): void => {
    flushScheduled = false
    if (queued.length === 0) return
    // An idle live worker takes the batch; while every one is busy the
    // jobs wait for the first answer (flushed from the message handler).
    let target: PoolWorker | undefined
    let alive = false
    for (const w of pool) {
      alive ||= w.alive
      if (w.alive && w.outstanding === 0) target = w
    }
    if (!alive) {
      const jobs = queued
      queued = []
      for (const p of jobs) settle(p)
      return
    }
    if (target === undefined) return
    const jobs = queued.splice(0, BATCH_JOBS_MAX)
    let size = 0
    for (const { job } of jobs) size += HEADER_BYTES + job.message.byteLength
    const buffer = new ArrayBuffer(size)
    const bytes = new Uint8Array(buffer)
    const view = new DataView(buffer)
    let at = 0
    for (const { job } of jobs) {
      bytes.set(job.publicKey, at)
      bytes.set(job.signature, at + PUBLIC_KEY_BYTES)
      view.setUint32(at + PUBLIC_KEY_BYTES + SIGNATURE_BYTES, job.message.byteLength, true)
      bytes.set(job.message, at + HEADER_BYTES)
      at += HEADER_BYTES + job.message.byteLength
    }
    const id = nextBatch++
    target.batches.set(id, jobs)
    target.outstanding += jobs.length
    try {
      target.worker.postMessage({ id, count: jobs.length, buffer }, [buffer])
    } catch {
      settleHere(target)
    }
  }

  return {
    verify(job) {
      // Only well-formed jobs travel: the layout has fixed-size fields.
      if (
        closed ||
        job.publicKey.byteLength !== PUBLIC_KEY_BYTES ||
        job.signature.byteLength !== SIGNATURE_BYTES
      )
        return new Promise<boolean>((resolve, reject) => settle({ job, resolve, reject }))
      return new Promise<boolean>((resolve, reject) => {
        queued.push({ job, resolve, reject })
        schedule()
      })
    },
    async close() {
      closed = true
      for (const w of pool) w.alive = false
      flush()
      for (const w of pool) settleHere(w)
      await Promise.all(pool.map((w) => w.worker.terminate()))
    },
  }
}
