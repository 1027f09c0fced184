/**
 * Vitest's global set-up: the package as `npm run build` makes it and npm
 * would install it (`dist/` compiled with tsc, `bin/`, `admin-ui/`,
 * `package.json`, and the project's `node_modules` beside them), built once
 * for the run and handed to the test files as `packageDir`.
 *
 * The CLI tests run `bin/rostersync.js` from it, as an operator runs the
 * installed command: through tsx, every CLI process paid about 0.4 s of CPU
 * to start and ran its work about 1.5x slower (esbuild's keepNames), on
 * hundreds of processes a run. The README's example imports it as
 * `rostersync`. A few tests still run the sources' `bin/rostersync.js`
 * (test/front-defaults.test.ts, test/sim-replay.test.ts).
 *
 * The build is kept in `node_modules/.cache/rostersync-package-<hash>`, the
 * hash of every file it is made from: a run with the same sources (a second
 * `vitest run`, another file alone) uses it as it is; one with changed
 * sources builds anew, and removes builds unused for an hour. A run none
 * of whose files needs it (a file that does not run the CLI, alone) does
 * without it. A build with type errors fails the run.
 */
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { cp, mkdir, readdir, readFile, rename, rm, stat, symlink, utimes } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { TestProject } from 'vitest/node'

const root = fileURLToPath(new URL('..', import.meta.url))
const cacheDir = join(root, 'node_modules', '.cache')
const PREFIX = 'rostersync-package-'
/** What `tsconfig.build.json` compiles, and what else the package holds. */
const SOURCES = ['index.ts', 'core', 'peers', 'server-peer', 'sim', 'storage', 'transports', 'cli']
const CONFIG = ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'bin']

declare module 'vitest' {
  export interface ProvidedContext {
    /** The built package (see test/global-setup.ts). */
    packageDir: string
  }
}

async function filesUnder(path: string): Promise<string[]> {
  if (!(await stat(path)).isDirectory()) return [path]
  const entries = await readdir(path, { withFileTypes: true, recursive: true })
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .sort()
}

/** The hash of every file the package is made from (names and contents). */
async function sourceHash(): Promise<string> {
  const hash = createHash('sha256')
  for (const top of [...SOURCES, ...CONFIG])
    for (const file of await filesUnder(join(root, top))) {
      hash.update(file.slice(root.length)).update('\0')
      hash.update(await readFile(file)).update('\0')
    }
  return hash.digest('hex').slice(0, 16)
}

function tsc(outDir: string): Promise<void> {
  const child = spawn(
    process.execPath,
    [
      join(root, 'node_modules/typescript/bin/tsc'),
      '-p',
      'tsconfig.build.json',
      '--outDir',
      outDir,
    ],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let output = ''
  child.stdout.on('data', (c: Buffer) => (output += c.toString()))
  child.stderr.on('data', (c: Buffer) => (output += c.toString()))
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    // Type errors fail the run (and nothing is kept): the package is what
    // `npm run build` makes, and that build must be clean.
    child.once('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`tsc exited with ${code}:\n${output}`)),
    )
  })
}

async function build(target: string): Promise<void> {
  // Built beside the target and renamed into place, so that a run stopped
  // half way, or two runs at once, never leave or use a half-built package.
  const partial = `${target}.${randomBytes(4).toString('hex')}.partial`
  try {
    await mkdir(partial, { recursive: true })
    await tsc(join(partial, 'dist'))
    await cp(join(root, 'bin'), join(partial, 'bin'), { recursive: true })
    await cp(join(root, 'package.json'), join(partial, 'package.json'))
    await symlink(join(root, 'admin-ui'), join(partial, 'admin-ui'), 'dir')
    await symlink(join(root, 'node_modules'), join(partial, 'node_modules'), 'dir')
    await rename(partial, target).catch(async (error: NodeJS.ErrnoException) => {
      // Another run built the same sources first: its package is as good.
      if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error
    })
  } finally {
    await rm(partial, { recursive: true, force: true })
  }
}

/** Whether a test file runs the built package (the CLI's helpers, or `inject('packageDir')`). */
async function needsPackage(file: string): Promise<boolean> {
  return /inject\('packageDir'\)|helpers\/cli-(run|operator)\.js/.test(await readFile(file, 'utf8'))
}

export default async function setup(project: TestProject): Promise<void> {
  // Only for a run with a file that needs it: a file run alone, or a
  // mutant's catchers (scripts/mutants), do without the build.
  const filters = (project.vitest as unknown as { filenamePattern?: string[] }).filenamePattern
  // A filter may name a line (`file.test.ts:47`), which the glob does not take.
  const files = filters?.map((f) => f.replace(/:\d+$/, ''))
  const { testFiles } = await project.globTestFiles(files?.length ? files : undefined)
  if (!(await Promise.all(testFiles.map(needsPackage))).some(Boolean)) {
    project.provide('packageDir', '')
    return
  }
  const name = `${PREFIX}${await sourceHash()}`
  const target = join(cacheDir, name)
  const ready = await stat(join(target, 'package.json')).then(
    () => true,
    () => false,
  )
  // Marked as used now: another run removes only builds unused for an hour.
  if (ready) await utimes(target, new Date(), new Date()).catch(() => undefined)
  else {
    const started = Date.now()
    await build(target)
    console.log(`test/global-setup.ts: built the package in ${Date.now() - started} ms (${target})`)
    // Older builds go once unused for an hour (a run started on one before
    // this one, another checkout's, may still be using it), and so do the
    // half-built folders of runs stopped while building.
    for (const old of await readdir(cacheDir)) {
      if (!old.startsWith(PREFIX) || old === name) continue
      const built = await stat(join(cacheDir, old)).catch(() => undefined)
      if (built !== undefined && Date.now() - built.mtimeMs > 3_600_000)
        await rm(join(cacheDir, old), { recursive: true, force: true })
    }
  }
  project.provide('packageDir', target)
}
