/**
 * The simulated network: a {@link Transport} per peer, connections whose two
 * directions each have their own queue (events on the virtual scheduler) and
 * their own PRNG stream, and faults per directed link: loss, duplication,
 * delay with jitter (which reorders), clogging, partitions (symmetric,
 * asymmetric, isolating one peer) and peer crashes.
 *
 * The Connection contract promises ordered, reliable delivery; the faults
 * break that on purpose, to show the sync protocol survives it. With the
 * default profile (no loss, no duplication, a fixed delay) a link keeps the
 * contract, and `test/sim-network.test.ts` runs the contract suite on it.
 *
 * Modelling choices, so that a report can be read:
 * - Peers are named. A connection runs between the dialling peer and the
 *   peer that owns the listener; partitions and profiles are between names.
 * - A message is subject to a cut when it is sent and again when it arrives
 *   (a cut drops what is on the wire too).
 * - A close always reaches the other side, after the messages sent before
 *   it, even across a cut: a TCP reset or timeout is noticed eventually.
 *   With `partitionCloseMs`, a connection still cut that long after a cut
 *   began is closed on both sides with 1006 (a ping timeout).
 * - A connect across a cut fails after `connectTimeoutMs` of virtual time
 *   (the dialler's SYN is never answered); a connect to an address nobody
 *   listens on fails after one round trip (refused). Both reject with
 *   `SYNC_FAILED`, as the WebSocket transport does. Otherwise both ends open
 *   one one-way delay after the call.
 */
import { RostersyncError, withoutStack } from '../core/errors.js'
import type { CloseInfo, Connection, Transport } from '../core/transport.js'
import type { Prng } from './prng.js'
import type { Scheduler } from './scheduler.js'

/** Faults of one direction of a link. Rates are probabilities per message, in [0, 1]. */
export interface LinkProfile {
  /** Chance that a message is lost. */
  readonly lossRate: number
  /** Chance that a message is delivered twice (each copy with its own delay). */
  readonly duplicateRate: number
  /** Fixed one-way delay, in virtual ms. */
  readonly delayMs: number
  /** Extra delay drawn uniformly from [0, jitterMs] per message; reorders messages. */
  readonly jitterMs: number
  /** Chance, per message, that the direction clogs: holds everything for `clogMs`. */
  readonly clogRate: number
  /** How long a clog holds messages, in virtual ms; they all come out when it ends. */
  readonly clogMs: number
}

/** No faults: a 1 ms fixed delay, ordered and reliable. */
export const perfectLink: LinkProfile = {
  lossRate: 0,
  duplicateRate: 0,
  delayMs: 1,
  jitterMs: 0,
  clogRate: 0,
  clogMs: 0,
}

/** Options of the {@link SimNetwork} constructor. */
export interface SimNetworkOptions {
  readonly scheduler: Scheduler
  /** Every link direction draws from a fork of it, labelled by its ends and its ordinal. */
  readonly rng: Prng
  /** Profile of every link not given its own (default {@link perfectLink}). */
  readonly profile?: Partial<LinkProfile>
  /** How long a connect across a cut hangs before it fails, in virtual ms (default 10 000). */
  readonly connectTimeoutMs?: number
  /** Close connections still cut this long after a cut began, in virtual ms (default: never). */
  readonly partitionCloseMs?: number
  /** Names a message's kind for {@link NetworkStats.byKind} (e.g. the protocol message type). */
  readonly classify?: (message: Uint8Array) => string
  /** Called on every network event, in order; for traces and debugging. */
  readonly onTrace?: (event: TraceEvent) => void
}

/** Message counters. */
export interface MessageCounters {
  sent: number
  bytesSent: number
  delivered: number
  bytesDelivered: number
  dropped: number
  bytesDropped: number
  duplicated: number
}

