/**
 * `runSimulation`: one deterministic run of a site under faults, from one
 * master seed. Phases:
 *
 * 1. Start the production server and devices on simulated disks, clocks and
 *    network; schedule every step of the plan (workload and faults) at its
 *    virtual time.
 * 2. Run the workload phase (virtual days, so delta-sync timers and the
 *    retention wipe fire), with the safety checks every `checkEveryMs`.
 * 3. Heal (no cuts, loss, duplication, jitter or clogs; crashed peers
 *    restarted; every device syncs) and run until every peer holds the same
 *    state (liveness), within `convergeBoundMs`.
 * 4. Check the converged state: safety once more, the write ledger, views
 *    equal everywhere and equal to the document rebuilt from every update
 *    sent.
 *
 * The report's `traceHash` covers every scheduler event, every network
 * event (with message bytes) and the final state: the same seed and options
 * give the same hash, which `test/sim-run.test.ts` checks.
 */
import type * as Y from 'yjs'
import { asDeviceEntry, usersRootName } from '../core/entries.js'
import { asUserId, asWriterId } from '../core/ids.js'
import type { Replica } from '../peers/replica.js'
import {
  ChangedUsers,
  checkServerFills,
  checkServerWins,
  compareViews,
  notConverged,
  stateDigest,
  WriteLedger,
  type Violation,
} from './checks.js'
import {
  replayCommand,
  resolveConfig,
  type SimConfig,
  type SimOptions,
  type SimProgress,
} from './options.js'
import { HistoryRecorder } from './history-recorder.js'
import { StampRewrites } from './stamp-rewrites.js'
import { checkAgainstOracle, type PeerViews } from './oracle/check.js'
import { parseSteps, planFromSeed, sortSteps, type SimStep } from './plan.js'
import { WORKLOAD_FIELDS } from './records.js'
import { SimSite, type PeerSlot, type SiteStats } from './site.js'
import { TraceHash } from './trace-hash.js'
import { deviceSlot, newWorkloadStats, runStep, type WorkloadStats } from './workload.js'

/** Violations a report lists in full; beyond that they are only counted. */
const VIOLATIONS_LISTED_MAX = 50
/** Most scheduler events one phase may run: a bound on a livelocked run. */
const PHASE_EVENTS_MAX = 10_000_000
/** The window of virtual time the burst bound counts events in (see burstBound). */
const BURST_WINDOW_MS = 10_000
/** Events per window allowed per pair of peers (see burstBound). */
const BURST_EVENTS_PER_PEER_PAIR = 100

/**
 * The most events a run may spend within 10 virtual seconds: beyond it,
 * peers are busy with each other while virtual time stands still (a relay
 * storm, a retry loop without a pause), and the run stops with a
 * `livelock` violation instead of running for hours (a storm of relayed
 * envelopes once ran a seed past 3 GB). Scaled by the pairs of peers:
 * measured, the busiest 10 s of a run (every device's full sync at the
 * start, a heal) holds about 2.5 events per pair (290 for 11 peers, 5,480
 * for 51), 40 times less than this bound.
 */
export function burstBound(devices: number): { events: number; withinMs: number } {
  const peers = devices + 1
  return { events: BURST_EVENTS_PER_PEER_PAIR * peers * peers, withinMs: BURST_WINDOW_MS }
}

/** Message and byte counts of one message kind. */
export interface KindCounts {
  readonly messages: number
  readonly bytes: number
}

/** What one simulation found. */
export interface SimReport {
  readonly seed: number
  /** Every setting the run used (after defaults and swarm draws). */
  readonly config: SimConfig
  /** True when every check passed and the site converged. */
  readonly ok: boolean
  /** True when every peer held the same state within the bound after healing. */
  readonly converged: boolean
  /** Virtual ms from healing to convergence (null when it did not converge). */
  readonly virtualMsToConverge: number | null
  /** Why the site did not converge, when it did not. */
  readonly notConverged?: string
  /** Messages sent (copies from duplication not counted). */
  readonly messages: number
  /** Bytes sent. */
  readonly bytes: number
  /** Per message kind: step1, step2, update, error. */
  readonly byKind: Record<string, KindCounts>
  /** Faults injected, by kind (network and peers). */
  readonly faults: Record<string, number>
  /** Violations found (at most 50 listed). */
  readonly violations: Violation[]
  /** Violations by rule (all of them). */
  readonly violationCounts: Record<string, number>
  readonly workload: WorkloadStats
  /** Acknowledged writes checked at the end, and those a restore or retention wipe rolled back. */
  readonly writesChecked: number
  readonly writesRolledBack: number
  /** Scheduler events run. */
  readonly events: number
  /** Virtual ms from start to the end of the checks. */
  readonly virtualMs: number
  /** Steps the plan had (workload and faults). */
  readonly steps: number
  readonly traceHash: string
  /** The command that replays this run exactly. */
  readonly replay: string
}

