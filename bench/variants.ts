/**
 * Step-1 variants bench (issue 11, "Amplification"; the finding of a
 * hostile probe): devices holding the site key each send step 1s that name
 * a different clock of the server's every time, within their per-link
 * rate. No two ask for the same answer, so the answer cache cannot share
 * them, and each answer is nearly the whole roster. Measured while a
 * legitimate client keeps syncing (its round trip's p99 against idle, as
 * the flood bench does), twice in the same run against the same server:
 * with costly answers taking turns (peers/replica/answer-turns.ts, the
 * product) and without (the baseline: every answer made as its step 1
 * arrives, as before).
 *
 * Layout as the flood bench's (`load-server.ts`, `flood-probe.ts`,
 * `flood-client.ts`, each its own process on 127.0.0.1). Sizes:
 * `BENCH_VARIANTS_USERS` (20000), `BENCH_VARIANTS_LINKS` (16),
 * `BENCH_VARIANTS_SECONDS` (10), `BENCH_FLOOD_IDLE_SECONDS` (5). Run alone:
 * `npm run bench -- --only variants`. Goal: the legitimate p99 with turns
 * within 5x idle (the flood bench's), the server's event loop never held
 * past 250 ms.
 */
import { envInt, printTable, ratioText, round } from './bench.js'
import type { Bench, Cell } from './bench.js'
import { phase, withFloodRig, type PhaseResult } from './flood.js'
import type { LoadServerState } from './load-server.js'

/** Target: legitimate p99 during the flood over idle p99 (the flood bench's). */
const P99_RATIO_MAX = 5
/** Target: the server's longest event-loop delay during the flood, ms. */
const LOOP_DELAY_MAX_MS = 250

interface VariantsResult {
  readonly mode: string
  readonly result: PhaseResult
}

async function measure(): Promise<{ idleP99Ms: number; users: number; results: VariantsResult[] }> {
  const users = envInt('BENCH_VARIANTS_USERS', 20_000)
  const links = envInt('BENCH_VARIANTS_LINKS', 16)
  const seconds = envInt('BENCH_VARIANTS_SECONDS', 10)
  console.error(`variants: enrolling ${users} users ...`)
  return withFloodRig(users, async ({ server, probe, flooder, idleP99 }) => {
    // The server's clientID holding the most operations: the roster.
    const state = await server.request<LoadServerState>({ cmd: 'state' })
    const [client, clock] = Object.entries(state.stateVector)
      .map(([c, n]): [number, number] => [Number(c), n])
      .sort((a, b) => b[1] - a[1])[0] ?? [0, 0]
    const results: VariantsResult[] = []
    for (const [mode, on] of [
      ['without turns (baseline)', false],
      ['with turns (rostersync)', true],
    ] as const) {
      await server.request({ cmd: 'answer-turns', on })
      const command = { cmd: 'variants', links, seconds, client, clock }
      const name = `${links} links, step 1s of their own, ${mode}`
      results.push({ mode, result: await phase(name, server, probe, flooder, command, idleP99) })
    }
    return { idleP99Ms: round(idleP99), users, results }
  })
}

const mark = (ok: boolean): string => (ok ? 'PASS' : 'MISS')

/** The step-1 variants bench, registered in run.ts. */
export const variantsBench: Bench = {
  name: 'variants',
  summary:
    'step 1s that miss the answer cache from 16 links: legit p99 and loop delay, turns vs none',
  async run() {
    const { idleP99Ms, users, results } = await measure()
    const rows: Cell[][] = results.map(({ mode, result: r }) => [
      mode,
      r.p99Ms,
      ratioText(r.p99Ratio),
      r.probeTimeouts,
      r.loopDelayMaxMs ?? '-',
      r.serverMainCpuMs ?? '-',
      r.flood.answers ?? 0,
      round((r.flood.bytesReceived ?? 0) / 1e6),
      r.recoveryP99Ms,
    ])
    printTable(
      `variants: ${users} users; legitimate sync round trip (idle p99 ${idleP99Ms} ms) while key holders ask step 1s the cache cannot share`,
      [
        'mode',
        'p99 ms',
        'x idle',
        'timeouts',
        'loop delay max ms',
        'server main CPU ms',
        'answers',
        'MB sent',
        'after p99',
      ],
      rows,
    )
    const base = results[0]?.result
    const turns = results[1]?.result
    if (base !== undefined && turns !== undefined) {
      printTable(
        'variants: targets (with turns)',
        [
          `p99 <= ${P99_RATIO_MAX}x idle`,
          `loop delay <= ${LOOP_DELAY_MAX_MS} ms`,
          'p99 vs baseline',
        ],
        [
          [
            mark(turns.p99Ratio <= P99_RATIO_MAX),
            mark((turns.loopDelayMaxMs ?? Infinity) <= LOOP_DELAY_MAX_MS),
            `${round(turns.p99Ms / base.p99Ms, 2)}x`,
          ],
        ],
      )
    }
    return {
      users,
      idleP99Ms,
      modes: results.map(({ mode, result }) => ({ mode, ...result })),
    }
  },
}
