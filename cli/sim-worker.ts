/**
 * A worker thread of `runSwarm` (sim-swarm.ts): receives seeds one at a
 * time, runs each simulation with the swarm's options, and posts back its
 * summary.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { replayCommand } from '../sim/options.js'
import { runSimulation } from '../sim/run.js'
import { summarize, type SwarmOptions } from './sim-swarm.js'

const port = parentPort
if (port === null) throw new Error('sim-worker runs as a worker thread')
const options = workerData as SwarmOptions

port.on('message', (seed: number) => {
  const started = performance.now()
  runSimulation({ ...options, seed }).then(
    (report) => port.postMessage(summarize(report, Math.round(performance.now() - started))),
    (error: unknown) => {
      // A run that throws is a failed seed too (a bug in the simulator or a peer).
      port.postMessage({
        seed,
        ok: false,
        converged: false,
        virtualMsToConverge: null,
        messages: 0,
        bytes: 0,
        events: 0,
        faults: {},
        violationCounts: { crashed: 1 },
        violations: [
          `crashed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
        ],
        replay: replayCommand({ ...options, seed }),
        traceHash: '',
        wallMs: Math.round(performance.now() - started),
      })
    },
  )
})
port.postMessage('ready')
