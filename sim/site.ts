/**
 * A simulated site: one production server peer and N production device
 * peers, each on its own simulated disk and skewed clock view, talking over
 * the simulated network through the tap. The site starts, crashes, restarts
 * and restores peers, keeps the LAN links dialled (as a device's LAN node
 * re-dials a peer it lost), and applies partitions and clogs.
 *
 * A crash is what the brief of the simulator says a crash is: the store
 * loses what was not yet durable (`SimStore.crash`), the peer's timers stop
 * (`PeerClock.halt`) and its connections drop (`SimNetwork.crash`). The dead
 * peer object is never called again; a restart builds a new one on the same
 * disk, as a new process would.
 */
import * as Y from 'yjs'
import type { Store, StoreOp } from '../core/store.js'
import { CloseCode } from '../core/protocol.js'
import type { CloseInfo, Connection } from '../core/transport.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { deviceGeneration } from '../peers/device-sync/generation-move.js'
import type { Replica, WipeOptions } from '../peers/replica.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { breakAdoption, breakDeviceView } from './canary.js'
import { NetworkObserver, classifyMessage } from './observer.js'
import type { SimConfig } from './options.js'
import { Prng } from './prng.js'
import { Scheduler, type PeerClock } from './scheduler.js'
import { SimNetwork, type LinkProfile } from './sim-network.js'
import { SimDisk, type DiskSnapshot, type SimStore } from './sim-store.js'

/** The address the server listens on. */
export const SERVER_URL = 'ws://sim-server'
/** The server's peer name on the network. */
export const SERVER_NAME = 'server'
const SITE_KEY = 'sim-site-key'
const ADMIN_TOKEN = 'sim-admin-token-not-secret'
/** How long a LAN node waits before re-dialling a peer it lost or could not reach. */
const LAN_REDIAL_MS_MIN = 1_000
const LAN_REDIAL_MS_MAX = 30_000
/** How often a LAN node retries a peer it cannot reach (across a cut). */
const LAN_UNREACHABLE_RETRY_MS = 60_000

/** What the site tells the runner about peer lifecycles. */
export interface SiteHooks {
  /** A device wiped its roster for retention (its unsent writes are gone by design). */
  retentionWipe?(device: string, at: number): void
  /** A device's disk was put back to a backup taken at `backupAt`. */
  restored?(device: string, backupAt: number, at: number): void
  /**
   * A full sync's staged wipe (begun at `wipedAt`) was committed (`ok`), or
   * failed or its device went down while committing: whichever full sync
   * ran it, the workload's or the device's own (a retry, the first one).
   */
  fullSyncWipe?(device: string, wipedAt: number, ok: boolean): void
  /** A peer (re)started: its replica is up (the oracle's recorder watches it). */
  started?(slot: PeerSlot): void
  /**
   * The server built a new generation's base (`snapshot`) from `old`, just
   * before the switch's store batch (which a crash may still lose).
   */
  generationBuilt?(old: Y.Doc, snapshot: Uint8Array): void
  /** A device staged its move to the server's generation; `old` is the document it leaves. */
  moveStaged?(device: string, old: Y.Doc): void
  /** A device's move ended: committed (`ok`) or not (abandoned, failed, or it went down). */
  moveEnded?(device: string, ok: boolean): void
}

/** Counters of what the site did to its peers. */
export interface SiteStats {
  serverCrashes: number
  deviceCrashes: number
  /** Crashes that landed while the peer had writes in flight. */
  crashesWithWritesInFlight: number
  restarts: number
  restores: number
  retentionWipes: number
  partitionsServerCut: number
  partitionsLanIslands: number
  partitionsIsolated: number
  partitionsAsymmetric: number
  clogs: number
  lanLinks: number
  lanRedials: number
  /** Largest absolute clock skew a peer ran with, ms. */
  skewMaxMs: number
  /** Device clocks stepped ahead (and set right later). */
  clockSteps: number
  /** compactHistory calls, and those that resolved (the switch durable and in memory). */
  compactions: number
  compactionsDone: number
  /** Server crashes armed at the switch's store batch, and shortly after a switch. */
  switchCrashes: number
  /** Device moves staged, committed, and crashes armed during one. */
  movesStaged: number
  movesCommitted: number
  moveCrashes: number
  /** Restores, after a switch, of a backup taken before it. */
  preSwitchRestores: number
  /** LAN links closed with 4412 (their two devices on different generations, or one moving). */
  lanGenerationCloses: number
}

