/**
 * Load bench (issue 5, "Performance"): 200 devices each sending 10 edits a
 * second to one server for 60 s. Measured: the server's answer time to an
 * HTTP roster read and to a device's sync step 1, p50 / p99, under that load
 * against the same with no load. Goals: p99 under load <= 3x idle, and no
 * edit lost (every edit is counted: sent, and acknowledged by the server).
 *
 * Layout, each in its own process, all on 127.0.0.1:
 * - `load-server.ts`: `createServer` on LevelDB with a site key and a roster;
 * - `load-probe.ts`: the two probes (HTTP GET of one user; a device's step 1
 *   timed to the server's step 2), 20 of each a second;
 * - `load-clients.ts` x2: the devices, half in each, as lightweight protocol
 *   clients (a socket and a Y.Doc each, live mode).
 * This process only orchestrates. Phases: a warm-up of the probes (not
 * counted), the probes alone (idle), the devices connect and sync, then the
 * devices edit while the probes run again (load); once the edits stop,
 * every device asks the server what it holds of it (its answer to step 1
 * comes after everything the connection sent before is durable), and the
 * server's state vector is read as a second count.
 *
 * Sizes come from environment variables (the runner's flags are shared by
 * every bench): `BENCH_LOAD_DEVICES` (200), `BENCH_LOAD_RATE` (edits per
 * device per second, 10), `BENCH_LOAD_SECONDS` (60), `BENCH_LOAD_IDLE_SECONDS`
 * (as long as the load), `BENCH_LOAD_CLIENT_NICE` (niceness of the client
 * processes, 19; see load-clients.ts), `BENCH_LOAD_CLIENT_SCHED` (`idle`:
 * the clients in Linux's SCHED_IDLE class, the default; `normal`).
 * `BENCH_CPU_PROF=<dir>` writes a CPU profile of every child;
 * `BENCH_LOAD_ALLOCATIONS=<file>` the server's sampled allocations during
 * the load (see load-server.ts, `allocations`).
 */
import { cpus, loadavg } from 'node:os'
import { mb, printTable, quantile, ratioText, round, withTempDir } from './bench.js'
import type { Bench, BenchOptions, Cell } from './bench.js'
import type { AckDone, ClientsReady, LoadDone } from './load-clients.js'
import type { ProbeTimes } from './load-probe.js'
import type { LoadServerReady, LoadServerState, LoadServerStats } from './load-server.js'
import { ControlledChild, difference, withChild } from './network-control.js'

/** Goal: p99 answer time under load over p99 idle. */
const P99_RATIO_MAX = 3
/** Roster size: the answers measured are about one user and one delta, not the roster. */
const LOAD_USERS_MAX = 1_000
/** Processes the devices are split over (each reads its sockets on one core at most). */
const CLIENT_PROCESSES = 2
/** Probes of each kind per second. */
const PROBE_RATE = 20
/** Probing before the idle phase, not counted: it pays for JIT compilation. */
const WARMUP_SECONDS = 3
/** Where the server's allocation profile of the load goes, if anywhere (see the module comment). */
const ALLOCATIONS_FILE = process.env.BENCH_LOAD_ALLOCATIONS || undefined
/**
 * How long the devices may wait for the server to acknowledge every edit
 * after the load: a server that falls behind takes in its backlog first.
 */
const ACK_TIMEOUT_MS = 1_200_000

/** The sizes of one run. */
export interface LoadSizes {
  readonly devices: number
  readonly rate: number
  readonly seconds: number
  readonly idleSeconds: number
  readonly users: number
}

/** A positive number from the environment, or the default; exits 2 on a bad value. */
function envNumber(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`${name} must be a positive number, got ${JSON.stringify(raw)}`)
    process.exit(2)
  }
  return n
}

