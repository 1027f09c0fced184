/**
 * Clock feeding (issue 12): every peer on its own injected clock, skewed
 * ahead and behind. A device whose clock is slow, editing after it has seen
 * another device's edit, wins: its edit is causally later, and the hybrid
 * logical clock stamps it past the one it saw, whatever the wall clocks say
 * (SEMANTICS.md, rule 2: "the latest write wins (hybrid logical clock)").
 *
 * Then a property: the server and three devices on random clocks (up to 15
 * minutes off either way) make a chain of edits of a last-writer-wins
 * field, each after every peer has seen the one before; the simulator's
 * recorder writes down what ran and the independent oracle (sim/oracle/)
 * says which write must show. Fails when the replica reads other writers'
 * stamps one too low as it observes them (checked by breaking it). Replay
 * with the seed it prints: `ROSTERSYNC_SEED=<seed> npx vitest run test/clocks.test.ts`.
 */
import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import type { Clock } from '../core/clock.js'
import { asDeviceEntry, usersRootName } from '../core/entries.js'
import { asWriterId, type UserId } from '../core/ids.js'
import type { DevicePeer } from '../peers/create-device.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'
import { ManualClock } from './helpers/manual-clock.js'
import { memorySite, type MemorySite } from './helpers/memory-site.js'
import { envInt, seedFromEnv } from './helpers/property-seed.js'
import { skewedClock } from './helpers/skewed-clock.js'
import { HistoryRecorder } from '../sim/history-recorder.js'
import { checkAgainstOracle, type PeerViews } from '../sim/oracle/check.js'
import type { WriteOp } from '../sim/oracle/history.js'

const MINUTE = 60_000
const sites: MemorySite[] = []
afterEach(async () => {
  for (const s of sites.splice(0).reverse()) await s.close()
})

const skewed = skewedClock

/**
 * A site whose server runs on `base`, with device `D-b` 10 minutes ahead
 * and device `D-a` 10 minutes behind. Ties between equal stamps go to the
 * greater writer id, `D-b`: a slow device that stamped only as high as
 * the edit it saw would lose.
 */
async function skewedSite(
  fieldPolicies = {},
): Promise<{ s: MemorySite; fast: DevicePeer; slow: DevicePeer }> {
  const base = new ManualClock()
  const s = await memorySite(base, { fieldPolicies })
  sites.push(s)
  await s.server.users.put({ id: 'u1', name: 'Ann' })
  const fast = await s.device('D-b', skewed(base, 10 * MINUTE))
  const slow = await s.device('D-a', skewed(base, -10 * MINUTE))
  await fast.sync.whenIdle()
  await slow.sync.whenIdle()
  return { s, fast, slow }
}

/** The stamp device `writer` holds for `field` of u1, as `on` sees it. */
function stampOf(on: DevicePeer, writer: string, field: string): number | undefined {
  const entry = on.replica.replicaOf('u1' as never).devices.find(([w]) => w === writer)?.[1]
  return entry?.s[field]
}

describe('a slower clock, editing after it saw another device edit', () => {
  it('wins a last-writer-wins field, on every peer, through the server', async () => {
    const { s, fast, slow } = await skewedSite({ title: 'last-writer-wins' })
    await fast.users.patch('u1', { title: 'Fast' })
    await fast.sync.whenIdle()
    await eventually(() => expect(slow.users.get('u1')?.title).toBe('Fast'))
    await slow.users.patch('u1', { title: 'Slow, but later' })
    await slow.sync.whenIdle()
    await fast.sync.whenIdle()
    for (const peer of [slow, fast, s.server])
      expect(peer.users.get('u1')?.title).toBe('Slow, but later')
    // Its wall clock is 20 minutes behind the edit it saw; its stamp is past it.
    expect(stampOf(slow, 'D-a', 'title')).toBeGreaterThan(stampOf(slow, 'D-b', 'title') ?? 0)
  })

  it('wins a shared field the server holds no value of, over the LAN with the server away', async () => {
    const { s, fast, slow } = await skewedSite()
    s.down()
    const [toSlow, toFast] = memoryPair('D-b', 'D-a')
    fast.attachLan(toSlow, 'D-a')
    slow.attachLan(toFast, 'D-b')
    await fast.users.patch('u1', { phone: '+1 fast' })
    await eventually(() => expect(slow.users.get('u1')?.phone).toBe('+1 fast'))
    await slow.users.patch('u1', { phone: '+1 slow, but later' })
    await eventually(() => expect(fast.users.get('u1')?.phone).toBe('+1 slow, but later'))
    expect(slow.users.get('u1')?.phone).toBe('+1 slow, but later')
    expect(stampOf(slow, 'D-a', 'phone')).toBeGreaterThan(stampOf(slow, 'D-b', 'phone') ?? 0)
    // Back online: the server adopts the fill (rule 2). It adopts the first
    // one it receives, so the slow device goes first here.
    s.up()
    await slow.sync.whenIdle()
    await fast.sync.whenIdle()
    for (const peer of [slow, fast, s.server])
      expect(peer.users.get('u1')?.phone).toBe('+1 slow, but later')
  })
})

// ------------------------------------------------------------ property: the HLC against the oracle

const seed = seedFromEnv()
const numRuns = envInt('ROSTERSYNC_CLOCK_RUNS') ?? 12
// Printed up front so that a run killed by a timeout can still be replayed.
console.log(
  `clocks property: seed ${seed}, ${numRuns} runs — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/clocks.test.ts`,
)