/** Runs one simulation; see the module comment. Never throws for a failed check: see `ok`. */
export async function runSimulation(options: SimOptions): Promise<SimReport> {
  const config = resolveConfig(options)
  const steps =
    options.steps !== undefined ? sortSteps(parseSteps(options.steps)) : planFromSeed(config)
  const run = new Run(config, steps, options.onProgress)
  return run.execute(replayCommand(options, options.planFile))
}

/** The state of one run. */
class Run {
  /** The stamps devices rewrote (their clocks ran ahead): the ledger and the history read through it. */
  readonly rewrites = new StampRewrites()
  readonly ledger = new WriteLedger(this.rewrites)
  readonly site: SimSite
  readonly violations: Violation[] = []
  readonly counts: Record<string, number> = {}
  readonly stats = newWorkloadStats()
  readonly hash = new TraceHash()
  readonly startMs: number
  /** Each device's incarnation and clock reading when the site was healed. */
  readonly healedAt = new Map<PeerSlot, { generation: number; peerMs: number }>()
  /** What changed on each running replica since its last safety check. */
  readonly changed = new WeakMap<Replica, ChangedUsers>()
  /** What ran, for the oracle (sim/oracle/). */
  readonly history: HistoryRecorder

  constructor(
    readonly config: SimConfig,
    readonly steps: readonly SimStep[],
    readonly onProgress: ((progress: SimProgress) => void) | undefined,
  ) {
    this.site = new SimSite(config, {
      retentionWipe: (device, at) => {
        this.ledger.retentionWipe(device, at - this.startMs)
        this.history.retentionWipe(device)
      },
      restored: (device, backupAt, at) => {
        this.ledger.restored(device, backupAt - this.startMs, at - this.startMs)
        this.history.restored(device, backupAt - this.startMs)
      },
      fullSyncWipe: (device, wipedAt, ok) => {
        this.history.fullSyncEnded({ device, calledAt: wipedAt - this.startMs }, ok)
      },
      started: (slot) => {
        const replica = slot.replica
        if (replica === undefined) return
        this.history.attach(slot.id, replica)
        // A device's writes made while its clock ran ahead carry new stamps
        // once it rewrote them (peers/replica/restamp.ts).
        replica.stampTime.onRewrite((fresh) => this.history.stampsRewritten(slot.id, fresh))
      },
      generationBuilt: (old, snapshot) => this.history.generationBuilt(old, snapshot),
      moveStaged: (device, old) => this.history.moveStaged(device, old),
      moveEnded: (device) => this.history.moveEnded(device),
    })
    this.startMs = this.site.scheduler.now()
    this.history = new HistoryRecorder(
      this.site.server.id,
      this.site.devices.map((slot) => slot.id),
      WORKLOAD_FIELDS,
      this.elapsed,
      this.rewrites,
    )
    this.site.scheduler.onEvent = (event) => this.hash.number(event.time).number(event.seq)
  }

  elapsed = (): number => this.site.scheduler.now() - this.startMs

  violation(violation: Violation): void {
    this.counts[violation.rule] = (this.counts[violation.rule] ?? 0) + 1
    if (this.violations.length < VIOLATIONS_LISTED_MAX) this.violations.push(violation)
  }

