/**
 * The server of the load bench, alone in its own process and driven by
 * `bench/load.ts` over stdin/stdout (see network-control.ts):
 *
 *   node --import tsx bench/load-server.ts <users> <dataDir>
 *
 * It opens `createServer` on LevelDB in `dataDir`, on 127.0.0.1 with a site
 * key, enrols `users` records before anything is timed, prints
 * `{ url, http, adminToken, siteKey, setupSeconds }`, then answers commands
 * until stdin closes:
 * - `{ cmd: 'stats' }`: this process's CPU seconds, memory, and the event
 *   loop's delay since the last `stats` (the delay histogram restarts);
 * - `{ cmd: 'state' }`: the document's state vector (Yjs clientID -> clock)
 *   and the number of `write-refused` events, to check the load clients'
 *   own count of acknowledged edits against;
 * - `{ cmd: 'answer-turns', on }`: whether costly answers of untrusted
 *   peers take turns (`limits.answerTurnCostMin`; off: never, the
 *   baseline of the `variants` bench);
 * - `{ cmd: 'allocations', start: true }`, then `{ cmd: 'allocations', file }`:
 *   V8's sampling heap profile of what the process allocates between the
 *   two, collected objects included (what the garbage collector works
 *   on), written to `file` (a `.heapprofile`, as Chrome's DevTools read).
 */
import { randomBytes } from 'node:crypto'
import {
  constants,
  monitorEventLoopDelay,
  PerformanceObserver,
  type PerformanceEntry,
} from 'node:perf_hooks'
import { closeSync, openSync, readSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { join } from 'node:path'
import * as Y from 'yjs'
import { limits } from '../core/limits.js'
import { createServer } from '../server-peer/create-server.js'
import { BATCH_USERS, emitResult, positiveIntArg } from './bench.js'
import {
  commands,
  cpuSeconds,
  mainThreadCpuSeconds,
  threadCpuSeconds,
  runQueueWaitSeconds,
} from './network-control.js'
import { makeRecords } from './records.js'

/** What the child prints once it listens. */
export interface LoadServerReady {
  /** `ws://127.0.0.1:<port>`. */
  readonly url: string
  /** `http://127.0.0.1:<port>`. */
  readonly http: string
  readonly adminToken: string
  readonly siteKey: string
  /** The server key's fingerprint, as an operator reads it off the server. */
  readonly keyFingerprint: string
  /** Enrolling the roster (not part of any measurement). */
  readonly setupSeconds: number
}

/** The answer to `stats`. */
export interface LoadServerStats {
  readonly cpuSeconds: number
  /** Of which the main thread's (see mainThreadCpuSeconds). */
  readonly mainThreadCpuSeconds: number | undefined
  /** Seconds the main thread has waited for a CPU since it started (see runQueueWaitSeconds). */
  readonly runQueueWaitSeconds: number | undefined
  /** CPU seconds of the process's threads by name (see threadCpuSeconds). */
  readonly threadCpuSeconds: Record<string, number> | undefined
  readonly rssBytes: number
  /** Largest RSS sampled (every 250 ms) since the last `stats`. */
  readonly rssMaxBytes: number
  readonly heapUsedBytes: number
  /** Event-loop delay since the last `stats`, ms: how late a 2 ms timer ran. */
  readonly loopDelayP50Ms: number
  readonly loopDelayP99Ms: number
  readonly loopDelayMaxMs: number
  /** Garbage-collection pauses since the last `stats`: count, total and longest, ms. */
  readonly gcCount: number
  readonly gcTotalMs: number
  readonly gcMaxMs: number
  /** The longest pause of a full (mark-compact) collection, ms; 0 when none ran. */
  readonly gcMajorMaxMs: number
  /**
   * With `BENCH_LOOP_STALLS=1`: of the event loop's gaps over 4 ms since the
   * last `stats`, the most main-thread CPU one took (ms; an upper bound of
   * the longest turn's work, whatever the machine's load), and how many
   * took over 10 ms of CPU.
   */
  readonly stallCpuMaxMs?: number
  readonly stallsOver10CpuMs?: number
}

/** The answer to `state`. */
export interface LoadServerState {
  /** Yjs clientID (as text) -> number of operations of it the server holds. */
  readonly stateVector: Record<string, number>
  /** `write-refused` and `save-to-server-failed` events in the server's log (at most 10,000). */
  readonly refusedEvents: number
}

/** Interval of the event-loop delay sampler, ms. */
const LOOP_RESOLUTION_MS = 2

/**
 * A sampled interval (ns) as the delay beyond the sampler's own interval,
 * ms: how late the timer ran.
 */
const lateMs = (ns: number): number => Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS)