/** One peer's place in the site: its disk survives its incarnations. */
export class PeerSlot {
  readonly disk = new SimDisk()
  /** Bumped at every start and crash: continuations of an older one are ignored. */
  generation = 0
  incarnation = 0
  clock: PeerClock | undefined
  store: SimStore | undefined
  server: ServerPeer | undefined
  device: DevicePeer | undefined
  /** Started and not crashed since. */
  alive = false
  /** Crashed and not yet restarted. */
  down = false
  /** The next store write crashes the peer (a crash "at any point" of a write). */
  crashOnWrite = false
  /** Downtime of the crash armed by crashOnWrite, ms. */
  pendingDownMs = 0
  restartTimer: unknown
  /** A full sync's wipe commit running (when its staged wipe began), or undefined. */
  committing: { readonly wipedAt: number } | undefined
  /** A backup of the disk waiting for its restore step. */
  backup: { snapshot: DiskSnapshot; at: number } | undefined
  /** Crash at the next switch's store batch (server). */
  crashAtSwitch = false
  /** Crash during the next move (device): at its next store write, or this many ms after it stages. */
  crashInMove: 'write' | number | undefined
  readonly rng: Prng

  constructor(
    readonly id: string,
    /** 0 for the server, 1..N for devices. */
    readonly index: number,
    readonly mode: 'live' | 'periodic',
    readonly retentionMs: number | undefined,
    master: Prng,
  ) {
    this.rng = master.fork(`peer:${id}`)
  }

  /** The running peer's replica, when it is alive. */
  get replica(): Replica | undefined {
    if (!this.alive) return undefined
    return this.server?.replica ?? this.device?.replica
  }
}

/** A simulated site; see the module comment. */
export class SimSite {
  readonly scheduler = new Scheduler()
  readonly network: SimNetwork
  readonly observer: NetworkObserver
  readonly server: PeerSlot
  readonly devices: PeerSlot[] = []
  readonly stats: SiteStats = {
    serverCrashes: 0,
    deviceCrashes: 0,
    crashesWithWritesInFlight: 0,
    restarts: 0,
    restores: 0,
    retentionWipes: 0,
    partitionsServerCut: 0,
    partitionsLanIslands: 0,
    partitionsIsolated: 0,
    partitionsAsymmetric: 0,
    clogs: 0,
    lanLinks: 0,
    lanRedials: 0,
    skewMaxMs: 0,
    clockSteps: 0,
    compactions: 0,
    compactionsDone: 0,
    switchCrashes: 0,
    movesStaged: 0,
    movesCommitted: 0,
    moveCrashes: 0,
    preSwitchRestores: 0,
    lanGenerationCloses: 0,
  }
  /** Virtual time of the latest switch that became durable (or may have), or undefined. */
  lastSwitchAt: number | undefined
  /** Set once the network is healed: devices that start later sync at once. */
  healed = false
  /** LAN links wanted, as pairs of device indices (1-based). */
  readonly lanEdges: Array<readonly [number, number]> = []
  /** Clock steps not yet set right (stepClock): the heal sets them right. */
  readonly #clockSteps = new Set<{ readonly setRight: () => void; readonly timer: unknown }>()
  readonly #lanOpen = new Map<string, Connection>()
  readonly #lanPending = new Set<string>()
  readonly #lanRng: Prng
  /** The server's generation id as last seen running. */
  #serverGeneration = ''

