/**
 * The parent's side of the crash tests whose child runs on a
 * StallingStore (test/helpers/stalling-store.ts): runs the child script
 * under tsx and kills it with SIGKILL as soon as it prints its STALL line.
 */
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const projectRoot = fileURLToPath(new URL('../..', import.meta.url))

/** What a child printed: every line, its STALL line if any, and its stderr. */
export interface ChildRun {
  readonly lines: string[]
  readonly stall: string | undefined
  readonly stderr: string
}

/** Runs `script` with `options` (JSON); it is killed with SIGKILL as soon as it prints its STALL line. */
export function runStallingChild(
  script: string,
  options: Record<string, unknown>,
): Promise<ChildRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify(options)], {
    cwd: projectRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: string[] = []
  let stall: string | undefined
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line)
    if (stall === undefined && line.startsWith('STALL ')) {
      stall = line
      child.kill('SIGKILL')
    }
  })
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', () => resolve({ lines, stall, stderr }))
  })
}
