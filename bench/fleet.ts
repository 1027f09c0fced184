/**
 * The fleet bench (issue 13, "1,000 devices on one server process"):
 * `BENCH_FLEET_DEVICES` (1,000) lightweight devices (`fleet-clients.ts`,
 * two processes) connected to one server (`fleet-server.ts`, LevelDB,
 * 127.0.0.1, 1,000 users), each process alone:
 *
 * 1. connecting: every device joins and has its step 2; the server's RSS
 *    and heap (after full collections) before and after, per device
 *    (goal: RSS <= 100 KB per connected device);
 * 2. fan-out: {@link FANOUT_EDITS} server edits, one at a time, each timed
 *    from before `users.patch` to its update reaching every device
 *    (goal: p99 <= 1 s);
 * 3. restart: the server is killed (SIGKILL) and started again on the same
 *    data dir and port; the devices reconnect (0.5-2 s random delay, as a
 *    device's backoff) and the time until every one has its step 2 again
 *    is reported, from the new server listening; then fan-out again.
 */
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { mb, printTable, quantile, round, withTempDir, type Bench } from './bench.js'
import type { FleetArrivals, FleetSynced } from './fleet-clients.js'
import type { FleetEdit, FleetServerReady, FleetServerStats } from './fleet-server.js'
import { ControlledChild } from './network-control.js'

const DEVICES_DEFAULT = 1_000
const CLIENT_PROCESSES = 2
const FLEET_USERS = 1_000
const FANOUT_EDITS = 30
const FANOUT_P99_MS_MAX = 1_000
const RSS_PER_DEVICE_KB_MAX = 100
const SYNCED_TIMEOUT_MS = 300_000

function fleetDevices(): number {
  const text = process.env.BENCH_FLEET_DEVICES
  if (text === undefined || text === '') return DEVICES_DEFAULT
  const n = Number(text)
  if (!Number.isSafeInteger(n) || n < CLIENT_PROCESSES)
    throw new Error(`BENCH_FLEET_DEVICES must be an integer >= 2, got ${JSON.stringify(text)}`)
  return n
}

/** Starts the server with `--expose-gc` (its memory is read after collections). */
function startServer(dir: string, port: number, siteKey: string): ControlledChild {
  const saved = process.env.NODE_OPTIONS
  process.env.NODE_OPTIONS = `${saved ?? ''} --expose-gc`.trim()
  try {
    return ControlledChild.start('fleet-server.ts', [
      String(FLEET_USERS),
      dir,
      String(port),
      siteKey,
    ])
  } finally {
    if (saved === undefined) delete process.env.NODE_OPTIONS
    else process.env.NODE_OPTIONS = saved
  }
}

/** Every client process's answer to one command. */
function all<T>(
  clients: readonly ControlledChild[],
  command: Record<string, unknown>,
): Promise<T[]> {
  return Promise.all(clients.map((c) => c.request<T>(command)))
}

