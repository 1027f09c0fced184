/**
 * A server restored from a backup of its data directory, under random
 * histories (PROTOCOL.md, "A restored server"; README, backups). Three
 * phases on a real server and two live devices on LevelDB over 127.0.0.1:
 * A before the backup, B after it (lost by the server with the restore),
 * C after the restore. The oracle is written from the rules, not from the
 * code: what the server wrote in B is gone, what the devices wrote in any
 * phase stays (they carry their own entries over the restored roster), and
 * every peer ends showing the same roster.
 *
 * The site, so that each outcome has one answer whatever the order of
 * arrival: users `U*` are enrolled by the server in A and only renamed
 * (patched) after; each has its email filled at most once, by one device
 * (rule 2: the server adopts it), in some phase. Users `W*` are enrolled by
 * the server in B only; a device may fill one's email in B or C (its entry
 * then enrols the user again after the restore). Users `X*` are enrolled
 * in A and put and deleted by the server only (rule 4). Each device may
 * delete a U user locally (rule 3) in some phase: hidden on that device
 * until the server changes the user after the delete, a rollback by the
 * restore not counting as a change. The server may start a new generation
 * (compact its history) in any phase, after its own writes or at the
 * phase's end (the marks then name the generation it left): one in B makes
 * the restore a move back to the generation the devices left. No rule
 * changes across a generation. The backup may be copied while the server
 * runs, and the devices may also sync with each other over the LAN.
 *
 * Replay with `ROSTERSYNC_SEED=<seed> npx vitest run test/server-restore-property.test.ts`.
 */
import { cp, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterAll, describe, expect, it } from 'vitest'
import type { Clock } from '../core/clock.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { envInt, seedFromEnv } from './helpers/property-seed.js'

const seed = seedFromEnv()
const RUNS = envInt('ROSTERSYNC_RESTORE_RUNS') ?? 16
const SITE_KEY = 'restore-property-site-key'
const U = ['U0', 'U1', 'U2', 'U3'] as const
const W = ['W0', 'W1'] as const
const X = ['X0', 'X1'] as const
const DEVICES = ['D', 'E'] as const
type Phase = 'A' | 'B' | 'C'
type Compact = 'none' | 'early' | 'late'

const dirs: string[] = []
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
})

/** One random history. */
interface Case {
  /** Per phase: the server's renames of U users (user index, name). */
  readonly renames: Record<Phase, ReadonlyArray<readonly [number, string]>>
  /** Per U user: the phase its email is filled in (or none) and by which device. */
  readonly fills: ReadonlyArray<{ readonly phase: Phase | 'none'; readonly device: 0 | 1 }>
  /** Per W user: the phase its email is filled in (B, C or none) and by which device. */
  readonly wFills: ReadonlyArray<{ readonly phase: 'B' | 'C' | 'none'; readonly device: 0 | 1 }>
  /** Per phase: the server's puts and deletes of X users. */
  readonly xOps: Record<Phase, ReadonlyArray<readonly [number, 'put' | 'delete', string]>>
  /** Per U user, per device: the phase it deletes the user locally in (rule 3), or none. */
  readonly deletes: ReadonlyArray<readonly [Phase | 'none', Phase | 'none']>
  /** Whether the backup is copied while the server runs. */
  readonly hot: boolean
  /** Whether the devices also sync with each other over the LAN. */
  readonly lan: boolean
  /** Per phase: whether the server starts a new generation, after its writes or at the phase's end. */
  readonly compact: Record<Phase, Compact>
}

const name = fc.constantFrom('Ann', 'Bob', 'Cy', 'Dee', 'Eve')
const renames = fc.array(fc.tuple(fc.nat({ max: U.length - 1 }), name), { maxLength: 3 })
const xOps = fc.array(
  fc.tuple(fc.nat({ max: X.length - 1 }), fc.constantFrom('put' as const, 'delete' as const), name),
  { maxLength: 3 },
)
const device = fc.constantFrom(0 as const, 1 as const)
const compact = fc.constantFrom('none' as const, 'early' as const, 'late' as const)
const phaseOrNone = fc.constantFrom('none' as const, 'A' as const, 'B' as const, 'C' as const)
const caseArb: fc.Arbitrary<Case> = fc.record({
  renames: fc.record({ A: renames, B: renames, C: renames }),
  fills: fc.array(
    fc.record({
      phase: fc.constantFrom('none' as const, 'A' as const, 'B' as const, 'C' as const),
      device,
    }),
    { minLength: U.length, maxLength: U.length },
  ),
  wFills: fc.array(
    fc.record({ phase: fc.constantFrom('none' as const, 'B' as const, 'C' as const), device }),
    { minLength: W.length, maxLength: W.length },
  ),
  xOps: fc.record({ A: xOps, B: xOps, C: xOps }),
  deletes: fc.array(fc.tuple(phaseOrNone, phaseOrNone), {
    minLength: U.length,
    maxLength: U.length,
  }),
  compact: fc.record({ A: compact, B: compact, C: compact }),
  lan: fc.boolean(),
  hot: fc.boolean(),
})

