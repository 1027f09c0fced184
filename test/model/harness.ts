/**
 * Runs one random scenario against the real peers (server + devices on
 * in-memory stores) and against the reference model, step by step, and
 * throws a {@link ModelMismatchError} at the first disagreement.
 *
 * The harness is the network: it captures each peer's own durable updates
 * and keeps one FIFO queue per sender → receiver link. A scenario interleaves
 * operations with deliveries (the head of a link, any queued update out of
 * order, or a duplicate of one already delivered); every delivery is awaited
 * on its own so that it is its own batch at the receiver. At the end the rest
 * is delivered in a scenario-chosen order with duplicates, and a fresh
 * observer device is fed every update in yet another order.
 */
import { isDeepStrictEqual } from 'node:util'
import fc from 'fast-check'
import * as Y from 'yjs'
import { hasCode } from '../../core/errors.js'
import { createDevice, type DevicePeer } from '../../peers/create-device.js'
import { createServer, type ServerPeer } from '../../server-peer/create-server.js'
import { memoryStore } from '../../storage/level-store.js'
import {
  FAITHFUL_RULES,
  LOCAL_FIELD,
  ReferenceModel,
  SERVER,
  type FieldInput,
  type ModelOp,
  type ModelRules,
  type ModelView,
  type OpOutcome,
  type Value,
} from './reference-model.js'

/** The implementation and the model disagree (or the implementation broke an invariant). */
export class ModelMismatchError extends Error {
  constructor(message: string, trace: readonly string[]) {
    super(`${message}\n--- trace (last 40 steps) ---\n${trace.slice(-40).join('\n')}`)
    this.name = 'ModelMismatchError'
  }
}

/** One step of a scenario. Numbers pick among what is possible at that moment (modulo). */
export type Step =
  | { readonly kind: 'op'; readonly peer: number; readonly op: ModelOp }
  | { readonly kind: 'deliver'; readonly link: number }
  | { readonly kind: 'deliver-any'; readonly pick: number }
  | { readonly kind: 'duplicate'; readonly pick: number }

/** One pick of the final drain: a queued update, or a duplicate of a delivered one. */
export interface DrainPick {
  readonly pick: number
  readonly duplicate: boolean
}

/** One pick of the observer's feed; `together` joins it to the next one's batch. */
export interface FeedPick {
  readonly pick: number
  readonly duplicate: boolean
  readonly together: boolean
}

/** A whole random scenario. */
export interface Scenario {
  readonly deviceCount: number
  /** Seeds the peers' random sources (Yjs clientIDs). */
  readonly seed: number
  readonly steps: readonly Step[]
  readonly drain: readonly DrainPick[]
  readonly feed: readonly FeedPick[]
}

const USERS = ['u1', 'u2'] as const
const valueArbs: Record<string, fc.Arbitrary<Value>> = {
  name: fc.constantFrom<Value>('a', 'b', '', null),
  email: fc.constantFrom<Value>('a@x.test', 'b@x.test', '', null),
  groups: fc.constantFrom<Value>([], ['g1'], ['g1', 'g2'], null),
  [LOCAL_FIELD]: fc.constantFrom<Value>('t1', 't2', '', null),
}
const fieldsArb = fc.record(valueArbs, { requiredKeys: [] }) as fc.Arbitrary<FieldInput>
const userArb = fc.constantFrom(...USERS)
const opArb: fc.Arbitrary<ModelOp> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('put'), user: userArb, fields: fieldsArb }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('patch'),
      user: userArb,
      fields: fieldsArb.filter((f) => Object.keys(f).length > 0),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete'), user: userArb }) },
)
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('op'), peer: fc.nat(), op: opArb }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('deliver'), link: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('deliver-any'), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('duplicate'), pick: fc.nat() }) },
)

/** Size knobs of {@link scenarioArb}. */
export interface ScenarioSize {
  readonly stepsMax: number
}