  async execute(replay: string): Promise<SimReport> {
    const { site, config } = this
    const scheduler = site.scheduler
    this.progress('start', 0)
    void site.startAll()
    this.schedulePlan()
    // Phase 2: the workload, with safety checks along the way.
    const end = this.startMs + config.durationMs
    const bounds = { maxEvents: PHASE_EVENTS_MAX, burst: burstBound(config.devices) }
    let spent = 0
    for (let next = this.startMs + config.checkEveryMs; ; next += config.checkEveryMs) {
      const until = Math.min(next, end)
      const result = await scheduler.runUntil(until, {
        ...bounds,
        maxEvents: PHASE_EVENTS_MAX - spent,
      })
      spent += result.events
      this.safetyChecks()
      if (result.reason === 'maxEvents' || result.reason === 'burst')
        return this.stopped('workload', result.reason, replay)
      this.progress('run', this.elapsed())
      if (until >= end) break
    }
    // Phase 3: heal, then require convergence within the bound.
    this.progress('heal', this.elapsed())
    site.heal()
    const healedAt = scheduler.now()
    for (const slot of site.devices)
      if (slot.clock !== undefined)
        this.healedAt.set(slot, { generation: slot.generation, peerMs: slot.clock.now() })
    const deadline = healedAt + config.convergeBoundMs
    let reason: string | undefined = 'not checked yet'
    const converged = (): boolean => {
      reason = this.notConvergedReason()
      return reason === undefined || scheduler.now() >= deadline
    }
    const result = await scheduler.runUntil(converged, bounds)
    if (result.reason === 'maxEvents' || result.reason === 'burst')
      return this.stopped('convergence', result.reason, replay)
    const convergedAt = reason === undefined ? scheduler.now() : undefined
    // Phase 4: the converged state.
    this.progress('check', this.elapsed())
    this.safetyChecks(true)
    let writes = { checked: 0, rolledBack: 0 }
    if (convergedAt === undefined) {
      // The documents too: the sync named may merely be mid-round at the
      // deadline while the documents are what never agreed.
      const docs = this.notConvergedDocs()
      const also = docs === undefined || docs === reason ? '' : `; documents: ${docs}`
      this.violation({
        rule: 'not-converged',
        atMs: this.elapsed(),
        detail: `not converged ${config.convergeBoundMs} ms after healing: ${reason ?? ''}${also}`,
      })
      const serverDoc = site.server.replica?.doc
      if (serverDoc !== undefined) {
        const ledger = this.ledger.check(serverDoc, this.elapsed(), true)
        for (const v of ledger.violations) this.violation(v)
        writes = { checked: ledger.checked, rolledBack: 0 }
      }
    } else {
      writes = this.finalChecks()
    }
    return this.finish(replay, convergedAt, healedAt, reason, writes)
  }

  /** What peers sent broke; the trace hash; the report. */
  finish(
    replay: string,
    convergedAt: number | undefined,
    healedAt: number,
    reason: string | undefined,
    writes: { checked: number; rolledBack: number },
  ): SimReport {
    const { site } = this
    for (const sent of site.observer.violations)
      this.violation({
        rule: sent.rule,
        atMs: sent.at - this.startMs,
        peer: sent.sender,
        detail: sent.detail,
      })
    const serverDoc = site.server.replica?.doc
    const hash = new TraceHash()
      .text(this.hash.hex())
      .text(site.network.traceHash())
      .text(serverDoc === undefined ? 'no server' : stateDigest(serverDoc))
    this.progress('done', this.elapsed())
    return this.report(replay, hash.hex(), convergedAt, healedAt, reason, writes)
  }

  /**
   * A bound stopped a phase (see burstBound and PHASE_EVENTS_MAX): the run
   * ends there, failed, without healing or the final checks (they would
   * run into the same loop).
   */
  stopped(phase: string, why: 'maxEvents' | 'burst', replay: string): SimReport {
    const bound = burstBound(this.config.devices)
    const detail =
      why === 'burst'
        ? `the ${phase} phase ran more than ${bound.events} events within ${bound.withinMs / 1000} virtual seconds (a livelock: a relay or retry loop?)`
        : `the ${phase} phase ran ${PHASE_EVENTS_MAX} events (a livelock?)`
    this.violation({
      rule: why === 'burst' ? 'livelock' : 'event-budget',
      atMs: this.elapsed(),
      detail,
    })
    const reason = `stopped: ${detail}`
    return this.finish(replay, undefined, this.site.scheduler.now(), reason, {
      checked: 0,
      rolledBack: 0,
    })
  }

  /** Schedules every step at its time (and each restore's backup before it). */
  schedulePlan(): void {
    const { site } = this
    const ctx = {
      site,
      ledger: this.ledger,
      stats: this.stats,
      violation: (v: Violation) => this.violation(v),
      elapsed: this.elapsed,
      history: this.history,
    }
    if (this.config.canary === 'lose-write') this.loseServerWrites()
    // One backup per device and time: a device keeps one backup, and
    // restores whose backups fall before the start all take theirs at 0
    // (10,000 restores put 10,000 backups there, and the run stopped as a
    // livelock before anything ran).
    const backups = new Set<string>()
    for (const step of this.steps) {
      if (step.at >= this.config.durationMs) continue
      if (step.op === 'restore') {
        const slot = deviceSlot(site, step.peer)
        const at = Math.max(0, step.at - step.value)
        const key = `${slot.id}@${at}`
        if (!backups.has(key)) site.scheduler.setTimeout(() => site.backup(slot), at)
        backups.add(key)
      }
      site.scheduler.setTimeout(() => runStep(ctx, step), step.at)
    }
  }

