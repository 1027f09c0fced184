/**
 * Heap bench (issue 2): "100,000 users must fit in at most 2x the heap that
 * plain Yjs needs for the same records stored one JSON value per user".
 * Each side runs in its own process (`heap-child.ts`) so they share no heap.
 */
import {
  mb,
  printTable,
  ratioText,
  round,
  runChild,
  withTempDir,
  type Bench,
  type BenchOptions,
} from './bench.js'
import type { HeapMode, HeapResult } from './heap-child.js'

/** Heap of ours over heap of plain Yjs must not exceed this. */
const RATIO_MAX = 2.0

const LABELS: Record<HeapMode, string> = {
  plain: 'plain Yjs (Y.Map, one JSON value per user)',
  'ours-memory': 'rostersync server, memory store',
  'ours-level': 'rostersync server, LevelDB store',
}

async function measure(mode: HeapMode, users: number): Promise<HeapResult> {
  const args = (dir?: string) => [mode, String(users), ...(dir === undefined ? [] : [dir])]
  if (mode !== 'ours-level')
    return runChild<HeapResult>('heap-child.ts', args(), { exposeGc: true })
  return withTempDir((dir) => runChild<HeapResult>('heap-child.ts', args(dir), { exposeGc: true }))
}

/** The heap bench. */
export const heapBench: Bench = {
  name: 'heap',
  summary: 'heapUsed after gc for N users: rostersync server vs plain Yjs (target ratio <= 2.0)',
  async run({ users }: BenchOptions) {
    const results: HeapResult[] = []
    for (const mode of ['plain', 'ours-memory', 'ours-level'] as const) {
      console.error(`heap: measuring ${mode} with ${users} users ...`)
      results.push(await measure(mode, users))
    }
    const plain = results[0] as HeapResult
    const ratio = (r: HeapResult): number => r.heapUsedBytes / plain.heapUsedBytes
    printTable(
      `Heap: ${users.toLocaleString('en')} users (deltas over a pre-load baseline, after full gc)`,
      ['side', 'heapUsed MB', 'B/user', 'external MB', 'rss MB', 'heap ratio', 'load s'],
      results.map((r) => [
        LABELS[r.mode],
        mb(r.heapUsedBytes),
        Math.round(r.heapUsedBytes / users),
        mb(r.externalBytes),
        mb(r.rssBytes),
        ratioText(ratio(r)),
        round(r.loadSeconds),
      ]),
    )
    const verdicts: Record<string, unknown> = {}
    for (const r of results.slice(1)) {
      const pass = ratio(r) <= RATIO_MAX
      verdicts[r.mode] = pass ? 'PASS' : 'FAIL'
      console.log(
        `${pass ? 'PASS' : 'FAIL'}  ${LABELS[r.mode]}: ${ratioText(ratio(r))}x plain Yjs heap (target <= ${RATIO_MAX}x)`,
      )
    }
    return {
      users,
      ratioMax: RATIO_MAX,
      ...Object.fromEntries(
        results.map((r) => [
          r.mode,
          {
            heapUsedMB: mb(r.heapUsedBytes),
            externalMB: mb(r.externalBytes),
            rssMB: mb(r.rssBytes),
            ratio: round(ratio(r)),
            loadSeconds: round(r.loadSeconds),
          },
        ]),
      ),
      verdicts,
    }
  },
}