/** Random scenarios: 2-3 devices, a few users, small value domains so that writes conflict. */
export function scenarioArb(size: ScenarioSize = { stepsMax: 32 }): fc.Arbitrary<Scenario> {
  return fc.record({
    deviceCount: fc.integer({ min: 2, max: 3 }),
    seed: fc.integer({ min: 1, max: 0x7fffffff }),
    // size 'max': lengths spread over the whole range, not fast-check's small default.
    steps: fc.array(stepArb, { minLength: 1, maxLength: size.stepsMax, size: 'max' }),
    drain: fc.array(
      // One pick in six re-delivers something instead of draining.
      fc.record({ pick: fc.nat(), duplicate: fc.nat({ max: 5 }).map((n) => n === 0) }),
      { maxLength: 40 },
    ),
    feed: fc.array(
      fc.record({
        pick: fc.nat(),
        duplicate: fc.boolean(),
        // Mostly several updates per batch: fewer flushes, and batches of mixed writers.
        together: fc.nat({ max: 2 }).map((n) => n > 0),
      }),
      { maxLength: 60 },
    ),
  })
}

/** A clock shared by every peer; the harness moves it, nothing else does. */
export class FakeClock {
  private ms = 1_700_000_000_000
  private readonly timers = new Map<number, { at: number; fn: () => void }>()
  private nextHandle = 1

  now(): number {
    return this.ms
  }

  setTimeout(fn: () => void, delayMs: number): unknown {
    const handle = this.nextHandle++
    this.timers.set(handle, { at: this.ms + Math.max(0, delayMs), fn })
    return handle
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number)
  }

  /** Moves time forward by `ms`, running the timers that fall due, in order. */
  advance(ms: number): void {
    const until = this.ms + ms
    for (;;) {
      const due = [...this.timers]
        .filter(([, t]) => t.at <= until)
        .sort((a, b) => a[1].at - b[1].at)
      const first = due[0]
      if (first === undefined) break
      this.timers.delete(first[0])
      this.ms = Math.max(this.ms, first[1].at)
      first[1].fn()
    }
    this.ms = until
  }
}

/** mulberry32: a small seeded PRNG for the peers' random sources. */
export function seededUint32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

type Peer = ServerPeer | DevicePeer

interface Delivery {
  readonly writer: string
  readonly index: number
  readonly to: string
}

/** What a finished run leaves behind, for the determinism test. */
export interface RunResult {
  readonly trace: readonly string[]
  readonly stateUpdate: Uint8Array
}

/**
 * Runs `scenario` against real peers and the model built with `rules`.
 * Throws {@link ModelMismatchError} on the first disagreement.
 */
export async function runScenario(
  scenario: Scenario,
  rules: ModelRules = FAITHFUL_RULES,
): Promise<RunResult> {
  const run = await ScenarioRun.open(scenario, rules)
  try {
    await run.steps(scenario.steps)
    await run.drain(scenario.drain)
    run.checkConverged()
    await run.checkObserver(scenario.feed)
    return { trace: run.trace, stateUpdate: Y.encodeStateAsUpdate(run.serverDoc()) }
  } finally {
    await run.close()
  }
}

class ScenarioRun {
  readonly trace: string[] = []
  private readonly names: string[]
  private readonly peers = new Map<string, Peer>()
  /** Writer → its updates; index 0 is the server's setup (field policies). */
  private readonly updates = new Map<string, Uint8Array[]>()
  /** `${writer}>${to}` → queued update indices of writer, oldest first. */
  private readonly queues = new Map<string, number[]>()
  private readonly delivered: Delivery[] = []
  /** Local updates a peer announced and the harness has not yet accounted for. */
  private readonly announced = new Map<string, Uint8Array[]>()
  private readonly model: ReferenceModel
  private toClose: Peer[] = []

  private constructor(
    private readonly scenario: Scenario,
    rules: ModelRules,
    private readonly clock: FakeClock,
  ) {
    const devices = Array.from({ length: scenario.deviceCount }, (_, i) => `d${i + 1}`)
    this.names = [SERVER, ...devices]
    this.model = new ReferenceModel(devices, rules)
  }

  static async open(scenario: Scenario, rules: ModelRules): Promise<ScenarioRun> {
    const run = new ScenarioRun(scenario, rules, new FakeClock())
    await run.start()
    return run
  }