  /**
   * The `lose-write` canary: the server's disk goes back to a backup (the
   * server lost acknowledged writes), and so does every device's, so that no
   * device holds the server's signed envelopes of them either: a device
   * relays those back to a server that lost them (PROTOCOL.md, "Signed
   * writes"), which would repair the loss this canary must show.
   */
  loseServerWrites(): void {
    const { site } = this
    const duration = this.config.durationMs
    for (const slot of site.slots) {
      site.scheduler.setTimeout(() => site.backup(slot), Math.floor(duration * 0.3))
      site.scheduler.setTimeout(() => site.restore(slot, 60_000), Math.floor(duration * 0.6))
    }
  }

  /**
   * Rules 1 and 2 on every running peer now, for the users whose state
   * changed since the last check (`full`: every user).
   */
  safetyChecks(full = false): void {
    const at = this.elapsed()
    for (const slot of this.site.slots) {
      const replica = slot.replica
      if (replica === undefined) continue
      let changed = this.changed.get(replica)
      if (changed === undefined) {
        changed = new ChangedUsers(replica)
        this.changed.set(replica, changed)
      }
      const due = changed.take(replica)
      const users = full ? replica.allUserIds() : [...due]
      for (const v of checkServerWins(slot.id, replica, at, users)) this.violation(v)
      if (slot.index === 0) for (const v of checkServerFills(replica, at, users)) this.violation(v)
    }
  }

  /**
   * Why the site has not converged yet (undefined: it has): every peer
   * runs, holds the same state, and every device's last sync succeeded both
   * ways (its sync lifecycle recovered too, not only its data).
   */
  notConvergedReason(): string | undefined {
    // The cheap tests first: this runs after every event until it holds.
    for (const slot of this.site.slots)
      if (slot.replica === undefined) return `${slot.id} is not running`
    // The device whose sync has been unsettled longest is named: a device
    // stuck in one round for hours, not one whose half-hourly round merely
    // runs at the moment the reason is read.
    let behind: { reason: string; forMs: number } | undefined
    for (const slot of this.site.devices) {
      const status = slot.device?.sync.status()
      const clock = slot.clock
      if (status === undefined || clock === undefined) return `${slot.id} is not running`
      // A success from before the heal does not count (same incarnation, same clock).
      const healed = this.healedAt.get(slot)
      const since = healed?.generation === slot.generation ? healed.peerMs : -Infinity
      const { deviceToServer: up, serverToDevice: down } = status
      if (up.state === 'success' && down.state === 'success' && (up.at ?? -Infinity) >= since)
        continue
      const forMs = clock.now() - (up.at ?? since)
      if (behind !== undefined && behind.forMs >= forMs) continue
      const error = up.error === undefined ? '' : ` ${up.error.code}`
      const stuck = Number.isFinite(forMs) ? `, for ${Math.round(forMs / 1000)} s` : ''
      behind = {
        forMs,
        reason: `${slot.id}'s sync has not succeeded since healing (device->server ${up.state}${error}, server->device ${down.state}${stuck})`,
      }
    }
    if (behind !== undefined) return behind.reason
    return this.notConvergedDocs()
  }

  /** Why the running peers' documents differ (undefined: they agree). */
  notConvergedDocs(): string | undefined {
    const docs: Array<readonly [string, Y.Doc]> = []
    for (const slot of this.site.slots) {
      const replica = slot.replica
      if (replica !== undefined) docs.push([slot.id, replica.doc])
    }
    return notConverged(docs)
  }

  /** The ledger and the view comparisons, on the converged site. */
  finalChecks(): { checked: number; rolledBack: number } {
    const at = this.elapsed()
    const docs: Array<readonly [string, Y.Doc]> = []
    for (const slot of this.site.slots) {
      const replica = slot.replica
      if (replica !== undefined) docs.push([slot.id, replica.doc])
    }
    const serverDoc = docs[0]?.[1]
    if (serverDoc === undefined) return { checked: 0, rolledBack: 0 }
    const ledger = this.ledger.check(serverDoc, at)
    for (const v of ledger.violations) this.violation(v)
    // The generation the site converged on (the server's).
    const rebuilt = this.site.observer.rebuild(this.site.generationOf(this.site.server.id))
    const compared = compareViews(docs, rebuilt, this.ledger.rolledBackDevices(), at)
    for (const v of compared.violations) this.violation(v)
    this.oracleChecks(
      serverDoc,
      docs.map(([, doc]) => doc),
      at,
    )
    return { checked: ledger.checked, rolledBack: ledger.rolledBack }
  }