export function sizes(users: number): LoadSizes {
  return {
    devices: Math.max(CLIENT_PROCESSES, Math.round(envNumber('BENCH_LOAD_DEVICES', 200))),
    rate: envNumber('BENCH_LOAD_RATE', 10),
    seconds: envNumber('BENCH_LOAD_SECONDS', 60),
    // As long as the load by default: both p99s then come from as many
    // probes (a p99 of 400 probes is their 4th slowest, and swung from 1.2
    // to 4 ms between runs of the same idle server).
    idleSeconds: envNumber('BENCH_LOAD_IDLE_SECONDS', envNumber('BENCH_LOAD_SECONDS', 60)),
    users: Math.min(users, LOAD_USERS_MAX),
  }
}

/** p50 / p99 / max of one probe in one phase, ms. */
export interface Latency {
  readonly count: number
  readonly p50: number
  readonly p99: number
  readonly max: number
}

export const latency = (values: readonly number[]): Latency => ({
  count: values.length,
  p50: quantile(values, 0.5),
  p99: quantile(values, 0.99),
  max: values.length === 0 ? NaN : Math.max(...values),
})

/** Seconds waited for a CPU as a share of `wall` seconds ('n/a' where the kernel does not say). */
const waitPercent = (seconds: number | undefined, wall: number): string =>
  seconds === undefined ? 'n/a' : `${round((seconds / wall) * 100, 1)}%`

/** The 1-minute load average, two decimals. */
const load1m = (): number => round(loadavg()[0] ?? 0)

/** Everything measured in one run. */
export interface LoadMeasure {
  readonly sizes: LoadSizes
  readonly idle: ProbeTimes
  readonly load: ProbeTimes
  readonly clients: readonly LoadDone[]
  readonly ready: readonly ClientsReady[]
  readonly ack: readonly AckDone[]
  readonly serverState: LoadServerState
  /** The server's state right after the load: what it had taken in by then. */
  readonly stateAfterLoad: LoadServerState
  readonly server: {
    readonly warmedUp: LoadServerStats
    readonly idle: LoadServerStats
    readonly connect: LoadServerStats
    readonly load: LoadServerStats
    readonly catchUp: LoadServerStats
    readonly loadWallSeconds: number
    readonly catchUpWallSeconds: number
    readonly idleWallSeconds: number
  }
  readonly loadAverage: { readonly idle: number; readonly load: number; readonly after: number }
}

/** Starts the client children; resolves once every device is synced, killing them on failure. */
async function startClients(
  ready: LoadServerReady,
  { devices, users }: LoadSizes,
): Promise<{ children: ControlledChild[]; ready: ClientsReady[] }> {
  const children: ControlledChild[] = []
  let first = 0
  for (let p = 0; p < CLIENT_PROCESSES; p++) {
    const count = Math.floor(devices / CLIENT_PROCESSES) + (p < devices % CLIENT_PROCESSES ? 1 : 0)
    children.push(
      ControlledChild.start('load-clients.ts', [
        ready.url,
        ready.siteKey,
        String(count),
        String(first),
        String(users),
      ]),
    )
    first += count
  }
  try {
    return { children, ready: await Promise.all(children.map((c) => c.next<ClientsReady>())) }
  } catch (error) {
    await Promise.all(children.map((c) => c.kill()))
    throw error
  }
}

/**
 * Runs the load bench once. `around` (the admin bench: admin pages open on
 * the server) starts once the server is ready, before the warm-up, and the
 * function it resolves with is awaited once the run is over.
 */
export async function measure(
  s: LoadSizes,
  around?: (ready: LoadServerReady) => Promise<() => Promise<void>>,
): Promise<LoadMeasure> {
  return withTempDir((dir) =>
    withChild('load-server.ts', [String(s.users), dir], async (server) => {
      const ready = await server.next<LoadServerReady>()
      console.error(
        `load: server ready with ${s.users} users (${round(ready.setupSeconds, 1)} s to enrol)`,
      )
      const stopAround = await around?.(ready)
      try {
        return await measureOn(s, server, ready)
      } finally {
        await stopAround?.()
      }
    }),
  )
}

