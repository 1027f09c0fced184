/**
 * Runs many simulations (a swarm of seeds) on worker threads, one seed at a
 * time per worker, handing the next seed to whichever worker is free. Each
 * seed's run is deterministic on its own, so the spread over workers and
 * their order change nothing but the wall time. Used by `rostersync sim
 * --seeds N` and by `bench/sim.ts`.
 */
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import type { SimOptions } from '../sim/options.js'
import type { SimReport } from '../sim/run.js'

/** What one seed's run comes down to, small enough to pass between threads. */
export interface SeedSummary {
  readonly seed: number
  readonly ok: boolean
  readonly converged: boolean
  readonly virtualMsToConverge: number | null
  readonly messages: number
  readonly bytes: number
  readonly events: number
  readonly faults: Record<string, number>
  readonly violationCounts: Record<string, number>
  /** The first few violations, one line each. */
  readonly violations: string[]
  readonly replay: string
  readonly traceHash: string
  /** Wall time of the run on its worker thread, ms. */
  readonly wallMs: number
}

/** Options of a swarm: everything but the seed (and no callbacks: they do not cross threads). */
export type SwarmOptions = Omit<SimOptions, 'seed' | 'onProgress'>

/** Condenses a report. */
export function summarize(report: SimReport, wallMs: number): SeedSummary {
  return {
    seed: report.seed,
    ok: report.ok,
    converged: report.converged,
    virtualMsToConverge: report.virtualMsToConverge,
    messages: report.messages,
    bytes: report.bytes,
    events: report.events,
    faults: report.faults,
    violationCounts: report.violationCounts,
    violations: report.violations
      .slice(0, 3)
      .map((v) => `${v.rule}${v.peer === undefined ? '' : ` @${v.peer}`}: ${v.detail}`),
    replay: report.replay,
    traceHash: report.traceHash,
    wallMs,
  }
}

/** Young-generation size of a swarm worker, MB (see startWorker). */
const YOUNG_GENERATION_MB = 48

/** Worker threads to use by default: every core. */
export const defaultWorkers = (): number => Math.max(1, availableParallelism())

/**
 * Starts a worker running `sim-worker`: the built `.js` directly, or, when
 * running from the TypeScript sources, through tsx's loader registered in the
 * worker first (a worker does not inherit the loader of the main thread).
 */
function startWorker(options: SwarmOptions): Worker {
  // A run allocates many short-lived objects (messages, updates, Yjs
  // transactions): a young generation larger than V8's default (16 MB)
  // halves the time spent collecting it.
  const resourceLimits = { maxYoungGenerationSizeMb: YOUNG_GENERATION_MB }
  if (!import.meta.url.endsWith('.ts'))
    return new Worker(new URL('./sim-worker.js', import.meta.url), {
      workerData: options,
      resourceLimits,
    })
  const script = new URL('./sim-worker.ts', import.meta.url).href
  const tsx = import.meta.resolve('tsx/esm/api')
  const boot = `import(${JSON.stringify(tsx)}).then((api) => { api.register(); return import(${JSON.stringify(script)}) })`
  return new Worker(boot, { eval: true, workerData: options, resourceLimits })
}

/**
 * Runs `seeds` with `options` on `workers` threads; `onSeed` hears of each
 * seed as it finishes. Resolves with every summary, in seed order.
 */
export async function runSwarm(
  options: SwarmOptions,
  seeds: readonly number[],
  workers: number,
  onSeed?: (summary: SeedSummary, done: number) => void,
): Promise<SeedSummary[]> {
  const results = new Map<number, SeedSummary>()
  let next = 0
  const one = (): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const worker = startWorker(options)
      const feed = (): void => {
        const seed = seeds[next++]
        if (seed === undefined) {
          void worker.terminate().then(() => resolve())
          return
        }
        worker.postMessage(seed)
      }
      worker.on('message', (message: SeedSummary | 'ready') => {
        if (message !== 'ready') {
          results.set(message.seed, message)
          onSeed?.(message, results.size)
        }
        feed()
      })
      worker.on('error', reject)
      worker.on('exit', (code) => {
        if (code !== 0 && next <= seeds.length)
          reject(new Error(`a simulation worker exited with ${code}`))
      })
    })
  const count = Math.max(1, Math.min(workers, seeds.length))
  await Promise.all(Array.from({ length: count }, one))
  return seeds.map((seed) => results.get(seed)).filter((s): s is SeedSummary => s !== undefined)
}