/**
 * Diagnostic (`BENCH_LOOP_STALLS=1`): every gap of the event loop over
 * STALL_MS (between runs of a 1 ms timer), with how much of it the main
 * thread was on a CPU and waiting for one (schedstat): a long turn of
 * work, or the thread waiting for the machine. Listed on stderr at each
 * `stats` ([start µs of process.hrtime, to find it in a CPU profile; gap
 * ms; on CPU ms; waiting ms]); costs a read of schedstat per ms.
 */
const STALL_MS = 4
class StallTracer {
  private readonly fd = openSync(`/proc/self/task/${process.pid}/schedstat`, 'r')
  private readonly buffer = Buffer.alloc(128)
  private last = process.hrtime.bigint()
  private waitNs = 0
  private lastCpu = this.cpuNs()
  private lastWait = this.waitNs
  private stalls: Array<[number, number, number, number]> = []
  private readonly timer = setInterval(() => this.tick(), 1)

  private cpuNs(): number {
    const n = readSync(this.fd, this.buffer, 0, 128, 0)
    const fields = this.buffer.toString('latin1', 0, n).split(' ')
    this.waitNs = Number(fields[1])
    return Number(fields[0])
  }

  private tick(): void {
    const now = process.hrtime.bigint()
    const cpu = this.cpuNs()
    const gapMs = Number(now - this.last) / 1e6
    if (gapMs > STALL_MS)
      this.stalls.push([
        Number(this.last / 1000n),
        Math.round(gapMs * 10) / 10,
        Math.round((cpu - this.lastCpu) / 1e5) / 10,
        Math.round((this.waitNs - this.lastWait) / 1e5) / 10,
      ])
    this.last = now
    this.lastCpu = cpu
    this.lastWait = this.waitNs
  }

  /** The stalls since the last take: [start µs (hrtime), gap ms, on CPU ms, waiting for a CPU ms]. */
  take(): Array<[number, number, number, number]> {
    return this.stalls.splice(0)
  }

  stop(): void {
    clearInterval(this.timer)
    closeSync(this.fd)
  }
}

