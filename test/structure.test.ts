/**
 * The house's size limits (issue 14), checked over the source so they stay
 * true: no file in `peers/` over 500 lines, and no class in `core/`,
 * `peers/`, `server-peer/`, `storage/` or `transports/` with more than 15
 * fields. A field is a property declaration (instance, not static) or a
 * constructor parameter property (`private readonly x`); the TypeScript
 * compiler parses each file, so comments, strings and nested classes are
 * read as TypeScript reads them.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import ts from 'typescript'
import { describe, expect, it } from 'vitest'

const root = join(import.meta.dirname, '..')
const FILE_LINES_MAX = 500
const CLASS_FIELDS_MAX = 15
const LINE_LIMITED = ['peers']
const FIELD_LIMITED = ['core', 'peers', 'server-peer', 'storage', 'transports']

/** Every `.ts` file under `dir` (relative to the project root), sorted. */
function sourceFiles(dir: string): string[] {
  const out: string[] = []
  for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...sourceFiles(path))
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(path)
  }
  return out.sort()
}

/** Lines of a text, as `wc -l` counts them (a last line without a newline counts too). */
function lineCount(text: string): number {
  const newlines = text.split('\n').length - 1
  return text.length > 0 && !text.endsWith('\n') ? newlines + 1 : newlines
}

const isStatic = (node: ts.Node): boolean =>
  ts.canHaveModifiers(node) &&
  (ts.getModifiers(node) ?? []).some((m) => m.kind === ts.SyntaxKind.StaticKeyword)

/** Each class of a source text with its field count. */
function classFields(fileName: string, text: string): Array<[string, number]> {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true)
  const out: Array<[string, number]> = []
  const visit = (node: ts.Node): void => {
    if (ts.isClassDeclaration(node) || ts.isClassExpression(node)) {
      let fields = 0
      for (const member of node.members) {
        if (ts.isPropertyDeclaration(member) && !isStatic(member)) fields++
        if (ts.isConstructorDeclaration(member))
          for (const param of member.parameters)
            if (ts.isParameterPropertyDeclaration(param, member)) fields++
      }
      out.push([node.name?.text ?? '(anonymous)', fields])
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  return out
}

/** Files of `dirs` over FILE_LINES_MAX lines, as "path: lines". */
function longFiles(dirs: readonly string[]): string[] {
  const out: string[] = []
  for (const dir of dirs)
    for (const path of sourceFiles(dir)) {
      const lines = lineCount(readFileSync(join(root, path), 'utf8'))
      if (lines > FILE_LINES_MAX) out.push(`${path}: ${lines} lines`)
    }
  return out
}

/** Classes of `dirs` with more than CLASS_FIELDS_MAX fields, as "path Class: fields". */
function wideClasses(dirs: readonly string[]): string[] {
  const out: string[] = []
  for (const dir of dirs)
    for (const path of sourceFiles(dir))
      for (const [name, fields] of classFields(path, readFileSync(join(root, path), 'utf8')))
        if (fields > CLASS_FIELDS_MAX) out.push(`${path} ${name}: ${fields} fields`)
  return out
}

describe('structure (issue 14)', () => {
  it(`no file in ${LINE_LIMITED.join(', ')}/ is over ${FILE_LINES_MAX} lines`, () => {
    expect(sourceFiles('peers').length).toBeGreaterThan(20)
    expect(longFiles(LINE_LIMITED)).toEqual([])
  })

  it(`no class in ${FIELD_LIMITED.join(', ')} has more than ${CLASS_FIELDS_MAX} fields`, () => {
    expect(wideClasses(FIELD_LIMITED)).toEqual([])
  })

  it('finds the classes it limits (the walk reaches them)', () => {
    const replica = relative(root, join(root, 'peers', 'replica.ts'))
    const found = classFields(replica, readFileSync(join(root, replica), 'utf8'))
    expect(found.map(([name]) => name)).toContain('Replica')
    expect(found.find(([name]) => name === 'Replica')?.[1]).toBeGreaterThan(5)
  })

  it('can fail: counts properties, parameter properties and nested classes', () => {
    const props = Array.from({ length: 14 }, (_, i) => `  private f${i} = ${i}`).join('\n')
    const text = [
      'export class Wide {',
      props,
      '  static readonly notAField = 1',
      '  constructor(private readonly a: number, public b: number, c: number) {}',
      '  method(): void { const Inner = class { x = 1 }; void Inner }',
      '}',
    ].join('\n')
    expect(classFields('wide.ts', text)).toEqual([
      ['Wide', 16],
      ['(anonymous)', 1],
    ])
    expect(lineCount('a\n'.repeat(FILE_LINES_MAX + 1))).toBe(FILE_LINES_MAX + 1)
    expect(lineCount('a\nb')).toBe(2)
  })
})
