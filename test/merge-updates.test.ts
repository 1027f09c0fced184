/**
 * A new generation's base is merged in a worker thread when large
 * (server-peer/merge-updates.ts). The merge equals `Y.mergeUpdates`; a
 * worker that takes longer than `limits.generationMergeTimeoutMs` is ended
 * and the merge rejects (the switch fails and releases the write queue:
 * review finding, it held writes for as long as the worker did); where no
 * worker can start, the merge runs on this thread.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import * as Y from 'yjs'

afterEach(() => {
  vi.doUnmock('node:worker_threads')
})

/** The module and its limits, loaded afresh (after any mock), from one module graph. */
async function fresh(): Promise<{
  mergeInWorker: typeof import('../server-peer/merge-updates.js').mergeInWorker
  limits: { generationMergeTimeoutMs: number }
}> {
  vi.resetModules()
  const { mergeInWorker } = await import('../server-peer/merge-updates.js')
  const { limits } = await import('../core/limits.js')
  return { mergeInWorker, limits }
}

function updates(): Uint8Array[] {
  return Array.from({ length: 4 }, (_, i) => {
    const doc = new Y.Doc()
    doc.clientID = 100 + i
    const map = doc.getMap('u:server')
    for (let k = 0; k < 200; k++) map.set(`u${i}-${k}`, { name: `User ${i} ${k}` })
    return Y.encodeStateAsUpdate(doc)
  })
}

describe('mergeInWorker', () => {
  it('gives what Y.mergeUpdates gives', async () => {
    const { mergeInWorker } = await fresh()
    const expected = Y.mergeUpdates(updates())
    expect(Buffer.from(await mergeInWorker(updates())).equals(Buffer.from(expected))).toBe(true)
  })

  it('ends a worker that takes longer than generationMergeTimeoutMs, and rejects', async () => {
    const { mergeInWorker, limits } = await fresh()
    // Shorter than a worker takes to start and load yjs.
    limits.generationMergeTimeoutMs = 1
    await expect(mergeInWorker(updates())).rejects.toThrow(/took more than 1 ms/)
  })

  it('merges on this thread when no worker can start', async () => {
    vi.doMock('node:worker_threads', () => ({
      Worker: class {
        constructor() {
          throw new Error('ERR_WORKER_INIT_FAILED')
        }
      },
    }))
    const { mergeInWorker } = await fresh()
    const expected = Y.mergeUpdates(updates())
    expect(Buffer.from(await mergeInWorker(updates())).equals(Buffer.from(expected))).toBe(true)
  })
})