type View = Record<string, unknown>

/** The system clock, `ms` ahead. */
const clockAhead = (ms: number): Clock => ({
  now: () => Date.now() + ms,
  setTimeout: (fn, delay) => setTimeout(fn, delay),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
})

/** A rename's name: each one a change (a patch to the same value changes nothing). */
const renamed = (to: string, phase: Phase, k: number): string => `${to} ${phase}${k}`

const PHASES: readonly Phase[] = ['A', 'B', 'C']
const after = (q: Phase, p: Phase): boolean => PHASES.indexOf(q) > PHASES.indexOf(p)

/**
 * Whether a device's local delete of U user `i` in phase `p` still hides it
 * (rule 3): the server changed the user in no later phase. The server's
 * changes of U users are its renames and its adoptions of fills
 * (`filledIn`: the phase of the fill that took, if any); a fill of phase B
 * is adopted again in C, when its device carries its entry over the
 * restored roster. A change in B that the restore rolled back was seen by
 * the device all the same (the user showed again; its delete is spent);
 * the rollback itself is no change. Within a phase the renames and fills
 * come before the deletes.
 */
function hides(c: Case, i: number, p: Phase, filledIn: Phase | undefined): boolean {
  for (const q of PHASES) if (after(q, p) && c.renames[q].some(([user]) => user === i)) return false
  if (filledIn === undefined) return true
  return !(after(filledIn, p) || (filledIn === 'B' && after('C', p)))
}

/** The roster the rules give, from the writes that were made (`filled`: the fills that took). */
function expected(c: Case, filled: ReadonlyMap<string, string>): View[] {
  const out = new Map<string, View>()
  const surviving: Phase[] = ['A', 'C']
  for (const [i, id] of U.entries()) {
    let userName = `User ${id}`
    for (const phase of surviving)
      for (const [k, [user, to]] of c.renames[phase].entries())
        if (user === i) userName = renamed(to, phase, k)
    const email = filled.get(id)
    out.set(id, { id, name: userName, ...(email === undefined ? {} : { email }) })
  }
  // W users: the server's enrolment was in B (lost); a fill enrols them again.
  for (const id of W) {
    const email = filled.get(id)
    if (email !== undefined) out.set(id, { id, email })
  }
  for (const [i, id] of X.entries()) {
    let view: View | undefined = { id, name: `User ${id}` }
    for (const phase of surviving)
      for (const [user, op, to] of c.xOps[phase])
        if (user === i) view = op === 'put' ? { id, name: to } : undefined
    if (view !== undefined) out.set(id, view)
  }
  return [...out.values()].sort((a, b) => String(a.id).localeCompare(String(b.id)))
}

/** A peer's roster, sorted by id, without the fields no write here sets. */
const rosterOf = (peer: ServerPeer | DevicePeer): View[] =>
  [...peer.users.list()]
    .map((u) => {
      const view: View = { id: u.id }
      if (u.name !== undefined) view.name = u.name
      if (u.email !== undefined) view.email = u.email
      return view
    })
    .sort((a, b) => String(a.id).localeCompare(String(b.id)))

/** Syncs `d` until it is on its server's generation (a move, forward or back, is one round). */
async function onServerGeneration(d: DevicePeer, server: ServerPeer): Promise<void> {
  const want = server.generation.id
  const on = (): string =>
    (d.replica.record('sync', 'generation') as { id?: string } | undefined)?.id ?? ''
  for (let round = 0; on() !== want; round++) {
    if (round === 20) throw new Error(`${d.id} never moved to generation ${server.generation.n}`)
    await d.sync.delta().catch(() => undefined)
  }
}

