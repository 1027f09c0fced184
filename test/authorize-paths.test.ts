/**
 * Authorisation proven on every path (issue 11): a property generates forged
 * updates (writes into the server's part, deletes of server entries, nested
 * items, items and GC ranges under other writers' clientIDs, deletes of ids
 * nobody sent, skips, out-of-bound stamps and epochs, extra keys, bad
 * content, keys and roots, too many clients) and sends each over every path
 * into the server (WebSocket `sync-update`, unsolicited `sync-step2`, and a
 * step 2 answering the server's step 1; over a real socket, an in-memory
 * connection and the simulator's network) and into a device (the LAN
 * session, over an in-memory connection and the simulator's network). Each
 * must be refused with a typed error, the receiver's state vector and views
 * unchanged.
 *
 * Then each check of core/authorize.ts is switched off in turn (through a
 * mock of `checkUpdate` that adds `disabledChecks`; production code has no
 * such switch) and the same property must find a forgery that gets through.
 *
 * Replay with `ROSTERSYNC_SEED=<seed> npx vitest run test/authorize-paths.test.ts`.
 */
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import * as Y from 'yjs'
import { CHECK_NAMES, type CheckName } from '../core/authorize.js'
import { decodeMessage, encodeMessage, type Message } from '../core/protocol.js'
import type { Connection } from '../core/transport.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { link } from '../peers/memory-link.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { Prng } from '../sim/prng.js'
import { Scheduler } from '../sim/scheduler.js'
import { SimNetwork } from '../sim/sim-network.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { wsConnect } from '../transports/ws-transport.js'
import { FORGERIES, forge, type ForgeryKind, type ForgeryPlan } from './helpers/forged-updates.js'
import { envInt, seedFromEnv } from './helpers/property-seed.js'

const control = vi.hoisted(() => ({ disabled: new Set<string>() }))
vi.mock('../core/authorize.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../core/authorize.js')>()
  const checkUpdate: typeof real.checkUpdate = (doc, update, options) =>
    real.checkUpdate(
      doc,
      update,
      control.disabled.size === 0
        ? options
        : { ...options, disabledChecks: control.disabled as ReadonlySet<CheckName> },
    )
  return { ...real, checkUpdate }
})

const seed = seedFromEnv()
console.log(
  `authorize-paths: seed ${seed} — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/authorize-paths.test.ts`,
)

const SITE_KEY = 'paths-site-key'
const JOIN = `/roster?device=D1&key=${SITE_KEY}`

/** A server and two devices that synced a few users (one deleted and enrolled again: epoch 1). */
interface Site {
  readonly server: ServerPeer
  readonly d1: DevicePeer
  readonly d2: DevicePeer
  readonly network: SimNetwork
  close(): Promise<void>
}

async function openSite(): Promise<Site> {
  const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
  const d1 = await createDevice({ id: 'D1', store: memoryStore() })
  const d2 = await createDevice({ id: 'D2', store: memoryStore() })
  await server.users.put({ id: 'u1', name: 'Ann', email: 'ann@example.com' })
  await server.users.put({ id: 'u2', name: 'Bob' })
  await server.users.put({ id: 'u4', name: 'Dee' })
  await server.users.delete('u4')
  await server.users.put({ id: 'u4', name: 'Dee again' })
  const links = [link(server.replica, d1.replica), link(server.replica, d2.replica)]
  for (const l of links) await l.settled()
  await d1.users.patch('u2', { phone: '+1 555 0100' })
  await d1.users.put({ id: 'u5', name: 'Eve' })
  await d2.users.patch('u1', { department: 'R&D' })
  await d2.users.patch('u4', { title: 'Dr' })
  for (const l of links) await l.settled()
  for (const l of links) l.close()
  const scheduler = new Scheduler()
  const auto = scheduler.autoRun()
  const network = new SimNetwork({ scheduler, rng: new Prng(seed) })
  network.listen('server', 'ws://sim-server', (connection, url) => server.accept(connection, url))
  return {
    server,
    d1,
    d2,
    network,
    async close() {
      await auto.stop()
      await d1.close()
      await d2.close()
      await server.close()
    },
  }
}

/** How the forged update travels. */
type Mode = 'update' | 'step2' | 'answer'
interface Path {
  readonly name: string
  readonly receiver: 'server' | 'device'
  readonly mode: Mode
  /** Opens a fresh link from the forger to the receiver. */
  open(site: Site): Promise<Connection>
}

