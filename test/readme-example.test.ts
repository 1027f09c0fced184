/**
 * The README's library example runs as written (issue 10): the first code
 * block of "Use it as a library" is taken from README.md and run in a child
 * process against the built package (`npm run build`'s output, made by
 * test/global-setup.ts), installed in a user's project and imported as
 * `rostersync`, as a user would.
 */
import { spawn } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { packageDir } from './helpers/cli-run.js'

const root = fileURLToPath(new URL('..', import.meta.url))
let project = ''

/** Runs a command to its end; resolves with its exit code and output. */
function run(
  command: string,
  args: string[],
  cwd: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })))
}

/** The first ```ts block after the heading. */
function exampleBlock(readme: string, heading: string): string {
  const at = readme.indexOf(heading)
  if (at < 0) throw new Error(`README.md has no ${heading}`)
  const match = /```ts\n([\s\S]*?)\n```/.exec(readme.slice(at))
  if (match?.[1] === undefined) throw new Error(`no ts block after ${heading}`)
  return match[1]
}

beforeAll(async () => {
  // A user's project with the package installed (test/global-setup.ts
  // built it as `npm run build` does), so that the worktree's dist/ (which
  // bin/rostersync.js prefers) is left alone.
  project = await mkdtemp(join(tmpdir(), 'rostersync-readme-'))
  await mkdir(join(project, 'node_modules'))
  await symlink(packageDir(), join(project, 'node_modules', 'rostersync'), 'dir')
})

afterAll(async () => {
  if (project !== '') await rm(project, { recursive: true, force: true })
})

describe("README's library example", () => {
  it('runs as written against the built package', async () => {
    const readme = await readFile(join(root, 'README.md'), 'utf8')
    const code = exampleBlock(readme, '## Use it as a library')
    expect(code).toContain("from 'rostersync'")
    // An .mjs file of the user's project: `rostersync` resolves to the
    // installed package through its `exports`.
    await writeFile(join(project, 'example.mjs'), code)
    const result = await run(process.execPath, ['example.mjs'], project)
    expect(result.stderr).not.toMatch(/Error|rejected/)
    expect(result.code).toBe(0)
    expect(result.stdout).toContain("email: 'ann@example.com'")
    expect(result.stdout).toContain("name: 'Ann Lee'")
    expect(result.stdout).toContain('undefined true')
    expect(result.stdout.trim().split('\n').at(-1)).toBe('2')
  })
})
