/**
 * A mutant made ready before anything runs: its edits located and applied
 * to the product's text in memory, and the result checked to still parse
 * (a mutant that does not parse fails every test and proves nothing).
 */
import ts from 'typescript'
import type { Mutant } from './list.js'
import { applyEdits, SnippetError } from './locate.js'

/** Syntax errors of a mutated file (no type check: the tests run through esbuild). */
export function syntaxErrors(path: string, text: string): string[] {
  const out = ts.transpileModule(text, { fileName: path, reportDiagnostics: true })
  return (out.diagnostics ?? []).map(
    (d) => `${path}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`,
  )
}

/**
 * The mutated files of each mutant (path → text), or, as a string, why it
 * cannot be applied: a snippet found nowhere or more than once, or a
 * result that does not parse.
 */
export function prepare(
  mutants: readonly Mutant[],
  texts: ReadonlyMap<string, string>,
): Map<string, Map<string, string> | string> {
  const prepared = new Map<string, Map<string, string> | string>()
  for (const mutant of mutants) {
    try {
      const changed = applyEdits(mutant.name, mutant.edits, texts)
      const errors = [...changed].flatMap(([path, text]) => syntaxErrors(path, text))
      prepared.set(
        mutant.name,
        errors.length === 0
          ? changed
          : `mutant ${mutant.name} does not parse: ${errors.join('; ')}`,
      )
    } catch (error) {
      if (!(error instanceof SnippetError)) throw error
      prepared.set(mutant.name, error.message)
    }
  }
  return prepared
}
