/**
 * Network benches (issue 3), each side by side with baselines in one run:
 *
 * 1. Full sync of N users to a fresh device over loopback WebSocket, until
 *    durable in LevelDB: rostersync (createServer -> createDevice, timed to
 *    `serverLink.synced`) against plain Yjs (one Y.Map, y-protocols over
 *    `ws`, the received update appended to LevelDB) and naive JSON (GET of
 *    the whole roster, one LevelDB batch of one put per user).
 *    Goals: time <= 1.5x plain Yjs, bytes <= 1.1x plain Yjs.
 * 2. Delta sync after 100 server edits: the synced device closes, the
 *    server patches 100 users, the device reopens on the same dataDir.
 *    Goal: bytes <= 2x the raw JSON of the 100 changed views.
 * 3. Fan-out: p50 / p99 latency from the server starting an edit to each of
 *    50 connected devices showing it, against plain Yjs broadcasting to 50
 *    y-protocols clients (memory only, and durable like ours).
 *
 * Layout: the server runs in one process (`network-server.ts`), the client
 * or clients in another (`network-client.ts`, `network-fanout-client.ts`),
 * as on two machines; this process only orchestrates and runs a TCP proxy
 * between them that counts every byte on the wire in each direction
 * (headers and framing included). Rosters are built before the clock starts.
 * Set `BENCH_CPU_PROF=<dir>` to get a V8 CPU profile of every child.
 */
import { join } from 'node:path'
import { mb, printTable, quantile, ratioText, round, runChild, withTempDir } from './bench.js'
import type { Bench, BenchOptions, Cell } from './bench.js'
import type { ClientMode, SyncResult } from './network-client.js'
import { benchSiteKey, childFlags, countingProxy, withChild } from './network-control.js'
import type { ControlledChild, CountingProxy } from './network-control.js'
import type { FanoutMode, FanoutSeen } from './network-fanout-client.js'
import type { DeltaEdits, FanoutEdit, ServerReady } from './network-server.js'

/** Full sync: ours over plain Yjs, wall time to durable. */
const FULL_TIME_RATIO_MAX = 1.5
/** Full sync: ours over plain Yjs, bytes the server sends. */
const FULL_BYTES_RATIO_MAX = 1.1
/** Delta sync: bytes the server sends over the raw JSON of the changed views. */
const DELTA_BYTES_RATIO_MAX = 2
/** Users the server edits between the two syncs of the delta bench. */
const DELTA_EDITS = 100
/** Devices connected in the fan-out bench. */
const FANOUT_DEVICES = 50
/** Edits measured in the fan-out bench, after the warm-up ones. */
const FANOUT_EDITS = 50
/** Edits made first and not counted: they pay for JIT compilation, not for fan-out. */
const FANOUT_WARMUP_EDITS = 5
/**
 * Roster size of the fan-out bench. Fan-out latency is about one small
 * update, and 50 devices each holding the full 100,000 users would measure
 * the machine's memory instead.
 */
const FANOUT_USERS_MAX = 1_000

const SYNC_LABELS: Record<ClientMode, string> = {
  ours: 'rostersync (createServer -> createDevice)',
  plain: 'plain Yjs (Y.Map, y-protocols, LevelDB append)',
  naive: 'naive JSON (GET roster, LevelDB batch)',
}

const FANOUT_LABELS: Record<FanoutMode, string> = {
  ours: 'rostersync (durable on server and devices)',
  plain: 'plain Yjs broadcast, memory only',
  'plain-durable': 'plain Yjs broadcast, LevelDB on both ends',
}

/** One sync as measured: the client's figures plus what crossed the wire and the server's CPU. */
interface SyncMeasure extends SyncResult {
  /** Bytes the server sent (TCP payload: headers, framing and messages). */
  readonly bytesDown: number
  /** Bytes the client sent. */
  readonly bytesUp: number
  /** CPU seconds the server process spent while the client ran. */
  readonly serverCpuSeconds: number
}

