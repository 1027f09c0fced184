/** The report of a mutants run: one row per mutant, then the totals. */

/** What happened to one mutant. */
export interface MutantResult {
  readonly name: string
  /**
   * `caught`: a catcher failed; `survived`: every catcher passed;
   * `not-applied`: its snippet was not found (or it does not parse);
   * `baseline-failed`: a catcher failed on the unmutated tree.
   */
  readonly status: 'caught' | 'survived' | 'not-applied' | 'baseline-failed'
  readonly caughtBy?: string
  /** Seconds of catcher runs until it was caught (or of all of them). */
  readonly seconds: number
  readonly runs: ReadonlyArray<{
    readonly catcher: string
    readonly outcome: 'pass' | 'fail' | 'timeout'
    readonly seconds: number
    readonly detail: string
  }>
  readonly detail?: string
}

/** The totals printed under the table. */
export interface Totals {
  readonly totalSeconds: number
  readonly baselineSeconds: number
  readonly loadAverage: { readonly before: readonly number[]; readonly after: readonly number[] }
}

const pad = (text: string, width: number): string =>
  text + ' '.repeat(Math.max(0, width - text.length))

/** The table: mutant, caught by (or why not), seconds; then totals and the load. */
export function formatTable(results: readonly MutantResult[], totals: Totals): string {
  const rows = results.map((r) => {
    const by =
      r.status === 'caught'
        ? `${r.caughtBy ?? ''}${r.runs.at(-1)?.outcome === 'timeout' ? ' (timed out)' : ''}`
        : `${r.status.toUpperCase()}${r.detail === undefined ? '' : `: ${r.detail}`}`
    return [r.name, by, r.seconds.toFixed(1)]
  })
  const head = ['mutant', 'caught by', 'seconds']
  const widths = [0, 1].map((i) =>
    Math.max(head[i]?.length ?? 0, ...rows.map((row) => row[i]?.length ?? 0)),
  )
  const line = (row: readonly string[]): string =>
    `${pad(row[0] ?? '', widths[0] ?? 0)}  ${pad(row[1] ?? '', widths[1] ?? 0)}  ${row[2] ?? ''}`
  const caught = results.filter((r) => r.status === 'caught').length
  return [
    line(head),
    line(['-'.repeat(widths[0] ?? 0), '-'.repeat(widths[1] ?? 0), '-------']),
    ...rows.map(line),
    '',
    `${caught} of ${results.length} caught; total ${totals.totalSeconds.toFixed(1)} s ` +
      `(baseline ${totals.baselineSeconds.toFixed(1)} s); load average ` +
      `${totals.loadAverage.before.join(' ')} before, ${totals.loadAverage.after.join(' ')} after`,
  ].join('\n')
}