  private async start(): Promise<void> {
    const server = await createServer({
      store: memoryStore(),
      clock: this.clock,
      randomUint32: seededUint32(this.scenario.seed),
      fieldPolicies: { [LOCAL_FIELD]: 'device-specific' },
    })
    this.add(SERVER, server)
    // The policies are known everywhere before the run: a device that has
    // not yet heard of them would replicate the device-specific field.
    const setup = Y.encodeStateAsUpdate(server.replica.doc)
    this.updates.set(SERVER, [setup])
    for (const [i, name] of this.names.slice(1).entries()) {
      const device = await createDevice({
        id: name,
        store: memoryStore(),
        clock: this.clock,
        randomUint32: seededUint32(this.scenario.seed + 7919 * (i + 1)),
      })
      this.add(name, device)
      this.updates.set(name, [new Uint8Array()])
      await device.replica.applyRemote(setup, SERVER)
    }
    for (const [name, peer] of this.peers) {
      this.announced.set(name, [])
      peer.replica.onUpdate(({ update, origin }) => {
        if (origin === 'local') this.announcedBy(name).push(update)
      })
      for (const to of this.names) if (to !== name) this.queues.set(`${name}>${to}`, [])
    }
  }

  private add(name: string, peer: Peer): void {
    this.peers.set(name, peer)
    this.toClose.push(peer)
  }

  serverDoc(): Y.Doc {
    return this.peer(SERVER).replica.doc
  }

  async steps(steps: readonly Step[]): Promise<void> {
    for (const step of steps) {
      this.clock.advance(1)
      if (step.kind === 'op') await this.operate(step.peer, step.op)
      else if (step.kind === 'deliver') await this.deliverHead(step.link)
      else if (step.kind === 'deliver-any') await this.deliverQueued(step.pick)
      else await this.deliverDuplicate(step.pick)
    }
  }

  /** Delivers everything still queued (and the adoptions that causes), in the scenario's order. */
  async drain(picks: readonly DrainPick[]): Promise<void> {
    let next = 0
    while (this.queuedCount() > 0) {
      this.clock.advance(1)
      const pick = picks[next++]
      if (pick === undefined) await this.deliverHead(0)
      else if (pick.duplicate && this.delivered.length > 0) await this.deliverDuplicate(pick.pick)
      else await this.deliverQueued(pick.pick)
    }
  }

  // --- steps ------------------------------------------------------------------

  private async operate(peerPick: number, op: ModelOp): Promise<void> {
    const name = this.names[peerPick % this.names.length] as string
    const expected = this.model.perform(name, op, this.clock.now())
    const actual = await this.perform(this.peer(name), op)
    this.trace.push(`${name} ${describeOp(op)} -> ${actual} (model ${expected.outcome})`)
    if (actual !== expected.outcome) {
      this.fail(`${name} ${describeOp(op)}: implementation ${actual}, model ${expected.outcome}`)
    }
    this.takePublished(name, expected.published ? 1 : 0, 'its own write')
    this.expectSilentExcept(name)
    this.checkViews(name)
  }

  private async perform(peer: Peer, op: ModelOp): Promise<OpOutcome> {
    if (op.kind === 'delete') return (await peer.users.delete(op.user)) ? 'done' : 'not-shown'
    try {
      if (op.kind === 'put') await peer.users.put({ id: op.user, ...op.fields })
      else await peer.users.patch(op.user, op.fields)
      return 'done'
    } catch (error) {
      if (op.kind === 'patch' && hasCode(error, 'USER_NOT_FOUND')) return 'not-found'
      throw error
    }
  }

  private async deliverHead(linkPick: number): Promise<void> {
    const links = [...this.queues].filter(([, queue]) => queue.length > 0)
    if (links.length === 0) return this.noStep('deliver: nothing queued')
    const [key, queue] = links[linkPick % links.length] as [string, number[]]
    const index = queue.shift() as number
    const [writer, to] = key.split('>') as [string, string]
    await this.deliver({ writer, index, to }, 'deliver')
  }