  constructor(
    readonly config: SimConfig,
    readonly hooks: SiteHooks = {},
  ) {
    const master = new Prng(config.seed)
    this.#lanRng = master.fork('lan-redial')
    this.network = new SimNetwork({
      scheduler: this.scheduler,
      rng: master.fork('network'),
      profile: this.wanProfile(),
      partitionCloseMs: config.partitionCloseMs,
      classify: classifyMessage,
    })
    this.observer = new NetworkObserver(
      () => this.scheduler.now(),
      (sender) => this.generationOf(sender),
    )
    this.server = new PeerSlot(SERVER_NAME, 0, 'live', undefined, master)
    const modes = master.fork('modes')
    for (let d = 1; d <= config.devices; d++) {
      const periodic = modes.chance(config.periodic)
      const retention = d <= config.retiring ? config.shortRetentionMs : undefined
      this.devices.push(
        new PeerSlot(deviceName(d), d, periodic ? 'periodic' : 'live', retention, master),
      )
    }
    this.#planLan(master.fork('lan'))
  }

  /** Every slot, the server first. */
  get slots(): PeerSlot[] {
    return [this.server, ...this.devices]
  }

  /** The slot of peer `index` (0: server), modulo the site's size. */
  slot(index: number): PeerSlot {
    const all = this.slots
    return all[index % all.length] as PeerSlot
  }

  /** The profile of device-server links while faults are on. */
  wanProfile(): Partial<LinkProfile> {
    const c = this.config
    return {
      lossRate: c.loss,
      duplicateRate: c.dup,
      delayMs: c.delayMs,
      jitterMs: c.jitterMs,
      clogRate: c.clog,
      clogMs: c.clogMs,
    }
  }

  // ------------------------------------------------------------ lifecycles

  /**
   * Starts every peer at once (devices that find the server not listening
   * yet retry, as they would in the field); resolves once all are up. Each
   * start is independent: a peer that crashes while starting holds up no other.
   */
  async startAll(): Promise<void> {
    await Promise.all(this.slots.map((slot) => this.start(slot)))
  }

  /** Starts (or restarts) a peer on its disk; resolves once it is up, or never if it crashes first. */
  async start(slot: PeerSlot): Promise<void> {
    this.scheduler.clearTimeout(slot.restartTimer)
    slot.restartTimer = undefined
    const generation = ++slot.generation
    const incarnation = ++slot.incarnation
    const skewRng = slot.rng.fork(`skew#${incarnation}`)
    const skew = this.config.skewMs === 0 ? 0 : skewRng.int(-this.config.skewMs, this.config.skewMs)
    this.stats.skewMaxMs = Math.max(this.stats.skewMaxMs, Math.abs(skew))
    const clock = this.scheduler.clock(skew)
    const flushRng = slot.rng.fork(`flush#${incarnation}`)
    const store = slot.disk.open({
      clock,
      flushDelayMs: () => flushRng.int(1, 4),
      now: () => this.scheduler.now(),
    })
    const random = slot.rng.fork(`random#${incarnation}`)
    slot.clock = clock
    slot.store = store
    slot.down = false
    if (incarnation > 1) this.stats.restarts++
    const common = {
      store: this.#crashable(slot, store),
      clock,
      randomUint32: () => random.nextUint32(),
      siteKey: SITE_KEY,
    }
    if (slot.index === 0) {
      // No batch window: it runs on wall time, and a simulation must replay
      // the same from its seed.
      const server = await createServer({
        ...common,
        listen: false,
        adminToken: ADMIN_TOKEN,
        batchWindowMs: 0,
      })
      if (slot.generation !== generation) return
      if (this.config.canary === 'no-adoption') breakAdoption(server)
      this.#watchServer(slot, server)
      slot.server = server
      slot.alive = true
      this.hooks.started?.(slot)
      this.observer.serverClients.add(server.replica.clientId)
      this.network.listen(SERVER_NAME, SERVER_URL, (connection, url) => {
        if (slot.generation !== generation) {
          connection.close(1001, 'server gone')
          return
        }
        const tapped = this.observer.tap(connection, SERVER_NAME, {
          beforeSend: () => this.observer.serverClients.add(server.replica.clientId),
        })
        server.accept(tapped, url)
      })
      return
    }
    const startedAt = clock.now()
    const device = await createDevice({
      ...common,
      id: slot.id,
      server: SERVER_URL,
      serverTransport: this.observer.tapTransport(this.network.transport(slot.id), slot.id),
      mode: slot.mode,
      deltaIntervalMs: this.config.deltaIntervalMs,
      ...(slot.retentionMs === undefined ? {} : { retentionMs: slot.retentionMs }),
    })
    if (slot.generation !== generation) return
    if (this.config.canary === 'device-view') breakDeviceView(device)
    slot.device = device
    slot.alive = true
    this.hooks.started?.(slot)
    this.#watchWipes(slot, device, startedAt)
    this.#lanFor(slot.index)
    if (this.healed) device.sync.delta().catch(() => undefined)
  }

