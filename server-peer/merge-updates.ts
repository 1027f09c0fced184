/**
 * Merges Yjs updates into one, off the event loop when they are large
 * (issue 13: a new generation's base is built in chunks, one update each;
 * its snapshot is their merge, which at 100k users costs as much CPU as
 * encoding the whole document: the loop would stall that long).
 *
 * A worker thread runs `Y.mergeUpdates` on the updates, handed over (not
 * copied), and hands the merge back the same way. Below
 * `limits.generationMergeOffThreadBytesMin` the merge runs here (a small
 * document merges in less time than a worker takes to start, and the
 * simulator stays free of real threads). The worker's code is plain
 * JavaScript evaluated from a string, loading the same `yjs` package as
 * this module: it runs the same from the TypeScript sources and from the
 * built package.
 */
import { Worker } from 'node:worker_threads'
import * as Y from 'yjs'
import { limits } from '../core/limits.js'

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const { createRequire } = require('node:module')
const Y = createRequire(workerData.from)('yjs')
parentPort.once('message', (updates) => {
  const merged = Y.mergeUpdates(updates)
  parentPort.postMessage(merged, [merged.buffer])
})
`

/** `Y.mergeUpdates(updates)`, in a worker thread when they are large. */
export async function mergeUpdates(updates: readonly Uint8Array[]): Promise<Uint8Array> {
  if (updates.length === 1) return updates[0] as Uint8Array
  let bytes = 0
  for (const update of updates) bytes += update.byteLength
  if (bytes < limits.generationMergeOffThreadBytesMin) return Y.mergeUpdates([...updates])
  return mergeInWorker(updates)
}

/**
 * The merge in a worker of its own (started for it, ended after it, or
 * after `limits.generationMergeTimeoutMs`: then it rejects). Where no
 * worker can be started, the merge runs on this thread.
 */
export function mergeInWorker(updates: readonly Uint8Array[]): Promise<Uint8Array> {
  // Handed over whole: an update sharing its buffer is copied first.
  const owned = updates.map((u) =>
    u.byteOffset === 0 && u.byteLength === u.buffer.byteLength ? u : u.slice(),
  )
  const transfer = owned.map((u) => u.buffer as ArrayBuffer)
  let worker: Worker
  try {
    worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { from: import.meta.url } })
  } catch {
    // No thread to be had (a process at its limits): the merge runs here.
    return Promise.resolve(Y.mergeUpdates([...updates]))
  }
  return new Promise<Uint8Array>((resolve, reject) => {
    let done = false
    const timer = setTimeout(
      () =>
        finish(new Error(`the merge worker took more than ${limits.generationMergeTimeoutMs} ms`)),
      limits.generationMergeTimeoutMs,
    )
    const finish = (error: Error | undefined, merged?: Uint8Array): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      void worker.terminate()
      if (error !== undefined) reject(error)
      else resolve(merged as Uint8Array)
    }
    worker.once('message', (merged: Uint8Array) => finish(undefined, merged))
    worker.once('error', (error) => finish(error))
    worker.once('exit', (code) => finish(new Error(`the merge worker exited (${code})`)))
    worker.postMessage(owned, transfer)
  })
}