async function runCase(c: Case): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'rostersync-restore-prop-'))
  dirs.push(dir)
  const data = join(dir, 'server')
  const open: Array<ServerPeer | DevicePeer> = []
  try {
    let server = await createServer({ dataDir: data, port: 0, siteKey: SITE_KEY })
    open.push(server)
    const port = Number(new URL(server.url).port)
    for (const id of [...U, ...X]) await server.users.put({ id, name: `User ${id}` })
    const devices: DevicePeer[] = []
    for (const id of DEVICES) {
      const d = await createDevice({
        id,
        dataDir: join(dir, id),
        server: server.url,
        siteKey: SITE_KEY,
        // With `lan`, D dials E over the LAN (127.0.0.1): each hears the
        // other's writes and the server's, relayed, as well as directly.
        ...(c.lan
          ? { lan: { enabled: true, mdns: false, peers: devices.flatMap((e) => e.lanAddresses) } }
          : {}),
        // D's clock runs 20 minutes ahead (within what a server accepts):
        // the server's stamps follow D's, so after the restore they are
        // below the rolled-back ones.
        ...(id === 'D' ? { clock: clockAhead(20 * 60_000) } : {}),
      })
      open.push(d)
      devices.push(d)
      await d.sync.whenReady()
    }
    const filled = new Map<string, string>()
    const filledIn = new Map<string, Phase>()
    /** `${device}:${user}` -> the phase of the local delete that took. */
    const deletedIn = new Map<string, Phase>()
    // Two rounds: what one device's round brought the server (a fill it
    // adopted) reaches the other in the second, not only by a live push
    // that may come after the other's next write.
    const idle = async (): Promise<void> => {
      for (let round = 0; round < 2; round++) for (const d of devices) await d.sync.whenIdle()
    }
    const compactHistory = async (): Promise<void> => {
      await server.compactHistory()
      for (const d of devices) await onServerGeneration(d, server)
    }
    const phase = async (p: Phase): Promise<void> => {
      for (const [k, [i, to]] of c.renames[p].entries())
        await server.users.patch(U[i] as string, { name: renamed(to, p, k) })
      for (const [i, op, to] of c.xOps[p]) {
        const id = X[i] as string
        if (op === 'put') await server.users.put({ id, name: to })
        else if (server.users.get(id) !== undefined) await server.users.delete(id)
      }
      if (p === 'B') for (const id of W) await server.users.put({ id, name: `User ${id}` })
      if (c.compact[p] === 'early') await compactHistory()
      await idle()
      const fills = [
        ...c.fills.map((f, i) => ({ ...f, id: U[i] as string })),
        ...c.wFills.map((f, i) => ({ ...f, id: W[i] as string })),
      ]
      for (const f of fills) {
        if (f.phase !== p) continue
        const d = devices[f.device] as DevicePeer
        // A fill of a user the device does not show (a W user it dropped
        // with the restore) is refused: it never took.
        if (d.users.get(f.id) === undefined) continue
        const email = `${d.id}-${f.id}@example.com`
        await d.users.patch(f.id, { email })
        filled.set(f.id, email)
        filledIn.set(f.id, p)
      }
      await idle()
      for (const [i, phases] of c.deletes.entries())
        for (const [k, d] of devices.entries()) {
          const id = U[i] as string
          if (phases[k] !== p || deletedIn.has(`${d.id}:${id}`)) continue
          if (await d.users.delete(id)) deletedIn.set(`${d.id}:${id}`, p)
        }
      await idle()
      if (c.compact[p] === 'late') await compactHistory()
    }

    await phase('A')
    if (c.hot) {
      // The backup: a copy of the running server's directory (B's
      // operations then follow the backup's under the same clientID).
      await cp(data, join(dir, 'backup'), { recursive: true })
    } else {
      // The backup: a copy of the stopped server's directory.
      await server.close()
      await cp(data, join(dir, 'backup'), { recursive: true })
      server = await createServer({ dataDir: data, port, siteKey: SITE_KEY })
      open.push(server)
    }
    await phase('B')
    // The restore: the directory as it was at the backup.
    await server.close()
    await rm(data, { recursive: true, force: true })
    await cp(join(dir, 'backup'), data, { recursive: true })
    server = await createServer({ dataDir: data, port, siteKey: SITE_KEY })
    open.push(server)
    // The devices come back before the server writes again (a compaction
    // before they do hides the restore from them: test/server-restore.test.ts).
    for (const d of devices) {
      await onServerGeneration(d, server)
      await d.sync.delta().catch(() => undefined)
    }
    await phase('C')
    // Two rounds: a device's carried entries reach the server in the
    // first; what the server adopted of them reaches the other device in
    // the second.
    for (let round = 0; round < 2; round++)
      for (const d of devices) {
        await d.sync.delta()
        await d.sync.whenIdle()
      }

    const want = expected(c, filled)
    expect(rosterOf(server)).toEqual(want)
    for (const d of devices) {
      // Rule 3: what the device deleted locally stays hidden on it until a
      // surviving server change after the delete.
      const shown = want.filter((view) => {
        const i = (U as readonly string[]).indexOf(String(view.id))
        const p = deletedIn.get(`${d.id}:${String(view.id)}`)
        return i < 0 || p === undefined || !hides(c, i, p, filledIn.get(String(view.id)))
      })
      expect({ device: d.id, roster: rosterOf(d) }).toEqual({ device: d.id, roster: shown })
    }
  } finally {
    for (const peer of open.reverse()) await peer.close().catch(() => undefined)
  }
}

describe('a server restored from a backup, random histories', () => {
  it(`ends with the roster the rules give on every peer (seed ${seed})`, async () => {
    console.log(
      `server-restore-property: seed ${seed} — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/server-restore-property.test.ts`,
    )
    await fc.assert(fc.asyncProperty(caseArb, runCase), { seed, numRuns: RUNS, endOnFailure: true })
  }, 240_000)
})