/** Faults injected, by kind. */
export interface FaultCounters {
  /** Messages lost to the loss rate. */
  lost: number
  /** Messages dropped because their link was cut (at send or on arrival). */
  partitioned: number
  /** Messages that arrived after their receiving end had closed. */
  closedDrops: number
  /** Extra copies delivered. */
  duplicated: number
  /** Messages delivered before one sent earlier on the same direction. */
  reordered: number
  /** Messages held back by a clog. */
  clogged: number
  /** Clogs that began. */
  clogs: number
  /** Partitions and cuts that began. */
  partitions: number
  /** Connects that failed (cut or refused). */
  connectFailures: number
  /** Connections closed by a crash or a partition timeout. */
  aborted: number
}

/** Everything the network counted. */
export interface NetworkStats {
  readonly messages: MessageCounters
  readonly faults: FaultCounters
  /** Per message kind, when a `classify` function was given. */
  readonly byKind: Map<string, MessageCounters>
  /** Connections opened. */
  connections: number
}

/** One network event, for traces. `conn` is the connection's ordinal in this network. */
export interface TraceEvent {
  readonly type:
    'send' | 'deliver' | 'drop' | 'duplicate' | 'close' | 'connect' | 'connect-failed' | 'abort'
  readonly time: number
  readonly from: string
  readonly to: string
  readonly conn: number
  /** Message sequence number on its direction (0 for non-message events). */
  readonly seq: number
  readonly bytes: number
  readonly detail?: string
}

/** Every trace event type, in a fixed order (their index goes into the trace hash). */
const TRACE_TYPES: readonly TraceEvent['type'][] = [
  'send',
  'deliver',
  'drop',
  'duplicate',
  'close',
  'connect',
  'connect-failed',
  'abort',
]

/** Decides whether messages from `from` to `to` are blocked. */
export type CutPredicate = (from: string, to: string) => boolean

/** Handles a connection a listener accepted; `address` is what the dialler asked for (with path and query). */
export type AcceptHandler = (connection: Connection, address: string) => void

function newCounters(): MessageCounters {
  return {
    sent: 0,
    bytesSent: 0,
    delivered: 0,
    bytesDelivered: 0,
    dropped: 0,
    bytesDropped: 0,
    duplicated: 0,
  }
}

/**
 * A refused dial. Without a stack trace: a run makes thousands of them (a
 * device retrying through a partition), and capturing the stack was a few
 * per cent of the run; it would only ever show this function.
 */
const connectFailed = (address: string, why: string): RostersyncError =>
  withoutStack(() => new RostersyncError('SYNC_FAILED', `cannot connect to ${address}: ${why}`))

/** One direction of one connection. */
class Direction {
  /** Latest arrival scheduled on this direction, so a close can come after it. */
  lastArrival = -Infinity
  clogUntil = -Infinity
  sent = 0
  highestDelivered = -1
  profile: LinkProfile
  profileVersion: number

  constructor(
    readonly from: string,
    readonly to: string,
    readonly rng: Prng,
    network: SimNetwork,
  ) {
    this.profile = network.profileOf(from, to)
    this.profileVersion = network.profileVersion
  }
}

/** One end of a simulated connection. */
class SimConnection implements Connection {
  other!: SimConnection
  #handler: ((message: Uint8Array) => void) | undefined
  #closeHandler: ((info: CloseInfo) => void) | undefined
  #closed = false
  readonly #early: Uint8Array[] = []

  constructor(
    readonly id: string,
    readonly ordinal: number,
    /** This end's peer name. */
    readonly self: string,
    readonly remote: string,
    readonly out: Direction,
    readonly network: SimNetwork,
  ) {}

  get open(): boolean {
    return !this.#closed
  }

