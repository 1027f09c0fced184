/**
 * The oracle's checks on a converged site: every peer's view against the
 * reference model (`model.ts`), the stamps of causally ordered writes, and
 * local-only values never in another writer's reach. Pure: the simulator
 * passes each peer's views and the replicated part of each writer as plain
 * values.
 *
 * Rules reported (the simulator's violation names):
 * - `oracle-view`: a replicated field, or the user's existence, differs from
 *   the model (rules 1, 2, 4 and the last-writer-wins policy);
 * - `oracle-device-specific`: a device-specific field differs from the
 *   peer's own latest value under that policy (rule 5);
 * - `oracle-rule3`: a device shows a user it deleted locally although the
 *   server did not change it since, or hides one the server changed since;
 * - `oracle-rule3-full-sync`: a device still hides, after a full sync, a
 *   user it deleted locally before it;
 * - `oracle-stamp-order`: a write made after its writer had seen another
 *   write does not stamp higher (the hybrid logical clock's promise; a
 *   stamp as it stands after the writer's rewrites of stamps that ran
 *   ahead, or its stand-in: see `WriteRecord.stampStandIn`);
 * - `oracle-local-leaked`: a device-specific value a device wrote is in its
 *   replicated part (it left the device).
 */
import { holds, type History, type WriteRecord } from './history.js'
import { canonical, OracleModel, type ExpectedView } from './model.js'

/** One rule broken, as the oracle saw it. */
export interface OracleViolation {
  readonly rule: string
  readonly peer?: string
  readonly user?: string
  readonly detail: string
}

/** What a peer shows, read by the simulator. */
export interface PeerViews {
  readonly peer: string
  /** The user as the peer shows it (id plus non-vacant fields), or undefined. */
  view(user: string): Readonly<Record<string, unknown>> | undefined
  /** Users the peer shows (to find users the model does not know). */
  users(): readonly string[]
}

/** The fields a writer's replicated part holds for a user (values as written), or undefined. */
export type ReplicatedPart = (
  writer: string,
  user: string,
) => Readonly<Record<string, unknown>> | undefined

/** Violations listed per rule; beyond that they are counted by the caller's report only. */
const PER_RULE_MAX = 20

/** Runs every oracle check; see the module comment. */
export function checkAgainstOracle(
  history: History,
  peers: readonly PeerViews[],
  replicatedPart: ReplicatedPart,
): OracleViolation[] {
  const model = new OracleModel(history)
  const out: OracleViolation[] = []
  const counts = new Map<string, number>()
  const add = (v: OracleViolation): void => {
    const n = counts.get(v.rule) ?? 0
    counts.set(v.rule, n + 1)
    if (n < PER_RULE_MAX) out.push(v)
  }
  const modelUsers = model.users()
  for (const peer of peers) {
    const users = new Set([...modelUsers, ...peer.users()])
    for (const user of [...users].sort())
      for (const v of compareView(
        model,
        peer.peer,
        user,
        model.expected(peer.peer, user),
        peer.view(user),
      ))
        add(v)
  }
  for (const v of stampOrder(history)) add(v)
  for (const device of history.devices)
    for (const { user, field, value } of model.localOnlyValues(device)) {
      const held = replicatedPart(device, user)?.[field]
      if (held === undefined || canonical(held) !== canonical(value)) continue
      add({
        rule: 'oracle-local-leaked',
        peer: device,
        user,
        detail: `${device}'s device-specific ${field}=${canonical(value)} of ${user} is in its replicated part`,
      })
    }
  return out
}

