/**
 * The benches' children run compiled, as the published package runs (`npm
 * run build`, then `dist/`): tsx compiles with esbuild's keepNames, which
 * wraps every closure (about 5.6 KB more heap per server connection, and
 * about 1.5x the simulator's CPU), so figures taken through tsx overstate
 * what a deployment costs. `run.ts` compiles the project and bench/ once per
 * run with tsc into `node_modules/.cache/rostersync-bench-<checkout hash>`
 * (bare imports resolve from there; one folder per checkout, so git
 * worktrees sharing one node_modules do not build over each other).
 * `BENCH_TSX=1` runs the children through tsx instead.
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { rm, symlink } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The project root (bench/..); bench.ts imports this module, so it is not taken from there. */
const PROJECT_ROOT = dirname(dirname(fileURLToPath(import.meta.url)))

/** Where tsc writes the compiled project and bench/. */
export const BUILD_DIR = join(
  PROJECT_ROOT,
  'node_modules',
  '.cache',
  `rostersync-bench-${createHash('sha256').update(PROJECT_ROOT).digest('hex').slice(0, 12)}`,
)

let building: Promise<void> | undefined
let built = false

/** Whether children run through tsx (`BENCH_TSX=1`) rather than compiled. */
export function childrenThroughTsx(): boolean {
  return process.env.BENCH_TSX === '1'
}

/** Compiles the project and bench/ into BUILD_DIR, once per process. */
export function buildProject(): Promise<void> {
  building ??= compile().then(() => {
    built = true
  })
  return building
}

async function compile(): Promise<void> {
  console.log(`\ncompiling the project with tsc into ${BUILD_DIR} ...`)
  const tsc = join(PROJECT_ROOT, 'node_modules', 'typescript', 'bin', 'tsc')
  const child = spawn(
    process.execPath,
    [tsc, '-p', join('bench', 'tsconfig.children.json'), '--outDir', BUILD_DIR],
    { cwd: PROJECT_ROOT, stdio: 'inherit' },
  )
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', resolve)
  })
  if (code !== 0) throw new Error(`tsc exited with ${code}`)
  // The admin page's files are found beside the compiled server (as in dist/).
  const assets = join(BUILD_DIR, 'admin-ui')
  await rm(assets, { recursive: true, force: true })
  await symlink(join(PROJECT_ROOT, 'admin-ui'), assets, 'dir')
}

/**
 * Node arguments that run `bench/<script>`: the compiled file once
 * `buildProject` has run (and `BENCH_TSX` is not set), else the source through tsx.
 */
export function scriptArgs(script: string): string[] {
  if (built && !childrenThroughTsx())
    return [join(BUILD_DIR, 'bench', script.replace(/\.ts$/, '.js'))]
  return ['--import', 'tsx', join('bench', script)]
}