  send(message: Uint8Array): void {
    if (this.#closed) return
    this.network.send(this, message.slice())
  }

  onMessage(handler: (message: Uint8Array) => void): void {
    this.#handler = handler
    for (const message of this.#early.splice(0)) handler(message)
  }

  onClose(handler: (info: CloseInfo) => void): void {
    this.#closeHandler = handler
  }

  close(code = 1000, reason = ''): void {
    if (this.#closed) return
    this.#closed = true
    this.network.closing(this, { code, reason })
  }

  /** @internal A message arrived (after the network's checks). */
  receive(message: Uint8Array): void {
    if (this.#handler === undefined) this.#early.push(message)
    else this.#handler(message)
  }

  /** @internal Marks this end closed without telling anyone (its peer died, or `close` did it). */
  markClosed(): boolean {
    if (this.#closed) return false
    this.#closed = true
    return true
  }

  /** @internal Tells this end's owner that it closed. */
  notifyClosed(info: CloseInfo): void {
    this.#closeHandler?.(info)
  }
}

/** Accepts connections to an address on behalf of a peer. */
interface Listener {
  readonly owner: string
  readonly accept: AcceptHandler
}

/** The transport of one peer on a {@link SimNetwork}. */
export class SimTransport implements Transport {
  readonly #network: SimNetwork
  readonly #opened = new Set<Connection>()
  #closed = false

  /** Use {@link SimNetwork.transport}. */
  constructor(
    network: SimNetwork,
    /** The peer this transport dials from. */
    readonly peer: string,
  ) {
    this.#network = network
  }

  /** Opens a connection to `address` (the longest listening address that prefixes it). */
  connect(address: string): Promise<Connection> {
    if (this.#closed) return Promise.reject(connectFailed(address, 'transport closed'))
    return this.#network.dial(this.peer, address).then((conn) => {
      if (this.#closed) {
        conn.close(1001, 'transport closing')
        throw connectFailed(address, 'transport closed')
      }
      // Forget closed ones here rather than through onClose, which belongs
      // to the caller (one handler per connection).
      for (const old of this.#opened) if (!old.open) this.#opened.delete(old)
      this.#opened.add(conn)
      return conn
    })
  }

  /** Closes every connection it opened (1001) and refuses later connects. */
  async close(): Promise<void> {
    this.#closed = true
    for (const conn of [...this.#opened]) conn.close(1001, 'transport closing')
    this.#opened.clear()
  }

  /** @internal The peer crashed: refuse everything from now on. */
  kill(): void {
    this.#closed = true
    this.#opened.clear()
  }
}

/**
 * The simulated network. Peers get a {@link SimTransport} each
 * ({@link transport}); servers register with {@link listen}; LAN links can be
 * made directly with {@link pair}. See the module comment for the model.
 */
export class SimNetwork {
  /** Counters for the run report. */
  readonly stats: NetworkStats = {
    messages: newCounters(),
    faults: {
      lost: 0,
      partitioned: 0,
      closedDrops: 0,
      duplicated: 0,
      reordered: 0,
      clogged: 0,
      clogs: 0,
      partitions: 0,
      connectFailures: 0,
      aborted: 0,
    },
    byKind: new Map(),
    connections: 0,
  }
  /** @internal Bumped when a profile changes, so directions refresh their cached one. */
  profileVersion = 0
  readonly #scheduler: Scheduler
  readonly #rng: Prng
  readonly #options: SimNetworkOptions
  #defaultProfile: LinkProfile
  readonly #profiles = new Map<string, LinkProfile>()
  readonly #listeners = new Map<string, Listener>()
  /** Which peer each address ever listened for: the peer a dial is aimed at. */
  readonly #hosts = new Map<string, string>()
  readonly #cuts = new Set<CutPredicate>()
  readonly #open = new Set<SimConnection>()
  readonly #transports = new Map<string, SimTransport[]>()
  /** Connections opened so far per (dialler, owner), for stable PRNG labels. */
  readonly #pairOrdinals = new Map<string, number>()
  #ordinal = 0
  #hashA = 0x811c9dc5
  #hashB = 0x9747b28c

  constructor(options: SimNetworkOptions) {
    this.#scheduler = options.scheduler
    this.#rng = options.rng
    this.#options = options
    this.#defaultProfile = { ...perfectLink, ...options.profile }
  }

  /** The transport of peer `peer` (a new one each call, e.g. after a restart). */
  transport(peer: string): SimTransport {
    const transport = new SimTransport(this, peer)
    const list = this.#transports.get(peer) ?? []
    list.push(transport)
    this.#transports.set(peer, list)
    return transport
  }

  /**
   * Peer `owner` accepts connections to `address` (e.g. `ws://sim-server`)
   * until the returned function is called. A dial reaches the listener whose
   * address is the longest prefix of the dialled one, ending at a `/`, `?`
   * or the end: `ws://sim-server/roster?device=d1` reaches `ws://sim-server`.
   */
  listen(owner: string, address: string, accept: AcceptHandler): () => void {
    const listener = { owner, accept }
    this.#listeners.set(address, listener)
    this.#hosts.set(address, owner)
    return () => {
      if (this.#listeners.get(address) === listener) this.#listeners.delete(address)
    }
  }

  /**
   * A connection between `a` and `b` open at once (a LAN link the runner
   * makes itself), `a`'s end first. Faults and cuts apply as to any link.
   */
  pair(a: string, b: string): [Connection, Connection] {
    return this.#makePair(a, b)
  }

  /** The default profile for every link without its own. */
  setDefaultProfile(profile: Partial<LinkProfile>): void {
    this.#defaultProfile = { ...this.#defaultProfile, ...profile }
    this.profileVersion++
  }

  /** The profile of the direction `from` -> `to` (both directions: call twice). */
  setProfile(from: string, to: string, profile: Partial<LinkProfile>): void {
    this.#profiles.set(linkKey(from, to), { ...this.profileOf(from, to), ...profile })
    this.profileVersion++
  }

  /** The profile in force from `from` to `to`. */
  profileOf(from: string, to: string): LinkProfile {
    return this.#profiles.get(linkKey(from, to)) ?? this.#defaultProfile
  }

  /**
   * Cuts the network into `groups` (peers in no group form one more group
   * together): messages between groups are dropped both ways. Or, given a
   * predicate, blocks every message `(from, to)` it returns true for. Cuts
   * add up; returns a function that lifts this one.
   */
  partition(groups: readonly (readonly string[])[] | CutPredicate): () => void {
    let cut: CutPredicate
    if (typeof groups === 'function') {
      cut = groups
    } else {
      const groupOf = new Map<string, number>()
      groups.forEach((group, index) => group.forEach((peer) => groupOf.set(peer, index)))
      cut = (from, to) => (groupOf.get(from) ?? -1) !== (groupOf.get(to) ?? -1)
    }
    return this.#addCut(cut)
  }

  /** Blocks `from` -> `to` only (an asymmetric cut: `to` -> `from` still works). */
  cut(from: string, to: string): () => void {
    return this.#addCut((f, t) => f === from && t === to)
  }

  /** Cuts `peer` off from everyone, both ways. */
  isolate(peer: string): () => void {
    return this.#addCut((from, to) => from === peer || to === peer)
  }

  /** Lifts every cut. */
  heal(): void {
    this.#cuts.clear()
  }

  /** True when messages from `from` to `to` are blocked now. */
  isCut(from: string, to: string): boolean {
    for (const cut of this.#cuts) if (cut(from, to)) return true
    return false
  }

  /** Holds everything on `from` -> `to` (open connections) for `ms` virtual ms. */
  clog(from: string, to: string, ms: number): void {
    const until = this.#scheduler.now() + ms
    for (const conn of this.#open) {
      if (conn.self === from && conn.remote === to && conn.out.clogUntil < until) {
        conn.out.clogUntil = until
      }
    }
    this.stats.faults.clogs++
  }

  /**
   * Peer `peer` dies: its listeners and transports stop, its ends of every
   * connection close without a word to it, and the other ends hear 1006
   * after the messages already on the way.
   */
  crash(peer: string): void {
    for (const [address, listener] of this.#listeners) {
      if (listener.owner === peer) this.#listeners.delete(address)
    }
    for (const transport of this.#transports.get(peer) ?? []) transport.kill()
    this.#transports.delete(peer)
    for (const conn of [...this.#open]) {
      if (conn.self === peer && conn.markClosed()) {
        this.stats.faults.aborted++
        this.#open.delete(conn)
        this.#trace('abort', conn, 0, 0, 'crash')
        this.#sendClose(conn, { code: 1006, reason: 'connection lost' })
      }
    }
  }

  /** Open connections (both ends count once each). */
  get openConnections(): number {
    return this.#open.size
  }

  /**
   * A hash of every network event so far (times, ends, sizes and message
   * bytes): the same seed and options give the same hash.
   */
  traceHash(): string {
    return (
      (this.#hashA >>> 0).toString(16).padStart(8, '0') +
      (this.#hashB >>> 0).toString(16).padStart(8, '0')
    )
  }

  /** @internal Opens a connection from `peer` to whoever listens on `address`. */
  dial(peer: string, address: string): Promise<Connection> {
    return new Promise((resolve, reject) => {
      // The peer an address names outlives its listener (a host name still
      // resolves while its server is down), so cuts apply to a refused dial too.
      const owner = longestPrefix(this.#hosts, address) ?? address
      const delayMs = this.profileOf(peer, owner).delayMs
      this.#scheduler.setTimeout(() => {
        // Looked up on arrival: the listener may have come or gone meanwhile.
        const listener = longestPrefix(this.#listeners, address)
        const fail = (why: string, afterMs: number): void => {
          this.stats.faults.connectFailures++
          this.#traceRaw('connect-failed', peer, owner, -1, 0, 0, why)
          this.#scheduler.setTimeout(() => reject(connectFailed(address, why)), afterMs)
        }
        if (this.isCut(peer, owner) || this.isCut(owner, peer)) {
          fail('timed out', Math.max(0, this.#connectTimeoutMs() - delayMs))
        } else if (listener === undefined || listener.owner !== owner) {
          fail('connection refused', this.profileOf(owner, peer).delayMs)
        } else {
          const [mine, theirs] = this.#makePair(peer, owner)
          listener.accept(theirs, address)
          resolve(mine)
        }
      }, delayMs)
    })
  }

  /** @internal Puts `message` (already copied) on `conn`'s outgoing direction. */
  send(conn: SimConnection, message: Uint8Array): void {
    const out = conn.out
    const bytes = message.byteLength
    const seq = out.sent++
    const counters = this.#kindCounters(message)
    for (const c of counters) {
      c.sent++
      c.bytesSent += bytes
    }
    this.#trace('send', conn, seq, bytes, undefined, message)
    const profile = this.#profile(out)
    // A fixed number of draws per message whatever the rates and outcomes,
    // so that changing a rate does not shift every later decision of the
    // stream (it keeps swarm runs comparable and shrinking stable).
    const lost = out.rng.chance(profile.lossRate)
    const duplicate = out.rng.chance(profile.duplicateRate)
    const clog = out.rng.chance(profile.clogRate)
    const jitter = out.rng.next()
    const duplicateJitter = out.rng.next()
    if (this.isCut(out.from, out.to)) {
      this.#drop(conn, seq, message, counters, 'partitioned')
      return
    }
    if (lost) {
      this.#drop(conn, seq, message, counters, 'lost')
      return
    }
    const now = this.#scheduler.now()
    if (clog && profile.clogMs > 0 && out.clogUntil < now + profile.clogMs) {
      out.clogUntil = now + profile.clogMs
      this.stats.faults.clogs++
    }
    this.#schedule(conn, seq, message, counters, profile, jitter)
    if (duplicate) {
      this.stats.faults.duplicated++
      for (const c of counters) c.duplicated++
      this.#trace('duplicate', conn, seq, bytes)
      this.#schedule(conn, seq, message.slice(), counters, profile, duplicateJitter)
    }
  }

  /** @internal `conn` was closed by its owner. */
  closing(conn: SimConnection, info: CloseInfo): void {
    this.#open.delete(conn)
    this.#trace('close', conn, 0, 0, `${info.code} ${info.reason}`)
    // The closing side hears its own close too, as a WebSocket does.
    this.#scheduler.setTimeout(() => conn.notifyClosed(info), 0)
    this.#sendClose(conn, info)
  }

  #schedule(
    conn: SimConnection,
    seq: number,
    message: Uint8Array,
    counters: readonly MessageCounters[],
    profile: LinkProfile,
    /** A uniform draw in [0, 1). */
    jitter: number,
  ): void {
    const out = conn.out
    const now = this.#scheduler.now()
    let at = now + profile.delayMs + Math.floor(jitter * (Math.floor(profile.jitterMs) + 1))
    if (at < out.clogUntil) {
      at = out.clogUntil
      this.stats.faults.clogged++
    }
    if (at > out.lastArrival) out.lastArrival = at
    this.#scheduler.setTimeout(() => this.#arrive(conn, seq, message, counters), at - now)
  }

  #arrive(
    conn: SimConnection,
    seq: number,
    message: Uint8Array,
    counters: readonly MessageCounters[],
  ): void {
    const out = conn.out
    const target = conn.other
    if (!target.open) {
      this.#drop(conn, seq, message, counters, 'closedDrops')
      return
    }
    if (this.isCut(out.from, out.to)) {
      this.#drop(conn, seq, message, counters, 'partitioned')
      return
    }
    if (seq < out.highestDelivered) this.stats.faults.reordered++
    else out.highestDelivered = seq
    for (const c of counters) {
      c.delivered++
      c.bytesDelivered += message.byteLength
    }
    this.#trace('deliver', conn, seq, message.byteLength)
    target.receive(message)
  }

  #drop(
    conn: SimConnection,
    seq: number,
    message: Uint8Array,
    counters: readonly MessageCounters[],
    why: 'lost' | 'partitioned' | 'closedDrops',
  ): void {
    this.stats.faults[why]++
    for (const c of counters) {
      c.dropped++
      c.bytesDropped += message.byteLength
    }
    this.#trace('drop', conn, seq, message.byteLength, why)
  }

  /** Delivers `info` to the other end of `conn`, after what is already on the way. */
  #sendClose(conn: SimConnection, info: CloseInfo): void {
    const out = conn.out
    const now = this.#scheduler.now()
    const at = Math.max(now + this.#profile(out).delayMs, out.lastArrival)
    out.lastArrival = at
    this.#scheduler.setTimeout(() => {
      const target = conn.other
      if (!target.markClosed()) return
      this.#open.delete(target)
      // The peer's close frame; a peer gone (1006) sent none.
      target.notifyClosed(info.code === 1006 ? info : { ...info, byPeer: true })
    }, at - now)
  }

  #makePair(from: string, to: string): [SimConnection, SimConnection] {
    const key = linkKey(from, to)
    const nth = this.#pairOrdinals.get(key) ?? 0
    this.#pairOrdinals.set(key, nth + 1)
    const ordinal = this.#ordinal++
    const there = new Direction(from, to, this.#rng.fork(`${from}->${to}#${nth}`), this)
    const back = new Direction(to, from, this.#rng.fork(`${to}<-${from}#${nth}`), this)
    const mine = new SimConnection(`sim-${ordinal}a`, ordinal, from, to, there, this)
    const theirs = new SimConnection(`sim-${ordinal}b`, ordinal, to, from, back, this)
    mine.other = theirs
    theirs.other = mine
    this.#open.add(mine)
    this.#open.add(theirs)
    this.stats.connections++
    this.#trace('connect', mine, 0, 0)
    return [mine, theirs]
  }

  #addCut(cut: CutPredicate): () => void {
    this.#cuts.add(cut)
    this.stats.faults.partitions++
    const closeMs = this.#options.partitionCloseMs
    if (closeMs !== undefined) {
      this.#scheduler.setTimeout(() => this.#closeCutConnections(), closeMs)
    }
    return () => {
      this.#cuts.delete(cut)
    }
  }

  /** Closes (1006, both sides) every open connection cut in either direction. */
  #closeCutConnections(): void {
    for (const conn of [...this.#open]) {
      if (!this.isCut(conn.self, conn.remote) && !this.isCut(conn.remote, conn.self)) continue
      const other = conn.other
      for (const end of [conn, other]) {
        if (!end.markClosed()) continue
        this.#open.delete(end)
        this.stats.faults.aborted++
        this.#trace('abort', end, 0, 0, 'partition timeout')
        this.#scheduler.setTimeout(
          () => end.notifyClosed({ code: 1006, reason: 'connection timed out' }),
          0,
        )
      }
    }
  }

  #connectTimeoutMs(): number {
    return this.#options.connectTimeoutMs ?? 10_000
  }

  #profile(direction: Direction): LinkProfile {
    if (direction.profileVersion !== this.profileVersion) {
      direction.profile = this.profileOf(direction.from, direction.to)
      direction.profileVersion = this.profileVersion
    }
    return direction.profile
  }

  #kindCounters(message: Uint8Array): MessageCounters[] {
    const classify = this.#options.classify
    if (classify === undefined) return [this.stats.messages]
    const kind = classify(message)
    let counters = this.stats.byKind.get(kind)
    if (counters === undefined) {
      counters = newCounters()
      this.stats.byKind.set(kind, counters)
    }
    return [this.stats.messages, counters]
  }

  #trace(
    type: TraceEvent['type'],
    conn: SimConnection,
    seq: number,
    bytes: number,
    detail?: string,
    content?: Uint8Array,
  ): void {
    this.#traceRaw(type, conn.self, conn.remote, conn.ordinal, seq, bytes, detail, content)
  }

  #traceRaw(
    type: TraceEvent['type'],
    from: string,
    to: string,
    conn: number,
    seq: number,
    bytes: number,
    detail?: string,
    content?: Uint8Array,
  ): void {
    const time = this.#scheduler.now()
    // Numbers rather than one formatted string: this runs for every message
    // and was the network's largest cost. Peer names go in only where a
    // connection begins (or fails to); later events name it by its ordinal.
    this.#mixNumber(TRACE_TYPES.indexOf(type))
    this.#mixNumber(time)
    this.#mixNumber(time / 0x1_0000_0000)
    this.#mixNumber(conn)
    this.#mixNumber(seq)
    this.#mixNumber(bytes)
    if (type === 'connect' || type === 'connect-failed' || type === 'abort') {
      this.#mixText(from)
      this.#mixText(to)
    } else {
      this.#mixNumber(from < to ? 1 : 0)
    }
    if (detail !== undefined) this.#mixText(detail)
    if (content !== undefined) this.#mixBytes(content)
    const onTrace = this.#options.onTrace
    if (onTrace !== undefined) {
      onTrace(
        detail === undefined
          ? { type, time, from, to, conn, seq, bytes }
          : { type, time, from, to, conn, seq, bytes, detail },
      )
    }
  }

  #mixNumber(value: number): void {
    const c = value | 0
    this.#hashA = Math.imul(this.#hashA ^ c, 0x01000193)
    this.#hashB = Math.imul(this.#hashB ^ c, 0x5bd1e995) ^ (this.#hashB >>> 15)
  }

  #mixText(text: string): void {
    let a = this.#hashA
    let b = this.#hashB
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i)
      a = Math.imul(a ^ c, 0x01000193)
      b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 15)
    }
    this.#hashA = a
    this.#hashB = b
  }

  #mixBytes(bytes: Uint8Array): void {
    let a = this.#hashA
    let b = this.#hashB
    for (let i = 0; i < bytes.length; i++) {
      const c = bytes[i] as number
      a = Math.imul(a ^ c, 0x01000193)
      b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 15)
    }
    this.#hashA = a
    this.#hashB = b
  }
}

/**
 * The value under the longest key of `map` that prefixes `address` and ends
 * there or at a `/` or `?` (so `ws://s` does not match `ws://server`).
 */
function longestPrefix<T>(map: ReadonlyMap<string, T>, address: string): T | undefined {
  let best: T | undefined
  let bestLength = -1
  for (const [prefix, value] of map) {
    if (prefix.length <= bestLength || !address.startsWith(prefix)) continue
    const next = address.charAt(prefix.length)
    if (next === '' || next === '/' || next === '?') {
      best = value
      bestLength = prefix.length
    }
  }
  return best
}

function linkKey(from: string, to: string): string {
  return `${from}\u0000${to}`
}