const DEVICE_IDS = ['D-a', 'D-b', 'D-c'] as const
const SERVER_ID = 'server'
/** Clock offsets, either way: up to the simulator's largest skew. */
const offsetArb = fc.integer({ min: -15 * MINUTE, max: 15 * MINUTE })
/** One write: who (0 the server, 1.. a device), what, and how long after the last one. */
const stepArb = fc.record({
  writer: fc.integer({ min: 0, max: DEVICE_IDS.length }),
  value: fc.integer({ min: 0, max: 999 }),
  gapMs: fc.integer({ min: 0, max: 3_000 }),
})
const scenarioArb = fc.record({
  offsets: fc.array(offsetArb, {
    minLength: DEVICE_IDS.length + 1,
    maxLength: DEVICE_IDS.length + 1,
  }),
  steps: fc.array(stepArb, { minLength: 2, maxLength: 6 }),
})

/** A Yjs state vector as a comparable string. */
const vectorKey = (doc: Y.Doc): string =>
  [...Y.decodeStateVector(Y.encodeStateVector(doc))]
    .sort(([a], [b]) => a - b)
    .map(([client, clock]) => `${client}:${clock}`)
    .join(',')

/**
 * Lets the in-memory links run, moving `clock` a little at a time (batch
 * windows and fan-out run on it), until every peer's document holds the
 * same operations. Bounded: a minute of virtual time.
 */
async function untilSame(
  clock: ManualClock,
  peers: ReadonlyArray<{ replica: { doc: Y.Doc } }>,
): Promise<void> {
  for (let round = 0; round < 6_000; round++) {
    const keys = new Set(peers.map((p) => vectorKey(p.replica.doc)))
    if (keys.size === 1) return
    await clock.advance(10)
  }
  throw new Error('the peers did not converge within a minute of virtual time')
}

describe('property: causally ordered edits on skewed clocks, against the oracle', () => {
  it('each write made after seeing the last one wins on every peer, as the oracle says', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, async ({ offsets, steps }) => {
        const base = new ManualClock()
        const at = (i: number): Clock => skewed(base, offsets[i] ?? 0)
        const s = await memorySite(at(0), { fieldPolicies: {} })
        sites.push(s)
        const recorder = new HistoryRecorder(SERVER_ID, DEVICE_IDS, ['name', 'title'], () =>
          base.now(),
        )
        recorder.attach(SERVER_ID, s.server.replica)
        const run = async <T>(peer: string, op: WriteOp, call: () => Promise<T>): Promise<T> => {
          const write = recorder.begin(peer, op)
          const result = await call()
          recorder.acked(write)
          return result
        }
        // The title is last-writer-wins: the latest write of anyone shows,
        // the server's included, so the stamps alone decide.
        await run(SERVER_ID, { kind: 'policy', field: 'title', policy: 'last-writer-wins' }, () =>
          s.server.setFieldPolicies({ title: 'last-writer-wins' }),
        )
        await run(SERVER_ID, { kind: 'put', user: 'u1', fields: { name: 'Ann' } }, () =>
          s.server.users.put({ id: 'u1', name: 'Ann' }),
        )
        const devices: DevicePeer[] = []
        for (const [i, id] of DEVICE_IDS.entries()) {
          const d = await s.device(id, at(i + 1))
          recorder.attach(id, d.replica)
          d.replica.onReset(() => recorder.attach(id, d.replica))
          await d.sync.whenIdle()
          devices.push(d)
        }
        const peers = [s.server, ...devices]
        let last = ''
        for (const [n, step] of steps.entries()) {
          await base.advance(step.gapMs)
          // Every peer has seen every earlier write: this one is causally later.
          await untilSame(base, peers)
          const title = `t${n}-${step.value}`
          const writer = peers[step.writer] ?? s.server
          const id = step.writer === 0 ? SERVER_ID : (DEVICE_IDS[step.writer - 1] ?? '')
          await run(id, { kind: 'patch', user: 'u1', fields: { title } }, () =>
            writer.users.patch('u1', { title }),
          )
          last = title
        }
        await untilSame(base, peers)
        for (const d of devices) await d.sync.whenIdle()
        await untilSame(base, peers)

        const views: PeerViews[] = [SERVER_ID, ...DEVICE_IDS].map((peer, i) => ({
          peer,
          view: (user) => peers[i]?.replica.view(user as UserId),
          users: () => peers[i]?.replica.allUserIds() ?? [],
        }))
        const serverDoc = s.server.replica.doc
        const part = (writer: string, user: string) => {
          const root = usersRootName(asWriterId(writer))
          return serverDoc.share.has(root)
            ? asDeviceEntry(serverDoc.getMap(root).get(user))?.f
            : undefined
        }
        const history = recorder.history(peers.map((p) => p.replica.doc))
        const violations = checkAgainstOracle(history, views, part)
        expect(violations.map((v) => `${v.rule} @${v.peer ?? ''}: ${v.detail}`)).toEqual([])
        // The same, said plainly: the last write of the causal chain shows everywhere.
        for (const peer of peers) expect(peer.users.get('u1')?.title).toBe(last)
        await s.close()
        sites.splice(sites.indexOf(s), 1)
      }),
      { seed, numRuns, endOnFailure: true },
    )
  }, 300_000)
})