const serverPaths = (via: string, open: (site: Site) => Promise<Connection>): Path[] =>
  (['update', 'step2', 'answer'] as const).map((mode) => ({
    name: `${via} ${mode}`,
    receiver: 'server',
    mode,
    open,
  }))
const devicePaths = (via: string, open: (site: Site) => Promise<Connection>): Path[] =>
  (['update', 'step2', 'answer'] as const).map((mode) => ({
    name: `${via} ${mode}`,
    receiver: 'device',
    mode,
    open,
  }))

const memoryServer = async (site: Site): Promise<Connection> => {
  const [mine, theirs] = memoryPair('server', 'forger')
  site.server.accept(theirs, JOIN)
  return mine
}
const simServer = (site: Site): Promise<Connection> =>
  site.network.transport('forger').connect(`ws://sim-server${JOIN}`)
const websocketServer = (site: Site): Promise<Connection> => wsConnect(`${site.server.url}${JOIN}`)
const memoryLan = async (site: Site): Promise<Connection> => {
  const [mine, theirs] = memoryPair('D1', 'D3')
  site.d1.attachLan(theirs, 'D3')
  return mine
}
const simLan = async (site: Site): Promise<Connection> => {
  const [mine, theirs] = site.network.pair('D3', 'D1')
  site.d1.attachLan(theirs, 'D3')
  return mine
}

/** Paths over in-memory links (fast: most runs). */
const IN_MEMORY: readonly Path[] = [
  ...serverPaths('memory', memoryServer),
  ...serverPaths('simulator', simServer),
  ...devicePaths('LAN memory', memoryLan),
  ...devicePaths('LAN simulator', simLan),
]
/** Paths over a real WebSocket on 127.0.0.1 (fewer runs). */
const REAL_SOCKET: readonly Path[] = serverPaths('WebSocket', websocketServer)

/** What the receiver answered: a refusal's code, or nothing (accepted). */
interface Outcome {
  readonly code: string | undefined
  readonly message?: string
}

/**
 * Sends the forged update the way `path` says, then a step 1 as a probe:
 * the receiver handles messages in order, so its answer to the probe comes
 * after it has refused or applied the forgery. A refusal is an error
 * message, or a close whose reason starts with the code.
 */
function exchange(
  connection: Connection,
  path: Path,
  forged: Uint8Array,
  vector: () => Uint8Array,
): Promise<Outcome> {
  const send = (message: Message): void => connection.send(encodeMessage(message))
  const probe = (): void => send({ type: 'sync-step1', stateVector: vector() })
  return new Promise<Outcome>((resolve) => {
    let answered = false
    let step2s = 0
    // The server answers a step 1 with step 1 and step 2; with the answer
    // mode it has answered twice by the time the probe is answered.
    const step2sWanted = path.mode === 'answer' && path.receiver === 'server' ? 2 : 1
    connection.onMessage((bytes) => {
      const message = decodeMessage(bytes)
      if (message.type === 'error') resolve({ code: message.code, message: message.message })
      else if (message.type === 'sync-step1' && path.mode === 'answer' && !answered) {
        answered = true
        send({ type: 'sync-step2', update: forged })
        probe()
      } else if (message.type === 'sync-step2' && ++step2s === step2sWanted) {
        resolve({ code: undefined })
      }
    })
    connection.onClose(({ code, reason }) => {
      resolve({ code: /^[A-Z_]+/.exec(reason)?.[0] ?? `CLOSED_${code}` })
    })
    if (path.mode === 'answer') {
      // A device's LAN session sends its step 1 on start; the server waits for ours.
      if (path.receiver === 'server') probe()
      return
    }
    send({ type: path.mode === 'update' ? 'sync-update' : 'sync-step2', update: forged })
    probe()
  })
}

/** What a refused update must leave as it was. */
function observe(peer: ServerPeer | DevicePeer): unknown {
  return {
    vector: Y.encodeStateVector(peer.replica.doc),
    users: peer.users.list(),
  }
}

/** A copy of a document, to forge against without touching the receiver's. */
function copyOf(doc: Y.Doc): Y.Doc {
  const copy = new Y.Doc()
  Y.applyUpdate(copy, Y.encodeStateAsUpdate(doc))
  return copy
}

/** The Yjs clients of a writer in `doc` (by the root of their first item). */
function clientsOf(doc: Y.Doc, root: string): number[] {
  const type = doc.getMap(root)
  return [...new Set([...type._map.values()].map((item) => item.id.client))]
}