async function measureOn(
  s: LoadSizes,
  server: ControlledChild,
  ready: LoadServerReady,
): Promise<LoadMeasure> {
  const probeArgs = [ready.url, ready.http, ready.adminToken, ready.siteKey, String(s.users)]
  return withChild('load-probe.ts', probeArgs, async (probe) => {
    await probe.next<{ ready: true }>()
    const stats = () => server.request<LoadServerStats>({ cmd: 'stats' })
    const probeFor = (seconds: number) =>
      probe.request<ProbeTimes>({ cmd: 'probe', seconds, rate: PROBE_RATE })

    console.error(`load: warm-up, ${WARMUP_SECONDS} s of probes (not counted) ...`)
    await probeFor(WARMUP_SECONDS)
    const serverWarmedUp = await stats()
    console.error(`load: idle, ${s.idleSeconds} s of probes, no devices ...`)
    const idleAverage = load1m()
    let t = performance.now()
    const idle = await probeFor(s.idleSeconds)
    const idleWallSeconds = (performance.now() - t) / 1000
    const serverIdle = await stats()

    console.error(`load: ${s.devices} devices connecting ...`)
    const clients = await startClients(ready, s)
    try {
      const serverConnect = await stats()
      console.error(
        `load: ${s.devices} devices x ${s.rate} edits/s for ${s.seconds} s, probes running ...`,
      )
      if (ALLOCATIONS_FILE !== undefined) await server.request({ cmd: 'allocations', start: true })
      t = performance.now()
      const loadCommand = { cmd: 'load', seconds: s.seconds, rate: s.rate }
      const [load, ...done] = await Promise.all([
        probeFor(s.seconds),
        ...clients.children.map((c) => c.request<LoadDone>(loadCommand)),
      ])
      const loadWallSeconds = (performance.now() - t) / 1000
      const serverLoad = await stats()
      if (ALLOCATIONS_FILE !== undefined) {
        await server.request({ cmd: 'allocations', file: ALLOCATIONS_FILE })
        console.error(`load: the server's allocations during the load: ${ALLOCATIONS_FILE}`)
      }
      const stateAfterLoad = await server.request<LoadServerState>({ cmd: 'state' })
      const loadAverage = load1m()
      console.error('load: edits sent; waiting for the server to acknowledge every one ...')
      const clientIds = clients.ready.flatMap((r) => r.clientIds)
      t = performance.now()
      const ack = await Promise.all(
        clients.children.map((c) =>
          c.request<AckDone>({ cmd: 'ack', clients: clientIds, timeoutMs: ACK_TIMEOUT_MS }),
        ),
      )
      const catchUpWallSeconds = (performance.now() - t) / 1000
      const serverCatchUp = await stats()
      const serverState = await server.request<LoadServerState>({ cmd: 'state' })
      await Promise.all(clients.children.map((c) => c.finish()))
      return {
        sizes: s,
        idle,
        load,
        clients: done,
        ready: clients.ready,
        ack,
        serverState,
        stateAfterLoad,
        server: {
          warmedUp: serverWarmedUp,
          idle: serverIdle,
          connect: serverConnect,
          load: serverLoad,
          catchUp: serverCatchUp,
          loadWallSeconds,
          catchUpWallSeconds,
          idleWallSeconds,
        },
        loadAverage: { idle: idleAverage, load: loadAverage, after: load1m() },
      }
    } catch (error) {
      await Promise.all(clients.children.map((c) => c.kill()))
      throw error
    }
  })
}

const verdict = (pass: boolean): string => (pass ? 'PASS' : 'FAIL')

/** Sums a numeric field over the client processes. */
const total = (done: readonly LoadDone[], pick: (d: LoadDone) => number): number =>
  done.reduce((sum, d) => sum + pick(d), 0)