/** The full and (for the Yjs sides) delta sync of one side in one run. */
interface SideMeasure {
  readonly side: ClientMode
  readonly full: SyncMeasure
  readonly delta?: SyncMeasure & { readonly rawJsonBytes: number; readonly edited: number }
}

/** Runs one client against the server behind `proxy`, counting the wire and the server's CPU. */
async function syncOnce(
  server: ControlledChild,
  proxy: CountingProxy,
  args: readonly string[],
): Promise<SyncMeasure> {
  const before = await server.request<{ cpuSeconds: number }>({ cmd: 'cpu' })
  proxy.reset()
  const result = await runChild<SyncResult>('network-client.ts', args, {
    nodeFlags: childFlags(),
  })
  const { down, up } = proxy.bytes()
  const after = await server.request<{ cpuSeconds: number }>({ cmd: 'cpu' })
  return {
    ...result,
    bytesDown: down,
    bytesUp: up,
    serverCpuSeconds: after.cpuSeconds - before.cpuSeconds,
  }
}

/** Full sync of one side, then (Yjs sides) the delta after {@link DELTA_EDITS} edits. */
function measureSide(side: ClientMode, users: number): Promise<SideMeasure> {
  return withTempDir((dir) =>
    withChild('network-server.ts', [side, String(users), dir], async (server) => {
      const ready = await server.next<ServerReady>()
      console.error(`network: ${side} server ready (${round(ready.setupSeconds, 1)} s to build)`)
      const proxy = await countingProxy(ready.port)
      try {
        const scheme = side === 'naive' ? 'http' : 'ws'
        const client = [side, `${scheme}://127.0.0.1:${proxy.port}`, join(dir, 'client')]
        const full = await syncOnce(server, proxy, [...client, String(users)])
        if (side === 'naive') return { side, full }
        const edits = await server.request<DeltaEdits>({ cmd: 'edit-delta', count: DELTA_EDITS })
        const delta = await syncOnce(server, proxy, [
          ...client,
          String(users),
          edits.checkId,
          edits.checkTitle,
        ])
        return { side, full, delta: { ...delta, ...edits } }
      } finally {
        await proxy.close()
      }
    }),
  )
}

/** The run with the smallest `key` (the least disturbed one). */
function best<T>(all: readonly T[], key: (t: T) => number): T {
  return all.reduce((a, b) => (key(b) < key(a) ? b : a))
}

/** Every run of every side, interleaved so that a burst of other load hits all sides alike. */
async function measureSync(users: number, runs: number): Promise<Map<ClientMode, SideMeasure[]>> {
  const sides: readonly ClientMode[] = ['ours', 'plain', 'naive']
  const all = new Map<ClientMode, SideMeasure[]>(sides.map((s) => [s, []]))
  for (let run = 1; run <= runs; run++) {
    for (const side of sides) {
      console.error(`network: sync, ${side}, ${users} users (run ${run} of ${runs}) ...`)
      all.get(side)?.push(await measureSide(side, users))
    }
  }
  return all
}

const verdict = (pass: boolean): string => (pass ? 'PASS' : 'MISS')

