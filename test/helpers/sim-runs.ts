/**
 * The simulator's test runs: a run that prints its replay command (and its
 * first violations), and the calm site that fixed plans start from.
 */
import type { SimOptions } from '../../sim/options.js'
import { runSimulation, type SimReport } from '../../sim/run.js'

/** No faults but those a test's plan adds. */
export const CALM: Partial<SimOptions> = {
  loss: 0,
  dup: 0,
  jitterMs: 0,
  clog: 0,
  skewMs: 0,
  periodic: 0,
  partitions: 0,
  crashes: 0,
  backupRestores: 0,
  lanIslands: 0,
  retiring: 0,
}

/** Runs `options`, printing `label`, the outcome and the replay command. */
export async function simulateLogged(label: string, options: SimOptions): Promise<SimReport> {
  const report = await runSimulation(options)
  console.log(`${label}: ${report.ok ? 'ok' : 'FAILED'} — replay: ${report.replay}`)
  for (const v of report.violations.slice(0, 5)) console.log(`  [${v.rule}] ${v.detail}`)
  return report
}