/** Fan-out of `edits` server edits: latency of each to each device, and how many never arrived. */
async function fanOut(
  server: ControlledChild,
  clients: readonly ControlledChild[],
  edits: number,
  from: number,
) {
  const latencies: number[] = []
  let missing = 0
  for (let i = 0; i < edits; i++) {
    await all(clients, { cmd: 'arm' })
    const edit = await server.request<FleetEdit>({ cmd: 'edit', i: from + i })
    const answers = await all<FleetArrivals>(clients, { cmd: 'collect', timeoutMs: 10_000 })
    for (const { arrivals } of answers)
      for (const at of arrivals) {
        if (at === null) missing++
        else latencies.push(at - edit.startedAtMs)
      }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return {
    p50: quantile(latencies, 0.5),
    p99: quantile(latencies, 0.99),
    max: Math.max(...latencies),
    missing,
  }
}

async function runFleet(dir: string, devices: number) {
  const siteKey = randomBytes(16).toString('hex')
  let server = startServer(dir, 0, siteKey)
  const clients: ControlledChild[] = []
  try {
    const ready = await server.next<FleetServerReady>()
    const before = await server.request<FleetServerStats>({ cmd: 'stats' })
    console.error(`fleet: server ready; connecting ${devices} devices ...`)
    const connectStarted = performance.now()
    const per = Math.ceil(devices / CLIENT_PROCESSES)
    for (let p = 0; p < CLIENT_PROCESSES; p++) {
      const count = Math.min(per, devices - p * per)
      clients.push(
        ControlledChild.start('fleet-clients.ts', [
          ready.url,
          siteKey,
          String(count),
          String(p * per),
        ]),
      )
    }
    const joined = await all<FleetSynced>(clients, { cmd: 'synced', timeoutMs: SYNCED_TIMEOUT_MS })
    const connectSeconds = (performance.now() - connectStarted) / 1000
    const connected = joined.reduce((sum, j) => sum + j.synced, 0)
    const after = await server.request<FleetServerStats>({ cmd: 'stats' })
    console.error(
      `fleet: ${connected} devices synced in ${round(connectSeconds, 1)} s; fan-out ...`,
    )
    const fanout = await fanOut(server, clients, FANOUT_EDITS, 0)
    console.error(`fleet: fan-out p99 ${round(fanout.p99)} ms; restarting the server (SIGKILL) ...`)
    const killedAt = performance.timeOrigin + performance.now()
    await server.kill()
    server = startServer(dir, ready.port, siteKey)
    const again = await server.next<FleetServerReady>()
    const rejoined = await all<FleetSynced>(clients, {
      cmd: 'synced',
      timeoutMs: SYNCED_TIMEOUT_MS,
    })
    const lastSyncedAtMs = Math.max(...rejoined.map((r) => r.lastSyncedAtMs))
    const resynced = rejoined.reduce((sum, r) => sum + r.synced, 0)
    const afterRestart = await server.request<FleetServerStats>({ cmd: 'stats' })
    console.error(`fleet: ${resynced} devices synced again; fan-out after the restart ...`)
    const fanoutAfter = await fanOut(server, clients, 10, FANOUT_EDITS)
    const failures: Record<string, number> = {}
    for (const r of rejoined)
      for (const [reason, n] of Object.entries(r.failures))
        failures[reason] = (failures[reason] ?? 0) + n
    for (const client of clients) await client.finish()
    await server.finish()
    return {
      devices,
      connected,
      connectSeconds,
      rssBefore: before.rssBytes,
      rssAfter: after.rssBytes,
      heapBefore: before.heapUsedBytes,
      heapAfter: after.heapUsedBytes,
      rssAfterRestart: afterRestart.rssBytes,
      fanout,
      fanoutAfter,
      restart: {
        resynced,
        fromListeningSeconds: (lastSyncedAtMs - again.listeningAtMs) / 1000,
        fromKillSeconds: (lastSyncedAtMs - killedAt) / 1000,
        serverOpenSeconds: again.setupSeconds,
        reconnects: rejoined.reduce((sum, r) => sum + r.reconnects, 0),
        failures,
      },
    }
  } catch (error) {
    for (const client of clients) await client.kill()
    await server.kill()
    throw error
  }
}

/** The fleet bench. */
export const fleetBench: Bench = {
  name: 'fleet',
  summary: `${DEVICES_DEFAULT} devices (BENCH_FLEET_DEVICES) on one server: RSS per device (<= ${RSS_PER_DEVICE_KB_MAX} KB), fan-out p99 (<= ${FANOUT_P99_MS_MAX} ms), all reconnected after a restart`,
  async run() {
    const devices = fleetDevices()
    const r = await withTempDir((dir) => runFleet(join(dir, 'fleet'), devices))
    const rssPerDeviceKB = (r.rssAfter - r.rssBefore) / r.connected / 1024
    const heapPerDeviceKB = (r.heapAfter - r.heapBefore) / r.connected / 1024
    printTable(
      `Fleet: ${r.devices} light devices (signed joins, 8 source addresses) on one server, ${FLEET_USERS} users`,
      ['figure', 'value'],
      [
        ['devices connected and synced', `${r.connected} in ${round(r.connectSeconds, 1)} s`],
        ['server RSS before / after, MB', `${mb(r.rssBefore)} / ${mb(r.rssAfter)}`],
        ['server RSS per device, KB', round(rssPerDeviceKB, 1)],
        ['server heap per device, KB', round(heapPerDeviceKB, 1)],
        [
          `fan-out of one edit to all (${FANOUT_EDITS} edits): p50 / p99 / max ms`,
          `${round(r.fanout.p50)} / ${round(r.fanout.p99)} / ${round(r.fanout.max)}`,
        ],
        ['fan-out: deliveries missing', r.fanout.missing],
        [
          'restart: all synced again, s from listening (from SIGKILL)',
          `${round(r.restart.fromListeningSeconds, 2)} (${round(r.restart.fromKillSeconds, 2)})`,
        ],
        [
          'restart: synced again / reconnections',
          `${r.restart.resynced} / ${r.restart.reconnects}`,
        ],
        ['restart: server open, s', round(r.restart.serverOpenSeconds, 2)],
        [
          'fan-out after the restart (10 edits): p50 / p99 ms, missing',
          `${round(r.fanoutAfter.p50)} / ${round(r.fanoutAfter.p99)}, ${r.fanoutAfter.missing}`,
        ],
        ['server RSS after the restart, MB', mb(r.rssAfterRestart)],
      ],
    )
    const verdicts = {
      rssPerDevice: rssPerDeviceKB <= RSS_PER_DEVICE_KB_MAX ? 'PASS' : 'FAIL',
      fanoutP99: r.fanout.p99 <= FANOUT_P99_MS_MAX && r.fanout.missing === 0 ? 'PASS' : 'FAIL',
      reconnect: r.restart.resynced === r.devices ? 'PASS' : 'FAIL',
    }
    console.log(
      `${verdicts.rssPerDevice}  server RSS per device ${round(rssPerDeviceKB, 1)} KB (goal <= ${RSS_PER_DEVICE_KB_MAX})`,
    )
    console.log(
      `${verdicts.fanoutP99}  fan-out p99 ${round(r.fanout.p99)} ms, ${r.fanout.missing} missing (goal <= ${FANOUT_P99_MS_MAX} ms, none missing)`,
    )
    console.log(
      `${verdicts.reconnect}  ${r.restart.resynced} of ${r.devices} synced again after the restart, ${round(r.restart.fromListeningSeconds, 2)} s after it listened`,
    )
    return {
      devices: r.devices,
      connected: r.connected,
      connectSeconds: round(r.connectSeconds, 2),
      rssPerDeviceKB: round(rssPerDeviceKB, 1),
      heapPerDeviceKB: round(heapPerDeviceKB, 1),
      rssMB: {
        before: mb(r.rssBefore),
        after: mb(r.rssAfter),
        afterRestart: mb(r.rssAfterRestart),
      },
      fanoutMs: {
        p50: round(r.fanout.p50),
        p99: round(r.fanout.p99),
        max: round(r.fanout.max),
        missing: r.fanout.missing,
      },
      fanoutAfterRestartMs: {
        p50: round(r.fanoutAfter.p50),
        p99: round(r.fanoutAfter.p99),
        missing: r.fanoutAfter.missing,
      },
      restart: {
        ...r.restart,
        fromListeningSeconds: round(r.restart.fromListeningSeconds, 2),
        fromKillSeconds: round(r.restart.fromKillSeconds, 2),
      },
      verdicts,
    }
  },
}