function report(m: LoadMeasure): Record<string, unknown> {
  const { sizes: s } = m
  const probes = {
    http: { idle: latency(m.idle.httpMs), load: latency(m.load.httpMs) },
    sync: { idle: latency(m.idle.syncMs), load: latency(m.load.syncMs) },
  }
  const ratios = {
    http: probes.http.load.p99 / probes.http.idle.p99,
    sync: probes.sync.load.p99 / probes.sync.idle.p99,
  }
  const labels = {
    http: 'HTTP GET /api/users/:id',
    sync: 'device sync step 1 -> step 2',
  }
  const rows: Cell[][] = []
  for (const kind of ['http', 'sync'] as const) {
    for (const phase of ['idle', 'load'] as const) {
      const l = probes[kind][phase]
      rows.push([
        labels[kind],
        phase === 'idle' ? 'idle' : `${s.devices} devices x ${s.rate}/s`,
        l.count,
        round(l.p50, 1),
        round(l.p99, 1),
        round(l.max, 1),
        phase === 'idle' ? '' : ratioText(ratios[kind]),
      ])
    }
  }
  const machine = `${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${cpus().length} cores`
  printTable(
    `Load: server answer times, ms, idle (${s.idleSeconds} s) and under ${s.devices} devices x ${s.rate} edits/s (${s.seconds} s), ${PROBE_RATE} probes/s each, ${s.users} users; ${machine}`,
    ['probe', 'phase', 'count', 'p50', 'p99', 'max', 'p99 vs idle'],
    rows,
  )
  const deltaBytes = latency(m.load.syncBytes)
  console.log(
    `note: a step 2 under load carried the edits since the previous probe and the delete set: ${Math.round(deltaBytes.p50)} B p50, ${Math.round(deltaBytes.max)} B max`,
  )

  // Edits: what the devices sent, what the server acknowledged, what it holds.
  const acks = m.ack.flatMap((a) => a.devices)
  const sent = acks.reduce((sum, a) => sum + a.sent, 0)
  const acked = acks.reduce((sum, a) => sum + Math.max(0, Math.min(a.acked, a.sent)), 0)
  const unanswered = acks.filter((a) => a.acked < 0).length
  const heldIn = (state: LoadServerState): number =>
    acks.reduce((sum, a) => sum + Math.min(a.sent, state.stateVector[String(a.clientId)] ?? 0), 0)
  const held = heldIn(m.serverState)
  const takenInDuringLoad = heldIn(m.stateAfterLoad)
  const lost = sent - acked
  const planned = total(m.clients, (d) => d.planned)
  const refusals: Record<string, number> = {}
  for (const d of m.clients)
    for (const [code, r] of Object.entries(d.refusals))
      refusals[code] = (refusals[code] ?? 0) + r.count
  const refused = Object.values(refusals).reduce((a, b) => a + b, 0)
  const sendSeconds = Math.max(...m.clients.map((d) => d.seconds))
  const inbound = {
    updates: total(m.clients, (d) => d.inbound.updates),
    echoes: total(m.clients, (d) => d.inbound.echoes),
    bytes: total(m.clients, (d) => d.inbound.updateBytes),
  }
  printTable(
    `Load: edits (${s.devices} devices, ${CLIENT_PROCESSES} client processes)`,
    ['figure', 'value'],
    [
      ['edits planned', planned.toLocaleString('en')],
      ['edits sent', sent.toLocaleString('en')],
      ['offered rate, edits/s', Math.round(sent / sendSeconds).toLocaleString('en')],
      [
        `taken in by the server during the load (${round(m.server.loadWallSeconds, 1)} s)`,
        takenInDuringLoad.toLocaleString('en'),
      ],
      [
        'server intake during the load, edits/s',
        Math.round(takenInDuringLoad / m.server.loadWallSeconds).toLocaleString('en'),
      ],
      ['acknowledged by the server (answer to step 1)', acked.toLocaleString('en')],
      ["held in the server's document", held.toLocaleString('en')],
      ['lost (sent - acknowledged)', lost.toLocaleString('en')],
      ['devices without an answer', unanswered],
      ['refused by the server (error messages)', refused],
      ['seconds from the last edit to every acknowledgement', round(m.server.catchUpWallSeconds)],
      [
        'client send lag p50 / p99 / max, ms',
        m.clients
          .map(
            (d) =>
              `${Math.round(d.lateP50Ms)} / ${Math.round(d.lateP99Ms)} / ${Math.round(d.lateMaxMs)}`,
          )
          .join(', '),
      ],
      [
        `updates each device received during the load, per second (sent by the others: ${round((s.devices - 1) * s.rate)})`,
        round(inbound.updates / s.devices / m.server.loadWallSeconds),
      ],
      ['MB the server pushed to the devices', mb(inbound.bytes)],
      ['updates sent back to their own sender (echoes)', inbound.echoes.toLocaleString('en')],
      ['connections closed during the load', total(m.clients, (d) => d.closed)],
      [
        `client processes CPU s (${m.ready.map((r) => `niceness ${r.nice}${r.idleClass ? ', SCHED_IDLE' : ''}`).join('; ')})`,
        m.clients.map((d) => round(d.cpuSeconds)).join(', '),
      ],
      [
        'client processes main thread waiting for a CPU, % of their run',
        m.clients.map((d) => waitPercent(d.runQueueWaitSeconds, d.seconds)).join(', '),
      ],
      ['probe process CPU s (load)', round(m.load.cpuSeconds)],
      [
        'probe main thread waiting for a CPU, % of the phase (idle, load)',
        `${waitPercent(m.idle.runQueueWaitSeconds, s.idleSeconds)}, ${waitPercent(m.load.runQueueWaitSeconds, s.seconds)}`,
      ],
    ],
  )
  for (const d of m.clients)
    for (const [code, r] of Object.entries(d.refusals))
      console.log(`refused: ${code} x${r.count}: ${r.example}`)

  const phases = [
    ['idle (probes only)', m.server.idle, m.server.idleWallSeconds],
    ['load', m.server.load, m.server.loadWallSeconds],
    ['catch-up (after the load)', m.server.catchUp, m.server.catchUpWallSeconds],
  ] as const
  const cpuOf = (now: LoadServerStats, before: LoadServerStats): number =>
    now.cpuSeconds - before.cpuSeconds
  // The connect phase (every device fetching the roster) lies between idle
  // and load and is left out.
  const before = [m.server.warmedUp, m.server.connect, m.server.load] as const
  const serverRows: Cell[][] = phases.map(([label, st, wall], i) => {
    const cpu = cpuOf(st, before[i] ?? st)
    const waited = difference(st.runQueueWaitSeconds, (before[i] ?? st).runQueueWaitSeconds)
    const main = difference(st.mainThreadCpuSeconds, (before[i] ?? st).mainThreadCpuSeconds)
    return [
      label,
      round(wall, 1),
      round(cpu, 2),
      main === undefined ? 'n/a' : round(main, 2),
      `${Math.round((cpu / wall) * 100)}%`,
      waitPercent(waited, wall),
      round(st.loopDelayP50Ms, 1),
      round(st.loopDelayP99Ms, 1),
      round(st.loopDelayMaxMs, 1),
      `${st.gcCount} / ${round(st.gcTotalMs, 0)} / ${round(st.gcMaxMs, 1)} / ${round(st.gcMajorMaxMs, 1)}`,
      mb(st.rssMaxBytes),
    ]
  })
  printTable(
    'Load: the server process',
    [
      'phase',
      'wall s',
      'CPU s',
      'main thread CPU s',
      'CPU / wall',
      'main thread waiting for a CPU',
      'loop delay p50 ms',
      'loop delay p99 ms',
      'loop delay max ms',
      'GC pauses: n / total / max / max full, ms',
      'RSS max MB',
    ],
    serverRows,
  )
  console.log(
    `load average (1 min): ${m.loadAverage.idle} idle, ${m.loadAverage.load} at the end of the load, ${m.loadAverage.after} after`,
  )
  const lateP99 = Math.max(...m.clients.map((d) => d.lateP99Ms))
  const pass = {
    http: ratios.http <= P99_RATIO_MAX,
    sync: ratios.sync <= P99_RATIO_MAX,
    lost: lost === 0 && unanswered === 0 && refused === 0,
    // The clients run at a low priority (load-clients.ts): the load counts
    // only if they still offered it, every edit within a slot of its moment.
    offered: sent === planned && lateP99 <= 1000 / s.rate,
  }
  console.log(
    `${verdict(pass.offered)}  load offered: ${sent} of ${planned} edits sent, ${Math.round(sent / sendSeconds)} edits/s, send lag p99 ${Math.round(lateP99)} ms (goal: all, lag within one ${Math.round(1000 / s.rate)} ms slot)`,
  )
  console.log(
    `${verdict(pass.http)}  HTTP read p99 under load: ${ratioText(ratios.http)}x idle (goal <= ${P99_RATIO_MAX}x)`,
  )
  console.log(
    `${verdict(pass.sync)}  sync step 1 p99 under load: ${ratioText(ratios.sync)}x idle (goal <= ${P99_RATIO_MAX}x)`,
  )
  console.log(
    `${verdict(pass.lost)}  edits: ${sent} sent, ${acked} acknowledged, ${lost} lost, ${refused} refused (goal: none lost)`,
  )
  const latencyFigures = (l: Latency) => ({
    count: l.count,
    p50Ms: round(l.p50, 2),
    p99Ms: round(l.p99, 2),
    maxMs: round(l.max, 2),
  })
  return {
    ...s,
    probesPerSecond: PROBE_RATE,
    http: {
      idle: latencyFigures(probes.http.idle),
      load: latencyFigures(probes.http.load),
      p99Ratio: round(ratios.http),
      errors: m.idle.httpErrors + m.load.httpErrors,
    },
    sync: {
      idle: latencyFigures(probes.sync.idle),
      load: latencyFigures(probes.sync.load),
      p99Ratio: round(ratios.sync),
      step2BytesP50: Math.round(deltaBytes.p50),
    },
    edits: { planned, sent, takenInDuringLoad, acked, held, lost, unanswered, refused, refusals },
    catchUpSeconds: round(m.server.catchUpWallSeconds),
    server: {
      cpuSecondsIdle: round(cpuOf(m.server.idle, m.server.warmedUp)),
      cpuSecondsLoad: round(cpuOf(m.server.load, m.server.connect)),
      mainThreadCpuSecondsLoad: round(
        difference(m.server.load.mainThreadCpuSeconds, m.server.connect.mainThreadCpuSeconds) ??
          NaN,
      ),
      cpuSecondsCatchUp: round(cpuOf(m.server.catchUp, m.server.load)),
      loopDelayP99MsLoad: round(m.server.load.loopDelayP99Ms, 1),
      runQueueWaitPercentLoad: waitPercent(
        difference(m.server.load.runQueueWaitSeconds, m.server.connect.runQueueWaitSeconds),
        m.server.loadWallSeconds,
      ),
      gcLoad: {
        count: m.server.load.gcCount,
        totalMs: round(m.server.load.gcTotalMs, 0),
        maxMs: round(m.server.load.gcMaxMs, 1),
        majorMaxMs: round(m.server.load.gcMajorMaxMs, 1),
      },
      rssMaxMB: mb(Math.max(m.server.load.rssMaxBytes, m.server.catchUp.rssMaxBytes)),
    },
    updatesPerDevicePerSecond: round(inbound.updates / s.devices / m.server.loadWallSeconds),
    echoes: inbound.echoes,
    loadAverage: m.loadAverage,
    verdicts: {
      http: verdict(pass.http),
      sync: verdict(pass.sync),
      lost: verdict(pass.lost),
      offered: verdict(pass.offered),
    },
  }
}

/** The load bench. */
export const loadBench: Bench = {
  name: 'load',
  summary: `200 devices x 10 edits/s: HTTP read and sync step 1 p99 <= ${P99_RATIO_MAX}x idle, no edit lost`,
  async run({ users }: BenchOptions) {
    return report(await measure(sizes(users)))
  },
}
