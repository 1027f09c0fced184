/**
 * The CLI loads a peer's modules only for the commands that open one:
 * `--help`, and any command's help, start in a fraction of the time the
 * peer's modules take to load (Yjs, LevelDB, zod, ws, libp2p: about 0.3 s
 * of CPU of a 0.6 s start on the 2-core CI machine).
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CLI_BIN, PROJECT_ROOT } from './helpers/cli-run.js'

const HEAVY = ['yjs', 'level', 'classic-level', 'zod', 'ws', 'libp2p', '@chainsafe', '@libp2p']
let dir = ''
let hooks = ''

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-cli-startup-'))
  // A module hook that names every file loaded, on standard error.
  await writeFile(
    join(dir, 'hooks.mjs'),
    "export async function load(url, context, next) { if (url.startsWith('file:')) process.stderr.write('LOADED ' + url + '\\n'); return next(url, context) }\n",
  )
  hooks = join(dir, 'register.mjs')
  await writeFile(
    hooks,
    `import { register } from 'node:module'\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hooks.mjs')).href)})\n`,
  )
})

afterAll(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true })
})

/** The packages a CLI run loaded. */
function packagesLoaded(args: string[]): Promise<{ code: number | null; packages: Set<string> }> {
  const child = spawn(process.execPath, ['--import', hooks, CLI_BIN, ...args], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  return new Promise((resolve) =>
    child.once('close', (code) => {
      const packages = new Set<string>()
      for (const [, path] of stderr.matchAll(/^LOADED file:\/\/.*?\/node_modules\/(.*)$/gm)) {
        const parts = (path ?? '').split('/')
        // The built package sits in node_modules/.cache: its own files are not a package.
        if (parts[0] === '.cache') continue
        packages.add(parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? ''))
      }
      resolve({ code, packages })
    }),
  )
}

describe('the command line starts light', () => {
  it('loads no peer module for --help or a command’s help', async () => {
    for (const args of [['--help'], ['users', '--help'], ['sim', '--help'], ['events', '--help']]) {
      const { code, packages } = await packagesLoaded(args)
      expect(code, args.join(' ')).toBe(0)
      const heavy = [...packages].filter((p) => HEAVY.some((h) => p === h || p.startsWith(`${h}/`)))
      expect(heavy, args.join(' ')).toEqual([])
    }
    // The hook sees them when a command opens a peer: the check can fail.
    const { packages } = await packagesLoaded([
      'sim',
      '--seed',
      '1',
      '--ops',
      '1',
      '--days',
      '0.01',
    ])
    expect([...packages]).toEqual(expect.arrayContaining(['yjs', 'zod']))
  }, 60_000)
})