  /**
   * Every peer's view against the independent reference model of the rules
   * (sim/oracle/), fed the history of what ran.
   */
  oracleChecks(serverDoc: Y.Doc, docs: readonly Y.Doc[], at: number): void {
    const peers: PeerViews[] = []
    for (const slot of this.site.slots) {
      const replica = slot.replica
      if (replica === undefined) continue
      peers.push({
        peer: slot.id,
        view: (user) => replica.view(asUserId(user)),
        users: () => replica.allUserIds(),
      })
    }
    // Only roots the document has: getMap would add one.
    const part = (writer: string, user: string): Record<string, unknown> | undefined => {
      const root = usersRootName(asWriterId(writer))
      if (!serverDoc.share.has(root)) return undefined
      return asDeviceEntry(serverDoc.getMap(root).get(user))?.f
    }
    for (const v of checkAgainstOracle(this.history.history(docs), peers, part))
      this.violation({ ...v, atMs: at })
  }

  progress(phase: SimProgress['phase'], virtualMs: number): void {
    this.onProgress?.({
      phase,
      virtualMs,
      fraction: Math.min(1, virtualMs / Math.max(1, this.config.durationMs)),
    })
  }

  report(
    replay: string,
    traceHash: string,
    convergedAt: number | undefined,
    healedAt: number,
    reason: string | undefined,
    writes: { checked: number; rolledBack: number },
  ): SimReport {
    const { site } = this
    const network = site.network.stats
    const byKind: Record<string, KindCounts> = {}
    for (const [kind, counters] of [...network.byKind].sort(([a], [b]) => (a < b ? -1 : 1)))
      byKind[kind] = { messages: counters.sent, bytes: counters.bytesSent }
    const faults: Record<string, number> = { ...network.faults, ...faultCounts(site.stats) }
    let lostWrites = 0
    let tornWrites = 0
    for (const slot of site.slots) {
      lostWrites += slot.disk.stats.lostWrites
      tornWrites += slot.disk.stats.tornWrites
    }
    faults.unacknowledgedWritesLost = lostWrites
    faults.tornWrites = tornWrites
    const violationCount = Object.values(this.counts).reduce((a, b) => a + b, 0)
    return {
      seed: this.config.seed,
      config: this.config,
      ok: violationCount === 0 && convergedAt !== undefined,
      converged: convergedAt !== undefined,
      virtualMsToConverge: convergedAt === undefined ? null : Math.ceil(convergedAt - healedAt),
      ...(reason === undefined ? {} : { notConverged: reason }),
      messages: network.messages.sent,
      bytes: network.messages.bytesSent,
      byKind,
      faults,
      violations: this.violations,
      violationCounts: { ...this.counts },
      workload: this.stats,
      writesChecked: writes.checked,
      writesRolledBack: writes.rolledBack,
      events: site.scheduler.eventsRun,
      virtualMs: this.elapsed(),
      steps: this.steps.length,
      traceHash,
      replay,
    }
  }
}

/** The site's fault counters, under the names the report uses. */
function faultCounts(stats: SiteStats): Record<string, number> {
  return {
    serverCrashes: stats.serverCrashes,
    deviceCrashes: stats.deviceCrashes,
    crashesWithWritesInFlight: stats.crashesWithWritesInFlight,
    backupRestores: stats.restores,
    retentionWipes: stats.retentionWipes,
    partitionsServerCut: stats.partitionsServerCut,
    partitionsLanIslands: stats.partitionsLanIslands,
    partitionsIsolated: stats.partitionsIsolated,
    partitionsAsymmetric: stats.partitionsAsymmetric,
    clogSteps: stats.clogs,
    lanRedials: stats.lanRedials,
    skewMaxMs: stats.skewMaxMs,
    clockSteps: stats.clockSteps,
    compactions: stats.compactions,
    compactionsDone: stats.compactionsDone,
    switchCrashes: stats.switchCrashes,
    movesStaged: stats.movesStaged,
    movesCommitted: stats.movesCommitted,
    moveCrashes: stats.moveCrashes,
    preSwitchRestores: stats.preSwitchRestores,
    lanGenerationCloses: stats.lanGenerationCloses,
  }
}