  private async deliverQueued(pick: number): Promise<void> {
    const all = [...this.queues].flatMap(([key, queue]) =>
      queue.map((index, at) => ({ key, at, index })),
    )
    if (all.length === 0) return this.noStep('deliver-any: nothing queued')
    const chosen = all[pick % all.length] as { key: string; at: number; index: number }
    this.queues.get(chosen.key)?.splice(chosen.at, 1)
    const [writer, to] = chosen.key.split('>') as [string, string]
    await this.deliver({ writer, index: chosen.index, to }, 'deliver-any')
  }

  private async deliverDuplicate(pick: number): Promise<void> {
    const again = this.delivered[pick % Math.max(1, this.delivered.length)]
    if (again === undefined) return this.noStep('duplicate: nothing delivered yet')
    await this.deliver(again, 'duplicate')
  }

  private noStep(what: string): void {
    this.trace.push(`(${what})`)
  }

  /** Delivers one update as its own batch, then checks adoption and the receiver's view. */
  private async deliver(delivery: Delivery, how: string): Promise<void> {
    const { writer, index, to } = delivery
    const update = this.updates.get(writer)?.[index]
    if (update === undefined) throw new Error(`harness: no update ${index} of ${writer}`)
    const expected = this.model.receive(to, writer, index, this.clock.now())
    await this.peer(to).replica.applyRemote(update, writer)
    this.delivered.push(delivery)
    const adopted = this.takePublished(to, expected.adopted ? 1 : 0, `receiving ${writer}#${index}`)
    this.trace.push(
      `${how} ${writer}#${index} -> ${to}` +
        (adopted > 0 ? ` => ${to} adopts (#${this.lastIndex(to)})` : ''),
    )
    this.expectSilentExcept(to)
    this.checkViews(to)
  }

  /**
   * Accounts for the local updates `name` announced in this step: the model
   * says how many (0 or 1). Each is registered as the writer's next update
   * and queued to every other peer.
   */
  private takePublished(name: string, expected: number, cause: string): number {
    const got = this.announcedBy(name).splice(0)
    if (got.length !== expected) {
      this.fail(
        `${name} published ${got.length} update(s) after ${cause}; the model expects ${expected}` +
          (name === SERVER && cause.startsWith('receiving') ? ' (server adoption)' : ''),
      )
    }
    const list = this.updates.get(name) as Uint8Array[]
    for (const update of got) {
      list.push(update)
      if (list.length - 1 !== this.model.updateCount(name)) {
        this.fail(
          `${name} has ${list.length - 1} updates; the model ${this.model.updateCount(name)}`,
        )
      }
      for (const to of this.names)
        if (to !== name) this.queues.get(`${name}>${to}`)?.push(list.length - 1)
    }
    return got.length
  }

  private expectSilentExcept(name: string): void {
    for (const other of this.names) {
      if (other !== name && this.announcedBy(other).length > 0) {
        this.fail(`${other} published an update during a step that did not involve it`)
      }
    }
  }

  // --- checks -----------------------------------------------------------------

  private checkViews(name: string): void {
    const actual = this.peer(name).users.list()
    const expected = this.model.views(name)
    if (!isDeepStrictEqual(plain(actual), expected)) {
      this.fail(
        `view of ${name} differs from the model\n  implementation: ${JSON.stringify(actual)}\n` +
          `  model:          ${JSON.stringify(expected)}`,
      )
    }
  }

  /** After the drain: every peer knows everything and shows the model's view. */
  checkConverged(): void {
    for (const name of this.names) {
      if (!this.model.knowsEverything(name))
        this.fail(`harness: ${name} missed updates after drain`)
      this.checkViews(name)
    }
    // Shared fields agree between every two peers that both show a user.
    const views = this.names.map((name) => [name, byId(this.peer(name).users.list())] as const)
    for (const [a, va] of views) {
      for (const [b, vb] of views) {
        if (a >= b) continue
        for (const [id, view] of va) {
          const other = vb.get(id)
          if (other !== undefined && !isDeepStrictEqual(shared(view), shared(other))) {
            this.fail(`${a} and ${b} show different shared fields of ${id}`)
          }
        }
      }
    }
    this.checkDocs(this.names.map((name) => [name, this.peer(name).replica.doc]))
  }