const KINDS = Object.keys(FORGERIES) as ForgeryKind[]
const planArb: fc.Arbitrary<ForgeryPlan> = fc.record({
  kind: fc.constantFrom(...KINDS),
  pick: fc.nat(1_000),
  fresh: fc.integer({ min: 1, max: 0x7fff_ffff }),
})

const typed = new Set([
  'FORBIDDEN_WRITE',
  'INVALID_RECORD',
  'MESSAGE_TOO_LARGE',
  'MALFORMED_MESSAGE',
])

/** Sends one forgery over one path; returns what the receiver said and whether its state held. */
async function attempt(
  site: Site,
  path: Path,
  plan: ForgeryPlan,
): Promise<{ outcome: Outcome; unchanged: boolean }> {
  const receiver = path.receiver === 'server' ? site.server : site.d1
  const doc = copyOf(receiver.replica.doc)
  const forged = forge(plan, {
    doc,
    now: Date.now(),
    ownRoot: path.receiver === 'server' ? 'u:D1' : 'u:D3',
    entryRoot: path.receiver === 'server' ? 'u:D1' : 'u:D2',
    serverClient: clientsOf(doc, 'u:server')[0] as number,
    otherClient: clientsOf(doc, 'u:D2')[0] as number,
  })
  const before = observe(receiver)
  const connection = await path.open(site)
  const outcome = await exchange(connection, path, forged, () =>
    Y.encodeStateVector(receiver.replica.doc),
  )
  connection.close(1000, 'done')
  return { outcome, unchanged: JSON.stringify(observe(receiver)) === JSON.stringify(before) }
}

/** The property: every forgery over every path is refused with a typed error and changes nothing. */
function refusedEverywhere(site: Site, paths: readonly Path[]) {
  return fc.asyncProperty(fc.constantFrom(...paths), planArb, async (path, plan) => {
    const { outcome, unchanged } = await attempt(site, path, plan)
    if (outcome.code === undefined || !typed.has(outcome.code))
      throw new Error(
        `${plan.kind} over ${path.name} was not refused (${outcome.code ?? 'accepted'})`,
      )
    if (!unchanged) throw new Error(`${plan.kind} over ${path.name} changed the receiver`)
  })
}

describe('every forged update is refused on every path', () => {
  let site: Site
  beforeAll(async () => {
    site = await openSite()
  })
  afterAll(async () => {
    await site.close()
  })

  it('in-memory and simulated links, into the server and into a device', async () => {
    await fc.assert(refusedEverywhere(site, IN_MEMORY), {
      seed,
      numRuns: envInt('ROSTERSYNC_RUNS') ?? 200,
    })
  })

  it('a real WebSocket on 127.0.0.1', async () => {
    await fc.assert(refusedEverywhere(site, REAL_SOCKET), { seed, numRuns: 24 })
  })

  it('every forgery kind on every path at least once', async () => {
    for (const path of [...IN_MEMORY, ...REAL_SOCKET]) {
      for (const kind of KINDS) {
        if (kind === 'manyClients' && path.name !== 'memory update') continue
        const { outcome, unchanged } = await attempt(site, path, {
          kind,
          pick: seed >>> 0,
          fresh: 1 + ((seed >>> 1) % 0x7fff_0000),
        })
        expect(
          typed.has(outcome.code ?? ''),
          `${kind} over ${path.name}: ${outcome.code ?? 'accepted'}`,
        ).toBe(true)
        expect(unchanged, `${kind} over ${path.name} changed the receiver`).toBe(true)
      }
    }
  })
})

describe('each check of core/authorize.ts matters', () => {
  it.each(CHECK_NAMES)(
    'with %s switched off, the property finds a forgery that gets through',
    async (check) => {
      let found: [Path, ForgeryPlan] | undefined
      const site = await openSite()
      control.disabled = new Set([check])
      try {
        const result = await fc.check(refusedEverywhere(site, IN_MEMORY), {
          seed,
          numRuns: 2_000,
          endOnFailure: true,
        })
        expect(result.failed, `no counterexample with ${check} off`).toBe(true)
        found = result.counterexample ?? undefined
      } finally {
        control.disabled = new Set()
        await site.close()
      }
      // The same forgery, every check on, on a fresh site: refused. So it
      // was this check, and only it, that stopped it.
      const [path, plan] = found as [Path, ForgeryPlan]
      const fresh = await openSite()
      try {
        const { outcome, unchanged } = await attempt(fresh, path, plan)
        expect(typed.has(outcome.code ?? ''), `${plan.kind} over ${path.name}`).toBe(true)
        expect(unchanged).toBe(true)
      } finally {
        await fresh.close()
      }
    },
  )
})
