/**
 * PIN hashing (issue 11, peers/pin.ts): what a put of 1,000 users costs when
 * each carries a plain PIN (scrypt, peppered, on the libuv pool) against
 * the same 1,000 users without PINs (the baseline, same run, same server),
 * on a server with a LevelDB store. Reported: wall time, the process's CPU
 * seconds (the wall clock is noisy on a shared machine) and the longest
 * event-loop stall while the PINs are hashed (perf_hooks'
 * monitorEventLoopDelay), which must stay far under a second: the hashing
 * runs off the main thread, `limits.pinHashesInFlightMax` at once.
 * Also the cost of one verification (`verifyPin`, synchronous, at a door).
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { limits } from '../core/limits.js'
import { hashPin, verifyPin } from '../peers/pin.js'
import { createServer } from '../server-peer/create-server.js'
import { openLevelStore } from '../storage/level-store.js'
import { printTable, round, withTempDir, type Bench } from './bench.js'
import { makeRecords } from './records.js'

const SITE_KEY = 'bench-pin-site'
const USERS = 1_000

interface Measured {
  readonly wallMs: number
  readonly cpuS: number
  readonly stallMaxMs: number
}

async function putAll(withPins: boolean, offset: number): Promise<Measured> {
  return withTempDir(async (dir) => {
    const server = await createServer({
      store: await openLevelStore(dir),
      siteKey: SITE_KEY,
      listen: false,
    })
    try {
      const records = makeRecords(offset, USERS).map((record, i) =>
        withPins ? { ...record, pin: String(100_000 + i) } : record,
      )
      const delay = monitorEventLoopDelay({ resolution: 10 })
      delay.enable()
      const cpu = process.cpuUsage()
      const start = performance.now()
      await Promise.all(records.map((record) => server.users.put(record)))
      const wallMs = performance.now() - start
      const used = process.cpuUsage(cpu)
      delay.disable()
      return {
        wallMs,
        cpuS: (used.user + used.system) / 1e6,
        stallMaxMs: delay.max / 1e6,
      }
    } finally {
      await server.close()
    }
  })
}

/**
 * The longest event-loop stall while nothing of ours runs, for as long as
 * the put with PINs took: what the machine's other load alone costs the
 * loop (the calibration of the stall figures).
 */
async function idleStall(ms: number): Promise<Measured> {
  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()
  const cpu = process.cpuUsage()
  const start = performance.now()
  await new Promise((resolve) => setTimeout(resolve, ms))
  const wallMs = performance.now() - start
  const used = process.cpuUsage(cpu)
  delay.disable()
  return { wallMs, cpuS: (used.user + used.system) / 1e6, stallMaxMs: delay.max / 1e6 }
}

/** The PIN bench. */
export const pinBench: Bench = {
  name: 'pin',
  summary: `a 1,000-user put with PINs (scrypt 2^${limits.pinKdfLogN}, peppered) against one without; CPU s, event-loop stall`,
  async run({ runs }) {
    const best = (a: Measured | undefined, b: Measured): Measured =>
      a === undefined || b.cpuS < a.cpuS ? b : a
    let plain: Measured | undefined
    let pins: Measured | undefined
    for (let run = 0; run < runs; run++) {
      plain = best(plain, await putAll(false, run * USERS))
      pins = best(pins, await putAll(true, run * USERS))
    }
    const idle = await idleStall(Math.min(pins?.wallMs ?? 0, 30_000))
    const stored = hashPin('4711', SITE_KEY)
    const verifies = 20
    const cpu = process.cpuUsage()
    const start = performance.now()
    for (let i = 0; i < verifies; i++) verifyPin('4711', stored, SITE_KEY)
    const verifyMs = (performance.now() - start) / verifies
    const used = process.cpuUsage(cpu)
    const verifyCpuMs = (used.user + used.system) / 1e3 / verifies
    const rows = [
      ['without PINs (baseline)', plain as Measured],
      ['with PINs', pins as Measured],
      ['idle, as long (calibration)', idle],
    ] as const
    printTable(
      `put of ${USERS} users at once, best of ${runs} by CPU`,
      ['records', 'wall ms', 'CPU s', 'longest stall ms'],
      rows.map(([label, m]) => [
        label,
        round(m.wallMs, 0),
        round(m.cpuS, 2),
        round(m.stallMaxMs, 1),
      ]),
    )
    printTable(
      'one verifyPin (synchronous)',
      ['wall ms', 'CPU ms'],
      [[round(verifyMs, 1), round(verifyCpuMs, 1)]],
    )
    return {
      pinPutWallMs: round(pins?.wallMs ?? 0, 0),
      pinPutCpuS: round(pins?.cpuS ?? 0, 2),
      pinPutStallMaxMs: round(pins?.stallMaxMs ?? 0, 1),
      plainPutWallMs: round(plain?.wallMs ?? 0, 0),
      plainPutCpuS: round(plain?.cpuS ?? 0, 2),
      plainPutStallMaxMs: round(plain?.stallMaxMs ?? 0, 1),
      idleStallMaxMs: round(idle.stallMaxMs, 1),
      verifyPinMs: round(verifyMs, 1),
      verifyPinCpuMs: round(verifyCpuMs, 1),
    }
  },
}