  private checkDocs(docs: ReadonlyArray<readonly [string, Y.Doc]>): void {
    const [first, ...rest] = docs
    if (first === undefined) return
    const vector = Y.decodeStateVector(Y.encodeStateVector(first[1]))
    for (const [name, doc] of docs) {
      if (doc.store.pendingStructs !== null || doc.store.pendingDs !== null) {
        this.fail(`${name} still holds pending Yjs structs or deletes after full delivery`)
      }
    }
    for (const [name, doc] of rest) {
      if (!isDeepStrictEqual(Y.decodeStateVector(Y.encodeStateVector(doc)), vector)) {
        this.fail(`${name}'s Yjs state vector differs from ${first[0]}'s`)
      }
    }
  }

  /**
   * A fresh device fed every update of every writer in another order, with
   * duplicates and several updates per batch, shows what the model says a
   * peer that knows everything and wrote nothing shows.
   */
  async checkObserver(picks: readonly FeedPick[]): Promise<void> {
    const observer = await createDevice({
      id: 'observer',
      store: memoryStore(),
      clock: this.clock,
      randomUint32: seededUint32(this.scenario.seed + 104729),
    })
    this.toClose.push(observer)
    const remaining = [...this.updates].flatMap(([writer, list]) =>
      list.flatMap((update, index) => (writer !== SERVER && index === 0 ? [] : [update])),
    )
    const sent: Uint8Array[] = []
    let batch: Array<Promise<void>> = []
    let next = 0
    while (remaining.length > 0) {
      const pick = picks[next++] ?? { pick: 0, duplicate: false, together: false }
      const update =
        pick.duplicate && sent.length > 0
          ? (sent[pick.pick % sent.length] as Uint8Array)
          : (remaining.splice(pick.pick % remaining.length, 1)[0] as Uint8Array)
      sent.push(update)
      // Updates applied in the same tick fold into one batch at the receiver.
      batch.push(observer.replica.applyRemote(update, 'feed'))
      if (!pick.together) {
        await Promise.all(batch)
        batch = []
      }
    }
    await Promise.all(batch)
    const actual = observer.users.list()
    const expected = this.model.observerViews()
    if (!isDeepStrictEqual(plain(actual), expected)) {
      this.fail(
        `view of a fresh observer fed every update differs from the model\n` +
          `  implementation: ${JSON.stringify(actual)}\n  model:          ${JSON.stringify(expected)}`,
      )
    }
    this.checkDocs([
      [SERVER, this.serverDoc()],
      ['observer', observer.replica.doc],
    ])
  }

  async close(): Promise<void> {
    for (const peer of this.toClose) await peer.close()
    this.toClose = []
  }

  // --- small helpers ----------------------------------------------------------

  private fail(message: string): never {
    throw new ModelMismatchError(message, this.trace)
  }

  private peer(name: string): Peer {
    const peer = this.peers.get(name)
    if (peer === undefined) throw new Error(`harness: unknown peer ${name}`)
    return peer
  }

  private announcedBy(name: string): Uint8Array[] {
    const list = this.announced.get(name)
    if (list === undefined) throw new Error(`harness: unknown peer ${name}`)
    return list
  }

  private lastIndex(name: string): number {
    return (this.updates.get(name)?.length ?? 1) - 1
  }

  private queuedCount(): number {
    let count = 0
    for (const queue of this.queues.values()) count += queue.length
    return count
  }
}

function describeOp(op: ModelOp): string {
  return op.kind === 'delete'
    ? `delete ${op.user}`
    : `${op.kind} ${op.user} ${JSON.stringify(op.fields)}`
}

/** Views as plain data, for comparison with the model's. */
function plain(views: readonly object[]): ModelView[] {
  return JSON.parse(JSON.stringify(views)) as ModelView[]
}

function byId(
  views: ReadonlyArray<{ readonly id: string }>,
): Map<string, Readonly<Record<string, unknown>>> {
  return new Map(views.map((view) => [view.id, view as Readonly<Record<string, unknown>>]))
}

function shared(view: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const { [LOCAL_FIELD]: _local, ...rest } = view
  return rest
}
