/**
 * The real CLI as a child process, as an operator runs it (the built
 * package's `bin/rostersync.js`, test/global-setup.ts; from the project root, with the site key, admin token and export
 * passphrase variables emptied so the caller's shell does not leak in).
 */
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect, inject } from 'vitest'

/** The project root, where the CLI runs. */
export const PROJECT_ROOT = fileURLToPath(new URL('../..', import.meta.url))
/** The CLI's entry point: the built package's, as installed (test/global-setup.ts). */
export const CLI_BIN = join(packageDir(), 'bin', 'rostersync.js')

/** The built package's folder (test/global-setup.ts); a clear error when the run did not build it. */
export function packageDir(): string {
  const dir = inject('packageDir')
  if (dir === '')
    throw new Error(
      "test/global-setup.ts built no package for this run: it builds one when a selected file imports test/helpers/cli-run.js or calls inject('packageDir')",
    )
  return dir
}

/** Variables emptied for every run. */
export const CLI_ENV = {
  ROSTERSYNC_SITE_KEY: '',
  ROSTERSYNC_ADMIN_TOKEN: '',
  ROSTERSYNC_EXPORT_PASSPHRASE: '',
}

/** How a run ended. */
export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the CLI; `closeStdout` closes the reading end at once (a `| head` that is done). */
export function runCli(args: string[], closeStdout = false): Promise<CliResult> {
  const child = spawn(process.execPath, [CLI_BIN, ...args], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...CLI_ENV },
  })
  let stdout = ''
  let stderr = ''
  if (closeStdout) child.stdout.destroy()
  else child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })))
}

/** Non-zero exit `code` and exactly one line on stderr matching `text`. */
export function expectOneLine(result: CliResult, code: number, text: string | RegExp): void {
  expect(result.stderr.trim().split('\n'), result.stderr).toHaveLength(1)
  expect(result.stderr).toMatch(text)
  expect(result.code).toBe(code)
}