async function main(): Promise<void> {
  const [usersArg, dataDir] = process.argv.slice(2)
  if (dataDir === undefined) {
    console.error('usage: load-server.ts <users> <dataDir>')
    process.exit(2)
  }
  const users = positiveIntArg(usersArg, 'users')
  const started = performance.now()
  const siteKey = randomBytes(16).toString('hex')
  const server = await createServer({
    dataDir: join(dataDir, 'server'),
    host: '127.0.0.1',
    port: 0,
    siteKey,
  })
  for (let from = 0; from < users; from += BATCH_USERS) {
    const round = makeRecords(from, Math.min(BATCH_USERS, users - from))
    await Promise.all(round.map((record) => server.users.put(record)))
  }
  const ready: LoadServerReady = {
    url: server.url,
    http: server.http,
    adminToken: server.adminToken,
    siteKey,
    keyFingerprint: server.keyFingerprint,
    setupSeconds: (performance.now() - started) / 1000,
  }
  // The delay of the event loop is the server's own view of how long any
  // ready work (an HTTP request, a step 1) waits behind other work.
  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS })
  loop.enable()
  let rssMax = 0
  let gc = { count: 0, totalMs: 0, maxMs: 0, majorMaxMs: 0 }
  const gcObserver = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gc.count++
      gc.totalMs += entry.duration
      gc.maxMs = Math.max(gc.maxMs, entry.duration)
      const kind = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind
      if (kind === constants.NODE_PERFORMANCE_GC_MAJOR)
        gc.majorMaxMs = Math.max(gc.majorMaxMs, entry.duration)
    }
  })
  gcObserver.observe({ entryTypes: ['gc'] })
  const sampler = setInterval(() => {
    rssMax = Math.max(rssMax, process.memoryUsage.rss())
  }, 250)
  const stalls = process.env.BENCH_LOOP_STALLS === '1' ? new StallTracer() : undefined
  let allocations: Session | undefined
  const { answerTurnCostMin } = limits
  emitResult({ ...ready })
  for await (const command of commands()) {
    switch (command.cmd) {
      case 'stats': {
        const memory = process.memoryUsage()
        const gaps = stalls?.take()
        const stats: LoadServerStats = {
          cpuSeconds: cpuSeconds(),
          mainThreadCpuSeconds: mainThreadCpuSeconds(),
          runQueueWaitSeconds: runQueueWaitSeconds(),
          threadCpuSeconds: threadCpuSeconds(),
          rssBytes: memory.rss,
          rssMaxBytes: Math.max(rssMax, memory.rss),
          heapUsedBytes: memory.heapUsed,
          loopDelayP50Ms: lateMs(loop.percentile(50)),
          loopDelayP99Ms: lateMs(loop.percentile(99)),
          loopDelayMaxMs: lateMs(loop.max),
          gcCount: gc.count,
          gcTotalMs: gc.totalMs,
          gcMaxMs: gc.maxMs,
          gcMajorMaxMs: gc.majorMaxMs,
          ...(gaps === undefined
            ? {}
            : {
                stallCpuMaxMs: Math.max(0, ...gaps.map((g) => g[2])),
                stallsOver10CpuMs: gaps.filter((g) => g[2] > 10).length,
              }),
        }
        if (gaps !== undefined) console.error(`stalls: ${JSON.stringify(gaps)}`)
        loop.reset()
        gc = { count: 0, totalMs: 0, maxMs: 0, majorMaxMs: 0 }
        rssMax = 0
        emitResult({ ...stats })
        break
      }
      case 'allocations': {
        if (command.start === true) {
          allocations = new Session()
          allocations.connect()
          await allocations.post('HeapProfiler.startSampling', {
            samplingInterval: 16_384,
            includeObjectsCollectedByMajorGC: true,
            includeObjectsCollectedByMinorGC: true,
          })
        } else if (allocations !== undefined) {
          const { profile } = await allocations.post('HeapProfiler.stopSampling')
          writeFileSync(String(command.file), JSON.stringify(profile))
          allocations.disconnect()
          allocations = undefined
        }
        emitResult({ ok: true })
        break
      }
      case 'answer-turns': {
        // The bounds are read-only to the product; the bench sets this one.
        ;(limits as { answerTurnCostMin: number }).answerTurnCostMin =
          command.on === false ? Number.POSITIVE_INFINITY : answerTurnCostMin
        emitResult({ ok: true })
        break
      }
      case 'state': {
        const vector = Y.decodeStateVector(Y.encodeStateVector(server.replica.doc))
        const refused = server.events.query({ type: ['write-refused', 'save-to-server-failed'] })
        const state: LoadServerState = {
          stateVector: Object.fromEntries([...vector].map(([client, clock]) => [client, clock])),
          refusedEvents: refused.length,
        }
        emitResult({ ...state })
        break
      }
      default:
        throw new Error(`unknown command ${JSON.stringify(command)}`)
    }
  }
  clearInterval(sampler)
  stalls?.stop()
  gcObserver.disconnect()
  loop.disable()
  await server.close()
}

await main()