  /**
   * The peer dies now: un-acknowledged writes may be lost, timers stop,
   * connections drop. It restarts `downMs` later unless told otherwise.
   */
  crash(slot: PeerSlot, downMs: number | undefined, counted = true): void {
    if (slot.down || slot.store === undefined) return
    slot.generation++
    slot.crashOnWrite = false
    const committing = slot.committing
    slot.committing = undefined
    // Down while committing: the commit may or may not be durable.
    if (committing !== undefined) this.hooks.fullSyncWipe?.(slot.id, committing.wipedAt, false)
    if (slot.store.inFlight > 0) this.stats.crashesWithWritesInFlight++
    slot.store.crash({ rng: slot.rng.fork(`crash#${slot.incarnation}`) })
    slot.clock?.halt()
    this.network.crash(slot.id)
    slot.alive = false
    slot.down = true
    slot.server = undefined
    slot.device = undefined
    // A restore's crash is counted as the restore.
    if (counted && slot.index === 0) this.stats.serverCrashes++
    else if (counted) this.stats.deviceCrashes++
    if (downMs !== undefined) {
      slot.restartTimer = this.scheduler.setTimeout(() => void this.start(slot), downMs)
    }
  }

  /** Takes a backup of a device's data directory (what is durable now). */
  backup(slot: PeerSlot): void {
    slot.backup = { snapshot: slot.disk.snapshot(), at: this.scheduler.now() }
  }

  /**
   * The device's data directory is put back to its backup: it crashes (if
   * it runs; not counted as a crash), the disk is restored, and it starts
   * again `downMs` later. False when no backup is left for it.
   */
  restore(slot: PeerSlot, downMs: number): boolean {
    const backup = slot.backup
    // Its backup spent by an earlier restore (one backup per device and time).
    if (backup === undefined || slot.store === undefined) return false
    this.crash(slot, undefined, false)
    slot.backup = undefined
    this.scheduler.clearTimeout(slot.restartTimer)
    // The device's identity (its signing key, its clientID nonces, the
    // server key it pinned; `i/` in its store) survives the restore: a
    // terminal keeps its key apart from its roster data (PROTOCOL.md,
    // "Signed writes"). A restore that lost it would make a new device,
    // which the server refuses under the old id until the administrator
    // resets it.
    slot.disk.restore(backup.snapshot, 'i/')
    this.stats.restores++
    if (this.lastSwitchAt !== undefined && backup.at < this.lastSwitchAt)
      this.stats.preSwitchRestores++
    this.hooks.restored?.(slot.id, backup.at, this.scheduler.now())
    slot.restartTimer = this.scheduler.setTimeout(() => void this.start(slot), downMs)
    return true
  }