/** Prints the full-sync table and verdicts; returns the figures. */
function reportFull(users: number, all: Map<ClientMode, SideMeasure[]>): Record<string, unknown> {
  const bestOf = (side: ClientMode): SyncMeasure =>
    best(all.get(side) ?? [], (m) => m.full.syncedMs).full
  const ours = bestOf('ours')
  const plain = bestOf('plain')
  const naive = bestOf('naive')
  const rows: Cell[][] = (['ours', 'plain', 'naive'] as const).map((side) => {
    const m = bestOf(side)
    return [
      SYNC_LABELS[side],
      round(m.syncedMs / 1000),
      Math.round(m.openMs),
      round(m.cpuSeconds),
      round(m.serverCpuSeconds),
      mb(m.bytesDown),
      Math.round(m.bytesDown / users),
      m.bytesUp.toLocaleString('en'),
      ratioText(m.syncedMs / plain.syncedMs),
      ratioText(m.bytesDown / plain.bytesDown),
      ratioText(m.syncedMs / naive.syncedMs),
      round(m.closeMs / 1000),
    ]
  })
  printTable(
    `Full sync: ${users.toLocaleString('en')} users to a fresh device over loopback, until durable (LevelDB, sync); best run`,
    [
      'side',
      'seconds',
      'open ms',
      'client CPU s',
      'server CPU s',
      'MB down',
      'B/user',
      'bytes up',
      'time vs plain',
      'bytes vs plain',
      'time vs naive',
      'close s',
    ],
    rows,
  )
  const timeRatio = ours.syncedMs / plain.syncedMs
  const bytesRatio = ours.bytesDown / plain.bytesDown
  // CPU seconds are printed beside the wall-time verdict: on a busy machine
  // they show the work each side does, which other load disturbs far less.
  const cpuRatios = `client CPU ${ratioText(ours.cpuSeconds / plain.cpuSeconds)}x, server CPU ${ratioText(ours.serverCpuSeconds / plain.serverCpuSeconds)}x`
  console.log(
    `${verdict(timeRatio <= FULL_TIME_RATIO_MAX)}  full sync time: ${ratioText(timeRatio)}x plain Yjs (goal <= ${FULL_TIME_RATIO_MAX}x; ${cpuRatios})`,
  )
  console.log(
    `${verdict(bytesRatio <= FULL_BYTES_RATIO_MAX)}  full sync bytes: ${ratioText(bytesRatio)}x plain Yjs (goal <= ${FULL_BYTES_RATIO_MAX}x)`,
  )
  const figures = (m: SyncMeasure) => ({
    seconds: round(m.syncedMs / 1000),
    openMs: Math.round(m.openMs),
    clientCpuSeconds: round(m.cpuSeconds),
    serverCpuSeconds: round(m.serverCpuSeconds),
    bytesDown: m.bytesDown,
    bytesUp: m.bytesUp,
    closeSeconds: round(m.closeMs / 1000),
  })
  return {
    ours: figures(ours),
    plain: figures(plain),
    naive: figures(naive),
    secondsAllRuns: Object.fromEntries(
      [...all].map(([side, ms]) => [side, ms.map((m) => round(m.full.syncedMs / 1000))]),
    ),
    timeRatio: round(timeRatio),
    bytesRatio: round(bytesRatio),
    verdicts: {
      time: verdict(timeRatio <= FULL_TIME_RATIO_MAX),
      bytes: verdict(bytesRatio <= FULL_BYTES_RATIO_MAX),
    },
  }
}

/** Prints the delta-sync table and verdict; returns the figures. */
function reportDelta(users: number, all: Map<ClientMode, SideMeasure[]>): Record<string, unknown> {
  const deltaOf = (side: ClientMode) =>
    best(all.get(side) ?? [], (m) => m.delta?.syncedMs ?? Infinity).delta
  const ours = deltaOf('ours')
  const plain = deltaOf('plain')
  if (ours === undefined || plain === undefined) throw new Error('delta sync was not measured')
  const rows: Cell[][] = (['ours', 'plain'] as const).map((side) => {
    const m = side === 'ours' ? ours : plain
    return [
      SYNC_LABELS[side],
      m.bytesDown.toLocaleString('en'),
      m.rawJsonBytes.toLocaleString('en'),
      ratioText(m.bytesDown / m.rawJsonBytes),
      ratioText(m.bytesDown / plain.bytesDown),
      Math.round(m.syncedMs),
      Math.round(m.openMs),
      round(m.cpuSeconds),
    ]
  })
  printTable(
    `Delta sync: ${ours.edited} of ${users.toLocaleString('en')} users edited while the device was closed; it reopens and syncs; best run`,
    [
      'side',
      'bytes down',
      'raw JSON bytes',
      'vs raw JSON',
      'vs plain',
      'ms to synced',
      'open ms',
      'client CPU s',
    ],
    rows,
  )
  const ratio = ours.bytesDown / ours.rawJsonBytes
  console.log(
    `${verdict(ratio <= DELTA_BYTES_RATIO_MAX)}  delta bytes: ${ratioText(ratio)}x the raw JSON of the ${ours.edited} changed views (goal <= ${DELTA_BYTES_RATIO_MAX}x)`,
  )
  const figures = (m: typeof ours) => ({
    bytesDown: m.bytesDown,
    rawJsonBytes: m.rawJsonBytes,
    msToSynced: Math.round(m.syncedMs),
    openMs: Math.round(m.openMs),
  })
  return {
    edited: ours.edited,
    ours: figures(ours),
    plain: figures(plain),
    bytesRatio: round(ratio),
    verdict: verdict(ratio <= DELTA_BYTES_RATIO_MAX),
  }
}

