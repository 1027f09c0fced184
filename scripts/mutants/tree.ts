/**
 * Copies of the checkout to mutate. The working checkout is never written:
 * each mutant gets a fresh copy of the files git knows of (tracked, plus
 * untracked ones that are not ignored: the checkout as it is now, edits
 * included) in a temporary directory, with a symlink to the checkout's
 * node_modules, and the copy is deleted afterwards.
 */
import { execFileSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import {
  copyFile,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  realpath,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { PRODUCT_DIRS } from './locate.js'

/** Copies not deleted yet (see removeLeftCopies). */
const live = new Set<string>()

/** Deletes every copy not deleted yet, synchronously (on Ctrl-C of the run). */
export function removeLeftCopies(): void {
  for (const copy of live) rmSync(copy, { recursive: true, force: true })
  live.clear()
}

/** The files of the checkout at `root` that a copy holds (paths from the root). */
export function checkoutFiles(root: string): string[] {
  const out = execFileSync(
    'git',
    ['ls-files', '-z', '--cached', '--others', '--exclude-standard'],
    { cwd: root, maxBuffer: 64 * 1024 * 1024 },
  ).toString()
  return [...new Set(out.split('\0'))].filter(
    (path) => path !== '' && path !== 'node_modules' && !path.startsWith('node_modules/'),
  )
}

/**
 * Copies `files` of `root` into a new temporary directory and links
 * node_modules; returns the copy's root. Files listed but deleted in the
 * checkout are skipped.
 */
export async function copyTree(root: string, files: readonly string[]): Promise<string> {
  const copy = await mkdtemp(join(tmpdir(), 'rostersync-mutant-'))
  live.add(copy)
  const made = new Set<string>()
  for (const path of files) {
    const from = join(root, path)
    const stat = await lstat(from).catch(() => undefined)
    if (stat === undefined || !stat.isFile()) continue
    const to = join(copy, path)
    const dir = dirname(to)
    if (!made.has(dir)) {
      await mkdir(dir, { recursive: true })
      made.add(dir)
    }
    await copyFile(from, to)
  }
  await symlink(await realpath(join(root, 'node_modules')), join(copy, 'node_modules'), 'dir')
  return copy
}

/** Deletes a copy made by {@link copyTree}. */
export async function removeTree(copy: string): Promise<void> {
  await rm(copy, { recursive: true, force: true })
  live.delete(copy)
}

/** The product's TypeScript files of the checkout (path → text), where snippets are looked for. */
export async function productFiles(
  root: string,
  files: readonly string[],
): Promise<Map<string, string>> {
  const texts = new Map<string, string>()
  for (const path of files) {
    if (!path.endsWith('.ts') || !PRODUCT_DIRS.some((dir) => path.startsWith(`${dir}/`))) continue
    const text = await readFile(join(root, path), 'utf8').catch(() => undefined)
    if (text !== undefined) texts.set(path, text)
  }
  return texts
}

/** Writes the mutated files into a copy. */
export async function writeFiles(
  copy: string,
  changed: ReadonlyMap<string, string>,
): Promise<void> {
  for (const [path, text] of changed) await writeFile(join(copy, path), text)
}
