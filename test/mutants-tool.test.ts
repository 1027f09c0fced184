/**
 * The mutants tool itself (`npm run mutants`, docs/MUTANTS.md): snippets
 * are found wherever the code moved and refused when they match no place
 * or several, every mutant of the list applies to this checkout and still
 * parses, and a copy of a checkout leaves the checkout as it was. The
 * mutants themselves run only with `npm run mutants` (minutes, not seconds).
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { catcherCommand, catcherLabel } from '../scripts/mutants/catchers.js'
import { MUTANTS } from '../scripts/mutants/list.js'
import { applyEdits, locate, SnippetError } from '../scripts/mutants/locate.js'
import { prepare } from '../scripts/mutants/prepare.js'
import { formatTable } from '../scripts/mutants/report.js'
import {
  checkoutFiles,
  copyTree,
  productFiles,
  removeTree,
  writeFiles,
} from '../scripts/mutants/tree.js'

const root = join(import.meta.dirname, '..')
const dirs: string[] = []
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true })
})

const files = new Map([
  ['core/a.ts', 'const x = 1\nif (x > 0) return true\n'],
  ['peers/b.ts', 'export const y = 2\nexport const z = 2\n'],
])

function snippetError(run: () => unknown): SnippetError {
  try {
    run()
  } catch (error) {
    if (error instanceof SnippetError) return error
    throw error
  }
  throw new Error('no SnippetError')
}

describe('locating a snippet', () => {
  it('finds it in the hinted file, or anywhere when the code moved', () => {
    expect(locate('m', { find: 'x > 0', replace: '', file: 'core/a.ts' }, files)).toEqual({
      file: 'core/a.ts',
      at: 16,
    })
    expect(locate('m', { find: 'const y', replace: '', file: 'core/a.ts' }, files)).toEqual({
      file: 'peers/b.ts',
      at: 7,
    })
    expect(locate('m', { find: 'const y', replace: '', file: 'gone.ts' }, files).file).toBe(
      'peers/b.ts',
    )
  })

  it('refuses a snippet found nowhere, or in more than one place, saying the list needs updating', () => {
    const none = snippetError(() => locate('lost', { find: 'x < 0', replace: '' }, files))
    expect(none.message).toMatch(/^mutant lost: the snippet "x < 0" is in no product file/)
    expect(none.message).toContain('update scripts/mutants/list.ts')
    const twice = snippetError(() => locate('vague', { find: '= 2', replace: '' }, files))
    expect(twice.message).toContain('matches 2 places (peers/b.ts): make it longer')
    const both = snippetError(() => locate('vague', { find: 'const', replace: '' }, files))
    expect(both.message).toContain('matches 3 places (core/a.ts, peers/b.ts)')
    const inHint = snippetError(() =>
      locate('vague', { find: '= 2', replace: '', file: 'peers/b.ts' }, files),
    )
    expect(inHint.message).toContain('is in peers/b.ts 2 times')
  })

  it('applies edits in order without touching the texts it was given', () => {
    const changed = applyEdits(
      'm',
      [
        { find: 'x > 0', replace: 'x > 1' },
        { find: 'x > 1) return true', replace: 'x > 1) return false' },
      ],
      files,
    )
    expect([...changed]).toEqual([['core/a.ts', 'const x = 1\nif (x > 1) return false\n']])
    expect(files.get('core/a.ts')).toBe('const x = 1\nif (x > 0) return true\n')
    expect(() => applyEdits('m', [{ find: 'x > 0', replace: 'x > 0' }], files)).toThrow(
      SnippetError,
    )
    expect(() => applyEdits('m', [], files)).toThrow(SnippetError)
  })
})

describe('the mutant list', () => {
  it('has unique kebab-case names, catchers that exist, and every mutant applies here and parses', async () => {
    const names = MUTANTS.map((m) => m.name)
    expect(new Set(names).size).toBe(names.length)
    for (const name of names) expect(name).toMatch(/^[a-z0-9]+(-[a-z0-9]+)*$/)
    for (const m of MUTANTS) {
      expect(m.catchers.length, m.name).toBeGreaterThan(0)
      for (const c of m.catchers) if ('test' in c) expect(existsSync(join(root, c.test))).toBe(true)
    }
    const texts = await productFiles(root, checkoutFiles(root))
    const problems = [...prepare(MUTANTS, texts)].filter(([, state]) => typeof state === 'string')
    expect(problems).toEqual([])
  }, 120_000)

  it('names a catcher (with its environment) and builds its command', () => {
    const test = { test: 'test/x.test.ts', name: 'rule 1' }
    expect(catcherLabel(test)).toBe('test/x.test.ts > rule 1')
    expect(catcherCommand(test, '/tmp/r.json')).toEqual([
      'node_modules/.bin/vitest',
      'run',
      'test/x.test.ts',
      '-t',
      'rule 1',
      '--reporter=json',
      '--outputFile=/tmp/r.json',
    ])
    const seeded = { test: 'test/p.test.ts', env: { ROSTERSYNC_SEED: '1' } }
    expect(catcherLabel(seeded)).toBe('ROSTERSYNC_SEED=1 test/p.test.ts')
    const sim = { sim: ['--seed', '1'] }
    expect(catcherLabel(sim)).toBe('sim --seed 1')
    expect(catcherCommand(sim, '')).toEqual([
      'node_modules/.bin/tsx',
      'bin/rostersync.js',
      'sim',
      '--seed',
      '1',
      '--json',
    ])
  })
})

describe('a copy of the checkout', () => {
  it('holds tracked and untracked files but not ignored ones; mutating it leaves the checkout alone', async () => {
    const repo = await mkdtemp(join(tmpdir(), 'rostersync-mutants-test-'))
    dirs.push(repo)
    await mkdir(join(repo, 'core'))
    await mkdir(join(repo, 'node_modules'))
    await writeFile(join(repo, '.gitignore'), 'node_modules\nignored.txt\n')
    await writeFile(join(repo, 'core/a.ts'), 'export const a = 1\n')
    execFileSync('git', ['init', '-q'], { cwd: repo })
    execFileSync('git', ['add', '.'], { cwd: repo })
    await writeFile(join(repo, 'core/new.ts'), 'export const b = 2\n')
    await writeFile(join(repo, 'ignored.txt'), 'no')

    const listed = checkoutFiles(repo).sort()
    expect(listed).toEqual(['.gitignore', 'core/a.ts', 'core/new.ts'])
    const copy = await copyTree(repo, listed)
    dirs.push(copy)
    expect((await readdir(copy)).sort()).toEqual(['.gitignore', 'core', 'node_modules'])
    const texts = await productFiles(repo, listed)
    expect([...texts.keys()].sort()).toEqual(['core/a.ts', 'core/new.ts'])
    await writeFiles(copy, applyEdits('m', [{ find: 'a = 1', replace: 'a = 2' }], texts))
    expect(await readFile(join(copy, 'core/a.ts'), 'utf8')).toBe('export const a = 2\n')
    expect(await readFile(join(repo, 'core/a.ts'), 'utf8')).toBe('export const a = 1\n')
    await removeTree(copy)
    expect(existsSync(copy)).toBe(false)
  })
})

describe('the command', () => {
  it('--list checks every snippet; an unknown --only is a usage error', () => {
    const tsx = join(root, 'node_modules/.bin/tsx')
    const list = spawnSync(tsx, ['scripts/mutants/run.ts', '--list'], { cwd: root })
    expect(list.status, list.stderr.toString()).toBe(0)
    for (const m of MUTANTS) expect(list.stdout.toString()).toContain(`${m.name}\n`)
    const bad = spawnSync(tsx, ['scripts/mutants/run.ts', '--only', 'no-such-mutant'], {
      cwd: root,
    })
    expect(bad.status).toBe(2)
    expect(bad.stderr.toString()).toContain('no mutant named no-such-mutant')
  }, 120_000)

  it('prints one row per mutant, then the totals', () => {
    const table = formatTable(
      [
        { name: 'a', status: 'caught', caughtBy: 'test/x.test.ts', seconds: 1.25, runs: [] },
        { name: 'bb', status: 'survived', seconds: 3, runs: [] },
      ],
      { totalSeconds: 9, baselineSeconds: 4, loadAverage: { before: [1, 2, 3], after: [2, 2, 2] } },
    )
    expect(table.split('\n')).toEqual([
      'mutant  caught by       seconds',
      '------  --------------  -------',
      'a       test/x.test.ts  1.3',
      'bb      SURVIVED        3.0',
      '',
      '1 of 2 caught; total 9.0 s (baseline 4.0 s); load average 1 2 3 before, 2 2 2 after',
    ])
  })
})