/** Latencies of one fan-out run, ms. */
interface FanoutMeasure {
  readonly mode: FanoutMode
  /** Edit start to one device showing it, every (edit, device) pair. */
  readonly perDevice: number[]
  /** Edit start to the last device showing it, per edit. */
  readonly lastDevice: number[]
  /** Edit start to durable on the server, per edit. */
  readonly serverDurable: number[]
  /** Server CPU ms per edit (the edit, its store write and the sends to every device). */
  serverCpuMsPerEdit: number
  /** Clients' CPU ms per device per edit: receive, check, apply, store, show. */
  clientCpuMsPerUpdate: number
}

/** Makes the fan-out edits one at a time, each once every device showed the one before. */
async function fanoutEdits(
  mode: FanoutMode,
  server: ControlledChild,
  clients: ControlledChild,
): Promise<FanoutMeasure> {
  const measure: FanoutMeasure = {
    mode,
    perDevice: [],
    lastDevice: [],
    serverDurable: [],
    serverCpuMsPerEdit: NaN,
    clientCpuMsPerUpdate: NaN,
  }
  let cpuAtStart = { server: 0, clients: 0 }
  for (let i = 0; i < FANOUT_WARMUP_EDITS + FANOUT_EDITS; i++) {
    const [edit, seen] = await Promise.all([
      server.request<FanoutEdit>({ cmd: 'edit-fanout', i }),
      clients.next<FanoutSeen>(),
    ])
    if (seen.i !== i) throw new Error(`fan-out: expected edit ${i}, clients reported ${seen.i}`)
    const cpu = { server: edit.cpuSeconds, clients: seen.cpuSeconds }
    if (i < FANOUT_WARMUP_EDITS) {
      cpuAtStart = cpu
      continue
    }
    const latencies = seen.seenAtMs.map((at) => at - edit.startedAtMs)
    measure.perDevice.push(...latencies)
    measure.lastDevice.push(Math.max(...latencies))
    measure.serverDurable.push(edit.durableAtMs - edit.startedAtMs)
    measure.serverCpuMsPerEdit =
      ((cpu.server - cpuAtStart.server) * 1000) / (i + 1 - FANOUT_WARMUP_EDITS)
    measure.clientCpuMsPerUpdate =
      ((cpu.clients - cpuAtStart.clients) * 1000) / ((i + 1 - FANOUT_WARMUP_EDITS) * FANOUT_DEVICES)
  }
  return measure
}

/** One fan-out run of one side: a server child and a child holding every client. */
function measureFanout(mode: FanoutMode, users: number): Promise<FanoutMeasure> {
  return withTempDir((dir) =>
    withChild('network-server.ts', [mode, String(users), dir], async (server) => {
      const ready = await server.next<ServerReady>()
      const clientArgs = [mode, ready.url, String(FANOUT_DEVICES), String(users), dir]
      return withChild('network-fanout-client.ts', clientArgs, async (clients) => {
        await clients.next<{ ready: true }>()
        return fanoutEdits(mode, server, clients)
      })
    }),
  )
}