/** One peer's view of one user against the model. */
function compareView(
  model: OracleModel,
  peer: string,
  user: string,
  expected: ExpectedView,
  actual: Readonly<Record<string, unknown>> | undefined,
): OracleViolation[] {
  const at = { peer, user }
  if (expected.replicated === undefined) {
    if (actual === undefined) return []
    return [
      {
        rule: 'oracle-view',
        ...at,
        detail: `${peer} shows ${user}, which must not exist (server delete or never enrolled): ${show(actual)}`,
      },
    ]
  }
  if (actual === undefined) {
    if (!expected.hidden.sure || expected.hidden.value) return []
    const because = expected.shownBecause
    return [
      {
        rule:
          because === 'full-sync'
            ? 'oracle-rule3-full-sync'
            : because === 'never-deleted'
              ? 'oracle-view'
              : 'oracle-rule3',
        ...at,
        detail:
          because === 'never-deleted'
            ? `${peer} does not show ${user}, which exists and ${peer} never deleted`
            : `${peer} still hides ${user}, which it deleted locally, although it must show again (${because})`,
      },
    ]
  }
  if (expected.hidden.sure && expected.hidden.value)
    return [
      {
        rule: 'oracle-rule3',
        ...at,
        detail: `${peer} shows ${user}, which it deleted locally and the server has not changed since`,
      },
    ]
  const out: OracleViolation[] = []
  const fields = new Set([
    ...expected.replicated.keys(),
    ...expected.local.keys(),
    ...Object.keys(actual),
  ])
  fields.delete('id')
  for (const field of [...fields].sort()) {
    const shown = actual[field]
    if (model.policyOf(field) === 'device-specific') {
      const want = expected.local.get(field)
      if (want !== undefined && !want.sure) continue
      const value = want?.value
      if (canonical(value) === canonical(shown)) continue
      out.push({
        rule: 'oracle-device-specific',
        ...at,
        detail: `${peer} shows device-specific ${field}=${canonical(shown)} for ${user}, its own latest value is ${canonical(value)}`,
      })
      continue
    }
    const value = expected.replicated.get(field)
    if (canonical(value) === canonical(shown)) continue
    out.push({
      rule: 'oracle-view',
      ...at,
      detail: `${peer} shows ${field}=${canonical(shown)} for ${user}, the rules say ${canonical(value)}`,
    })
  }
  return out
}

/**
 * Every surviving write stamps higher than every write its writer had seen
 * (whatever user or field: a hybrid logical clock is one clock per writer).
 * Per write, the greatest stamp it had seen comes from per-client prefix
 * maxima of the stamps in clock order, so the check is O(n log n).
 */
function stampOrder(history: History): OracleViolation[] {
  const stamped = history.writes.filter(
    (w) => w.dot !== undefined && w.stamp !== undefined && holds(history.final, w.dot),
  )
  const byClient = new Map<number, { clocks: number[]; best: WriteRecord[] }>()
  for (const w of [...stamped].sort((a, b) => (a.dot?.clock ?? 0) - (b.dot?.clock ?? 0))) {
    const dot = w.dot as { client: number; clock: number }
    let entry = byClient.get(dot.client)
    if (entry === undefined) {
      entry = { clocks: [], best: [] }
      byClient.set(dot.client, entry)
    }
    const previous = entry.best.at(-1)
    entry.clocks.push(dot.clock)
    entry.best.push(
      previous !== undefined && (previous.stamp ?? 0) >= (w.stamp ?? 0) ? previous : w,
    )
  }
  const out: OracleViolation[] = []
  for (const b of stamped) {
    let seen: WriteRecord | undefined
    for (const [client, clock] of b.knows) {
      const entry = byClient.get(client)
      if (entry === undefined) continue
      const held = countBelow(entry.clocks, clock)
      const best = held === 0 ? undefined : entry.best[held - 1]
      if (
        best !== undefined &&
        best !== b &&
        (seen === undefined || (best.stamp ?? 0) > (seen.stamp ?? 0))
      )
        seen = best
    }
    if (seen === undefined || (b.stamp ?? 0) > (seen.stamp ?? 0)) continue
    // Two writes a later own write of each writer replaced before a stamp
    // rewrite: their stand-ins are equal (neither stamp stands anywhere).
    if (b.stampStandIn === true && seen.stampStandIn === true && b.stamp === seen.stamp) continue
    out.push({
      rule: 'oracle-stamp-order',
      peer: b.writer,
      ...(b.op.kind === 'policy' ? {} : { user: b.op.user }),
      detail: `${b.writer}'s ${describe(b)} at ${b.calledAt} ms stamps ${b.stamp}, not above the stamp ${seen.stamp} of ${seen.writer}'s ${describe(seen)} at ${seen.calledAt} ms it had seen`,
    })
  }
  return out
}

/** How many of the sorted `values` are below `limit`. */
function countBelow(values: readonly number[], limit: number): number {
  let lo = 0
  let hi = values.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if ((values[mid] as number) < limit) lo = mid + 1
    else hi = mid
  }
  return lo
}

function describe(w: WriteRecord): string {
  return w.op.kind === 'policy' ? `policy change of ${w.op.field}` : `${w.op.kind} of ${w.op.user}`
}

function show(view: Readonly<Record<string, unknown>>): string {
  const text = canonical(view)
  return text.length > 200 ? `${text.slice(0, 200)}...` : text
}