  /** A store that crashes its peer at its next write when armed (see PeerSlot.crashOnWrite). */
  #crashable(slot: PeerSlot, store: SimStore): Store {
    const armed = (): void => {
      if (!slot.crashOnWrite) return
      slot.crashOnWrite = false
      const generation = slot.generation
      // At 0 ms: after this write is called, before its flush (>= 1 ms).
      this.scheduler.setTimeout(() => {
        if (slot.generation === generation) this.crash(slot, slot.pendingDownMs)
      }, 0)
    }
    return {
      get: (key) => store.get(key),
      range: (options) => store.range(options),
      close: () => store.close(),
      put: (key, value) => {
        armed()
        return store.put(key, value)
      },
      del: (key) => {
        armed()
        return store.del(key)
      },
      batch: (ops: readonly StoreOp[]) => {
        if (ops.length > 0) armed()
        return store.batch(ops)
      },
    }
  }

  /** Records retention wipes: the ones at start, and later ones through the replica. */
  #watchWipes(slot: PeerSlot, device: DevicePeer, startedAt: number): void {
    const note = (): void => {
      this.stats.retentionWipes++
      this.hooks.retentionWipe?.(slot.id, this.scheduler.now())
    }
    const atStart = device.replica.events.query({ type: 'roster-wiped', since: startedAt })
    if (atStart.length > 0) note()
    const replica = device.replica
    const wipe = replica.wipe.bind(replica)
    const generation = slot.generation
    /** When the latest full sync's staged wipe began. */
    let wipedAt: number | undefined
    /**
     * A generation move is staged, since when: not a full sync (it keeps the
     * delete marks) unless it completes one the caller asked for.
     */
    let moving = false
    let movedAt = 0
    replica.wipe = (options: WipeOptions) => {
      // Only the retention wipe clears local state; a full sync's does not.
      if (options.local) note()
      if (options.generation === true) {
        wipedAt = undefined
        const old = replica.doc
        const promise = wipe(options)
        promise.then(
          () => {
            if (slot.generation !== generation) return
            moving = true
            movedAt = this.scheduler.now()
            this.stats.movesStaged++
            this.hooks.moveStaged?.(slot.id, old)
            this.#crashInMove(slot)
          },
          () => undefined,
        )
        return promise
      }
      if (options.staged === true) wipedAt = this.scheduler.now()
      return wipe(options)
    }
    const abandon = replica.abandonWipe.bind(replica)
    replica.abandonWipe = () => {
      if (moving) {
        moving = false
        this.hooks.moveEnded?.(slot.id, false)
      }
      return abandon()
    }
    // The commit of a full sync's wipe is what clears its local deletes
    // (rule 3): the oracle needs every one, the device's own retries too.
    const commit = replica.commitWipe.bind(replica)
    replica.commitWipe = (records, carry, options) => {
      const move = moving
      moving = false
      // A move clears the delete marks only when it completes a full sync.
      const began = move ? (options?.deletes === true ? movedAt : undefined) : wipedAt
      const committing = began === undefined ? undefined : { wipedAt: began }
      slot.committing = committing
      const ended = (ok: boolean): void => {
        if (move && slot.generation === generation) {
          if (ok) this.stats.movesCommitted++
          this.hooks.moveEnded?.(slot.id, ok)
        }
        if (slot.generation !== generation || slot.committing !== committing) return
        slot.committing = undefined
        if (committing !== undefined) this.hooks.fullSyncWipe?.(slot.id, committing.wipedAt, ok)
      }
      const promise = commit(records, carry, options)
      promise.then(
        () => ended(true),
        () => ended(false),
      )
      return promise
    }
  }

  /**
   * Sees each switch of the server's document (crashing the server at one when
   * armed) and every clientID the server takes after it started.
   */
  #watchServer(slot: PeerSlot, server: ServerPeer): void {
    const replica = server.replica
    const switchGeneration = replica.switchGeneration.bind(replica)
    replica.switchGeneration = (build, switched) =>
      switchGeneration(
        (doc) => {
          const next = build(doc)
          for (const client of Y.decodeStateVector(
            Y.encodeStateVectorFromUpdate(next.snapshot),
          ).keys())
            this.observer.serverClients.add(client)
          this.hooks.generationBuilt?.(doc, next.snapshot)
          if (slot.crashAtSwitch) {
            // The next store write is the switch's batch.
            slot.crashAtSwitch = false
            slot.crashOnWrite = true
            slot.pendingDownMs = slot.rng
              .fork(`switch-down#${this.stats.compactions}`)
              .int(100, 60_000)
            this.stats.switchCrashes++
          }
          return next
        },
        (result) => {
          // The new document's clientID (set when memory took it): the server
          // may write under it and crash before it sends anything.
          this.observer.serverClients.add(replica.clientId)
          switched(result)
        },
      )
    // A clientID minted on a peer's claim (peers/sync-session/reused-client-id.ts):
    // set synchronously, before the store write the promise waits for.
    const renewClientId = replica.renewClientId.bind(replica)
    replica.renewClientId = () => {
      const renewed = renewClientId()
      this.observer.serverClients.add(replica.clientId)
      return renewed
    }
  }

  /** Crashes a device during the move it just staged, when armed. */
  #crashInMove(slot: PeerSlot): void {
    const how = slot.crashInMove
    if (how === undefined) return
    slot.crashInMove = undefined
    this.stats.moveCrashes++
    const downMs = slot.rng.fork(`move-down#${this.stats.moveCrashes}`).int(100, 30 * 60_000)
    if (how === 'write') {
      slot.crashOnWrite = true
      slot.pendingDownMs = downMs
      return
    }
    const generation = slot.generation
    this.scheduler.setTimeout(() => {
      if (slot.generation === generation) this.crash(slot, downMs)
    }, how)
  }

  /**
   * The server starts a new generation now (`server.compactHistory`).
   * `value` picks the faults around it: the server crashes at the switch's
   * store batch (`value % 4` 1) or a moment after it (2, while devices
   * move); one device (picked from `value`) crashes during its move, at its
   * next store write or a moment after it stages (`(value >>> 2) % 3` 0).
   */
  compact(value: number): void {
    const slot = this.server
    const server = slot.server
    if (!slot.alive || server === undefined) return
    this.stats.compactions++
    const rng = new Prng(value).fork('compact')
    const serverFault = value % 4
    if (serverFault === 1) slot.crashAtSwitch = true
    if ((value >>> 2) % 3 === 0 && this.devices.length > 0) {
      const device = this.devices[(value >>> 8) % this.devices.length] as PeerSlot
      device.crashInMove = rng.chance(0.5) ? 'write' : rng.int(0, 5_000)
    }
    const generation = slot.generation
    server.compactHistory().then(
      () => {
        this.stats.compactionsDone++
        this.lastSwitchAt = this.scheduler.now()
        if (serverFault !== 2 || slot.generation !== generation) return
        this.stats.switchCrashes++
        this.scheduler.setTimeout(
          () => {
            if (slot.generation === generation) this.crash(slot, rng.int(100, 10 * 60_000))
          },
          rng.int(0, 5_000),
        )
      },
      () => {
        slot.crashAtSwitch = false
      },
    )
  }

  /** The generation a peer is on now (a moving device: its server's), for the network tap. */
  generationOf(name: string): string {
    const slot = this.slots.find((s) => s.id === name)
    const serverGeneration = this.server.server?.generation.id ?? this.#serverGeneration
    this.#serverGeneration = serverGeneration
    if (slot === undefined) return ''
    if (slot.index === 0) return serverGeneration
    const device = slot.device
    if (device === undefined) return ''
    if (device.replica.movingGeneration) return serverGeneration
    return deviceGeneration(device.replica).id
  }

  // ------------------------------------------------------------ faults

  /**
   * Applies a partition for `lasts` ms. Its kind is `value % 4`: the server
   * cut off from every device (LAN links still work), LAN islands (devices
   * split in three groups, the server in one), one peer isolated (peer
   * `index`), or one direction of one link cut (device `index`, towards the
   * server or another device). The rest is drawn from `value`.
   */
  partition(value: number, lasts: number, index: number): void {
    const rng = new Prng(value)
    const kind = value % 4
    let lift: () => void
    const deviceIds = this.devices.map((slot) => slot.id)
    if (kind === 0) {
      lift = this.network.isolate(SERVER_NAME)
      this.stats.partitionsServerCut++
    } else if (kind === 1) {
      const groups: string[][] = [[SERVER_NAME], [], []]
      for (const id of deviceIds) (groups[rng.int(0, 2)] as string[]).push(id)
      lift = this.network.partition(groups)
      this.stats.partitionsLanIslands++
    } else if (kind === 2) {
      lift = this.network.isolate(this.slot(index).id)
      this.stats.partitionsIsolated++
    } else {
      const device =
        index % (deviceIds.length + 1) === 0 ? rng.pick(deviceIds) : this.slot(index).id
      const others = deviceIds.filter((id) => id !== device)
      const other = others.length === 0 || rng.chance(0.7) ? SERVER_NAME : rng.pick(others)
      lift = rng.chance(0.5) ? this.network.cut(device, other) : this.network.cut(other, device)
      this.stats.partitionsAsymmetric++
    }
    this.scheduler.setTimeout(() => {
      lift()
      this.#lanAll()
    }, lasts)
  }

  /** Clogs the link between peer `index` and another drawn from `value`, for `lasts` ms. */
  clog(index: number, value: number, lasts: number): void {
    const names = this.slots.map((slot) => slot.id)
    const from = this.slot(index).id
    const others = names.filter((name) => name !== from)
    if (others.length === 0) return
    const to = others[value % others.length] as string
    this.network.clog(from, to, lasts)
    if (value % 2 === 1) this.network.clog(to, from, lasts)
    this.stats.clogs++
  }

  /**
   * Steps device `slot`'s clock `aheadMs` ahead, and back `lasts` later
   * (unless it restarted meanwhile: its next incarnation's clock is right).
   */
  stepClock(slot: PeerSlot, aheadMs: number, lasts: number): void {
    const clock = slot.clock
    if (slot.down || clock === undefined) return
    clock.skewMs += aheadMs
    this.stats.clockSteps++
    const step = {
      setRight: () => {
        this.#clockSteps.delete(step)
        clock.skewMs -= aheadMs
      },
      timer: this.scheduler.setTimeout(() => step.setRight(), lasts),
    }
    this.#clockSteps.add(step)
  }

  /**
   * Heals everything: no cuts, no loss, duplication, jitter or clogging from
   * now on, crashed peers restarted, LAN links re-dialled, and every device
   * asked for a delta sync (which also wakes a device its retention put to
   * sleep).
   */
  heal(): void {
    this.healed = true
    for (const slot of this.slots) slot.crashOnWrite = false
    this.network.heal()
    const clean: Partial<LinkProfile> = {
      lossRate: 0,
      duplicateRate: 0,
      jitterMs: 0,
      clogRate: 0,
    }
    this.network.setDefaultProfile(clean)
    // A clock step still on is set right now, not after the heal: the
    // convergence check reads each device's syncs from its clock at the
    // heal, which a step set right later took back (seed 1926: a device
    // whose clock went back 22 minutes after the heal looked stuck).
    for (const step of [...this.#clockSteps]) {
      this.scheduler.clearTimeout(step.timer)
      step.setRight()
    }
    for (const [a, b] of this.lanEdges) {
      const x = this.slot(a).id
      const y = this.slot(b).id
      this.network.setProfile(x, y, clean)
      this.network.setProfile(y, x, clean)
    }
    for (const slot of this.slots) {
      if (slot.down) void this.start(slot)
    }
    this.#lanAll()
    for (const slot of this.devices) slot.device?.sync.delta().catch(() => undefined)
  }

  // ------------------------------------------------------------ LAN

  /** Islands of devices, each linked by a random tree plus one extra link (a cycle). */
  #planLan(rng: Prng): void {
    const islands = Math.min(this.config.lanIslands, Math.floor(this.devices.length / 2))
    if (islands === 0) return
    const members: number[][] = Array.from({ length: islands }, () => [])
    for (let d = 1; d <= this.devices.length; d++) {
      if (rng.chance(0.7)) (members[rng.int(0, islands - 1)] as number[]).push(d)
    }
    for (const island of members) {
      for (let i = 1; i < island.length; i++) {
        this.lanEdges.push([island[rng.int(0, i - 1)] as number, island[i] as number])
      }
      if (island.length >= 3) {
        const [a, b] = rng.shuffle(island.slice()).slice(0, 2) as [number, number]
        if (!this.lanEdges.some(([x, y]) => (x === a && y === b) || (x === b && y === a)))
          this.lanEdges.push([a, b])
      }
    }
    const c = this.config
    const lan: Partial<LinkProfile> = {
      delayMs: Math.max(1, Math.round(c.delayMs / 10)),
      jitterMs: Math.round(c.jitterMs / 10),
    }
    for (const [a, b] of this.lanEdges) {
      this.network.setProfile(deviceName(a), deviceName(b), lan)
      this.network.setProfile(deviceName(b), deviceName(a), lan)
    }
  }

  #lanAll(): void {
    for (const edge of this.lanEdges) this.#dial(edge)
  }

  #lanFor(index: number): void {
    for (const edge of this.lanEdges) if (edge[0] === index || edge[1] === index) this.#dial(edge)
  }

  /** Links the two devices of `edge` when both run and no link is open. */
  #dial(edge: readonly [number, number]): void {
    const key = `${edge[0]}-${edge[1]}`
    const a = this.slot(edge[0])
    const b = this.slot(edge[1])
    const da = a.device
    const db = b.device
    if (!a.alive || !b.alive || da === undefined || db === undefined) return
    if (this.#lanOpen.get(key)?.open === true) return
    if (this.network.isCut(a.id, b.id) || this.network.isCut(b.id, a.id)) {
      this.#redial(edge, LAN_UNREACHABLE_RETRY_MS)
      return
    }
    const [ca, cb] = this.network.pair(a.id, b.id)
    const closed = (info: CloseInfo): void => {
      if (this.#lanOpen.get(key) !== ca) return
      if (info.code === CloseCode.generationChanged) this.stats.lanGenerationCloses++
      this.#lanOpen.delete(key)
      this.#redial(edge, this.#lanRng.int(LAN_REDIAL_MS_MIN, LAN_REDIAL_MS_MAX))
    }
    this.#lanOpen.set(key, ca)
    this.stats.lanLinks++
    da.attachLan(this.observer.tap(ca, a.id, { onClosed: closed }), b.id)
    db.attachLan(this.observer.tap(cb, b.id, { onClosed: closed }), a.id)
  }

  #redial(edge: readonly [number, number], afterMs: number): void {
    const key = `${edge[0]}-${edge[1]}`
    if (this.#lanPending.has(key)) return
    this.#lanPending.add(key)
    this.scheduler.setTimeout(() => {
      this.#lanPending.delete(key)
      this.stats.lanRedials++
      this.#dial(edge)
    }, afterMs)
  }
}

/** The network name of device `index` (1-based). */
export const deviceName = (index: number): string => `d${String(index).padStart(2, '0')}`