/** Every fan-out run of every side, interleaved; returns the best (lowest p50) per side. */
async function measureAllFanout(users: number, runs: number): Promise<FanoutMeasure[]> {
  const modes: readonly FanoutMode[] = ['ours', 'plain', 'plain-durable']
  const all = new Map<FanoutMode, FanoutMeasure[]>(modes.map((m) => [m, []]))
  for (let run = 1; run <= runs; run++) {
    for (const mode of modes) {
      console.error(
        `network: fan-out, ${mode}, ${FANOUT_DEVICES} devices (run ${run} of ${runs}) ...`,
      )
      all.get(mode)?.push(await measureFanout(mode, users))
    }
  }
  return modes.map((mode) => best(all.get(mode) ?? [], (m) => quantile(m.perDevice, 0.5)))
}

/** Prints the fan-out table; returns the figures. */
function reportFanout(users: number, results: readonly FanoutMeasure[]): Record<string, unknown> {
  const stats = (m: FanoutMeasure) => ({
    p50: quantile(m.perDevice, 0.5),
    p99: quantile(m.perDevice, 0.99),
    lastP50: quantile(m.lastDevice, 0.5),
    lastP99: quantile(m.lastDevice, 0.99),
    serverP50: quantile(m.serverDurable, 0.5),
    serverCpuPerEdit: m.serverCpuMsPerEdit,
    clientCpuPerUpdate: m.clientCpuMsPerUpdate,
  })
  const plain = stats(results.find((m) => m.mode === 'plain') as FanoutMeasure)
  const durable = stats(results.find((m) => m.mode === 'plain-durable') as FanoutMeasure)
  printTable(
    `Fan-out: one server edit to ${FANOUT_DEVICES} connected devices (${users.toLocaleString('en')} users), ${FANOUT_EDITS} edits after ${FANOUT_WARMUP_EDITS} warm-up; ms from the edit's start; best run`,
    [
      'side',
      'p50',
      'p99',
      'last device p50',
      'last device p99',
      'server durable p50',
      'server CPU ms/edit',
      'client CPU ms/device',
      'p50 vs plain',
      'p99 vs plain',
      'p50 vs plain durable',
      'p99 vs plain durable',
    ],
    results.map((m) => {
      const s = stats(m)
      return [
        FANOUT_LABELS[m.mode],
        round(s.p50, 1),
        round(s.p99, 1),
        round(s.lastP50, 1),
        round(s.lastP99, 1),
        round(s.serverP50, 1),
        round(s.serverCpuPerEdit, 2),
        round(s.clientCpuPerUpdate, 3),
        ratioText(s.p50 / plain.p50),
        ratioText(s.p99 / plain.p99),
        ratioText(s.p50 / durable.p50),
        ratioText(s.p99 / durable.p99),
      ]
    }),
  )
  // Every client shares one process, so a device's latency includes the work
  // done for the devices served before it; the CPU column gives one device's cost.
  console.log(
    `note: the ${FANOUT_DEVICES} clients share one process (one core at most); latency grows with the per-device CPU cost`,
  )
  return Object.fromEntries(
    results.map((m) => [
      m.mode,
      Object.fromEntries(Object.entries(stats(m)).map(([k, v]) => [`${k}Ms`, round(v, 2)])),
    ]),
  )
}

/** The network bench. */
export const networkBench: Bench = {
  name: 'network',
  summary: `full sync (time <= ${FULL_TIME_RATIO_MAX}x, bytes <= ${FULL_BYTES_RATIO_MAX}x plain Yjs), delta bytes (<= ${DELTA_BYTES_RATIO_MAX}x raw JSON), fan-out to ${FANOUT_DEVICES} devices`,
  async run({ users, runs }: BenchOptions) {
    benchSiteKey()
    const sync = await measureSync(users, runs)
    const fanoutUsers = Math.min(users, FANOUT_USERS_MAX)
    const fanout = await measureAllFanout(fanoutUsers, runs)
    return {
      users,
      runs,
      fullSync: reportFull(users, sync),
      deltaSync: reportDelta(users, sync),
      fanout: { devices: FANOUT_DEVICES, users: fanoutUsers, ...reportFanout(fanoutUsers, fanout) },
    }
  },
}
