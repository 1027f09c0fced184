/**
 * The simulator's oracle (sim/oracle/): it imports nothing of the code it
 * checks, and it flags hand-written histories whose outcome breaks a rule
 * (each one the shape of a bug it must catch in a run: a causally later
 * write that loses, a device delete that leaks, a device-specific value that
 * leaves its device, rule 3 after a full sync, rule 4).
 */
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { checkAgainstOracle, type PeerViews, type ReplicatedPart } from '../sim/oracle/check.js'
import type {
  Dot,
  History,
  LifecycleEvent,
  ServerChange,
  WriteOp,
  WriteRecord,
} from '../sim/oracle/history.js'

const here = dirname(fileURLToPath(import.meta.url))
const oracleDir = resolve(here, '../sim/oracle')

describe('oracle independence', () => {
  it('imports nothing outside sim/oracle/ (no core/, peers/, server-peer/)', () => {
    const files = readdirSync(oracleDir).filter((f) => f.endsWith('.ts'))
    expect(files.length).toBeGreaterThan(0)
    const outside: string[] = []
    for (const file of files) {
      const text = readFileSync(join(oracleDir, file), 'utf8')
      const specifiers = [
        ...text.matchAll(/\bfrom\s+['"]([^'"]+)['"]/g),
        ...text.matchAll(/\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g),
        ...text.matchAll(/^\s*import\s+['"]([^'"]+)['"]/gm),
      ].map((m) => m[1] as string)
      for (const spec of specifiers) {
        if (!spec.startsWith('.')) {
          outside.push(`${file}: ${spec} (a package)`)
          continue
        }
        const target = relative(oracleDir, resolve(oracleDir, spec))
        if (target.startsWith('..')) outside.push(`${file}: ${spec}`)
      }
    }
    expect(outside).toEqual([])
  })
})

// ------------------------------------------------------------ hand-written histories

const SCHEMA = ['name', 'title', 'department']

/** Builds a history step by step; clients: server 100, d1 1, d2 2. */
class Story {
  seq = 0
  readonly writes: WriteRecord[] = []
  readonly changes: ServerChange[] = []
  readonly knowledge: Array<{ seq: number; vector: Map<number, number> }> = []
  readonly lifecycle: LifecycleEvent[] = []
  readonly clocks = new Map<number, number>()

  /** A write that changed the replicated document (a new operation of `client`). */
  write(writer: string, client: number, op: WriteOp, knows: Dot[], stamp: number): WriteRecord {
    const clock = this.clocks.get(client) ?? 0
    this.clocks.set(client, clock + 1)
    const w: WriteRecord = {
      seq: ++this.seq,
      writer,
      op,
      dot: { client, clock },
      knows: vector(knows),
      stamp,
      calledAt: this.seq,
      ackedAt: this.seq,
    }
    this.writes.push(w)
    if (writer === 'server' && op.kind !== 'policy')
      this.changes.push({ seq: w.seq, user: op.user, dot: { client, clock }, byPolicy: false })
    return w
  }

  /** A local-only write (a device's delete or device-specific edit). */
  local(writer: string, op: WriteOp, knows: Dot[]): WriteRecord {
    const w: WriteRecord = {
      seq: ++this.seq,
      writer,
      op,
      dot: undefined,
      knows: vector(knows),
      stamp: undefined,
      calledAt: this.seq,
      ackedAt: this.seq,
    }
    this.writes.push(w)
    return w
  }

  /** The server adopted (a server change of `user` under a new operation). */
  adoption(user: string, knows: Dot[]): Dot {
    this.knowledge.push({ seq: ++this.seq, vector: vector(knows) })
    const clock = this.clocks.get(100) ?? 0
    this.clocks.set(100, clock + 1)
    const dot = { client: 100, clock }
    this.changes.push({ seq: ++this.seq, user, dot, byPolicy: false })
    return dot
  }

  /**
   * `w` (its writer's latest operation) ran in memory and went down with its
   * peer before it was durable: never acknowledged, and no peer holds it.
   */
  lose(w: WriteRecord): WriteRecord {
    const dot = dotOf(w)
    expect(this.clocks.get(dot.client)).toBe(dot.clock + 1)
    this.clocks.set(dot.client, dot.clock)
    const lost = { ...w, ackedAt: undefined }
    this.writes[this.writes.indexOf(w)] = lost
    return lost
  }

  /** A full sync that completed now, called at `calledAt` (default: now). */
  fullSync(device: string, calledAt?: number): void {
    const seq = ++this.seq
    this.lifecycle.push({ kind: 'full-sync', seq, device, calledAt: calledAt ?? seq, ackedAt: seq })
  }

  history(): History {
    const final = new Map<number, number>(this.clocks)
    return {
      server: 'server',
      devices: ['d1', 'd2'],
      schemaFields: SCHEMA,
      writes: this.writes,
      serverChanges: this.changes,
      serverKnowledge: this.knowledge,
      lifecycle: this.lifecycle,
      final,
    }
  }
}

const dotOf = (w: WriteRecord): Dot => w.dot as Dot

function vector(dots: readonly Dot[]): Map<number, number> {
  const v = new Map<number, number>()
  for (const d of dots) v.set(d.client, Math.max(v.get(d.client) ?? 0, d.clock + 1))
  return v
}

/** Every peer shows `views` (user -> view), but for the overrides. */
function peers(
  views: Record<string, Record<string, unknown> | undefined>,
  overrides: Record<string, Record<string, Record<string, unknown> | undefined>> = {},
): PeerViews[] {
  return ['server', 'd1', 'd2'].map((peer) => {
    const mine = { ...views, ...overrides[peer] }
    return {
      peer,
      view: (user: string) => mine[user],
      users: () => Object.keys(mine).filter((u) => mine[u] !== undefined),
    }
  })
}

const noParts = (): undefined => undefined
const rules = (history: History, views: PeerViews[], parts: ReplicatedPart = noParts): string[] =>
  checkAgainstOracle(history, views, parts).map((v) => `${v.rule}@${v.peer ?? ''}`)

describe('oracle: which write wins', () => {
  /**
   * d1 enrols u1 (fast clock, stamp 2000); d2 sees it and renames the user
   * (slow clock); the server then learns both at once and adopts the name.
   */
  function story(d2Stamp: number): History {
    const s = new Story()
    const a = s.write('d1', 1, { kind: 'put', user: 'u1', fields: { name: 'Ann' } }, [], 2000)
    const b = s.write(
      'd2',
      2,
      { kind: 'patch', user: 'u1', fields: { name: 'Bo' } },
      [dotOf(a)],
      d2Stamp,
    )
    s.adoption('u1', [dotOf(a), dotOf(b)])
    return s.history()
  }

  it('the causally later write wins; views that show it pass', () => {
    expect(rules(story(2001), peers({ u1: { id: 'u1', name: 'Bo' } }))).toEqual([])
  })

  it('flags a causally later write that lost to a faster clock (HLC read one too low)', () => {
    // d2's stamp equals d1's although d2 had seen d1's write: with
    // "d1" < "d2" the tie went to d2 here, so make d2 stamp lower.
    const found = rules(story(1999), peers({ u1: { id: 'u1', name: 'Ann' } }))
    expect(found).toContain('oracle-stamp-order@d2')
    expect(found).toContain('oracle-view@server')
    expect(found).toContain('oracle-view@d1')
  })
})

describe('oracle: writes carried by one transaction', () => {
  it('each counts with its own fields, though they share the seq', () => {
    // A full sync held d1's puts of u1 and u2 and released them together:
    // one transaction, one operation id, one seq in the history.
    const s = new Story()
    const a = s.write('d1', 1, { kind: 'put', user: 'u1', fields: { name: 'Ann' } }, [], 1000)
    s.writes.push({ ...a, op: { kind: 'put', user: 'u2', fields: { name: 'Bo' } } })
    s.adoption('u1', [dotOf(a)])
    const views = { u1: { id: 'u1', name: 'Ann' }, u2: { id: 'u2', name: 'Bo' } }
    expect(rules(s.history(), peers(views))).toEqual([])
    expect(rules(s.history(), peers({ ...views, u2: { id: 'u2', name: 'Ann' } }))).toContain(
      'oracle-view@server',
    )
  })

  it('the one called later is the later one (they ran in their call order)', () => {
    // d1's patch of u1 and then its put of u1, which clears the title.
    const s = new Story()
    const a = s.write(
      'd1',
      1,
      { kind: 'patch', user: 'u1', fields: { name: 'Ann', title: 'boss' } },
      [],
      1000,
    )
    s.writes.push({
      ...a,
      op: { kind: 'put', user: 'u1', fields: { name: 'Bo' } },
      calledAt: a.calledAt + 1,
    })
    s.adoption('u1', [dotOf(a)])
    expect(rules(s.history(), peers({ u1: { id: 'u1', name: 'Bo' } }))).toEqual([])
    expect(rules(s.history(), peers({ u1: { id: 'u1', name: 'Ann', title: 'boss' } }))).toContain(
      'oracle-view@server',
    )
  })
})

describe('oracle: stand-in stamps (a write its device replaced before rewriting its stamps)', () => {
  /** d1 puts u1 twice, the second after seeing the first, both at stamp 600.5. */
  function story(standIn: boolean): History {
    const s = new Story()
    const a = s.write('d1', 1, { kind: 'put', user: 'u1', fields: { name: 'Ann' } }, [], 600.5)
    const b = s.write(
      'd1',
      1,
      { kind: 'put', user: 'u1', fields: { name: 'Bo' } },
      [dotOf(a)],
      600.5,
    )
    const c = s.write('d1', 1, { kind: 'put', user: 'u1', fields: { name: 'Cy' } }, [dotOf(b)], 601)
    s.writes.splice(0, 2, { ...a, stampStandIn: standIn }, { ...b, stampStandIn: standIn })
    s.adoption('u1', [dotOf(c)])
    return s.history()
  }

  it('two equal stand-ins are not out of order; the write after them stamps above', () => {
    expect(rules(story(true), peers({ u1: { id: 'u1', name: 'Cy' } }))).toEqual([])
  })

  it('equal stamps that are not stand-ins still are', () => {
    expect(rules(story(false), peers({ u1: { id: 'u1', name: 'Cy' } }))).toEqual([
      'oracle-stamp-order@d1',
    ])
  })
})

describe('oracle: device deletes (rule 3)', () => {
  function story(): { s: Story; adoption: Dot } {
    const s = new Story()
    const a = s.write(
      'd1',
      1,
      { kind: 'put', user: 'u1', fields: { name: 'Ann', title: 'guard' } },
      [],
      1000,
    )
    const adoption = s.adoption('u1', [dotOf(a)])
    s.local('d2', { kind: 'delete', user: 'u1' }, [dotOf(a), adoption])
    return { s, adoption }
  }
  const shown = { id: 'u1', name: 'Ann', title: 'guard' }

  it('stays on its device: hidden there, shown everywhere else', () => {
    const { s } = story()
    expect(rules(s.history(), peers({ u1: shown }, { d2: { u1: undefined } }))).toEqual([])
  })

  it('flags a delete that leaked as a clear of every field', () => {
    const { s } = story()
    const found = rules(s.history(), peers({ u1: { id: 'u1' } }, { d2: { u1: undefined } }))
    expect(found).toContain('oracle-view@server')
    expect(found).toContain('oracle-view@d1')
  })

  it('flags a device that shows again a user it deleted, the server unchanged', () => {
    const { s } = story()
    expect(rules(s.history(), peers({ u1: shown }))).toEqual(['oracle-rule3@d2'])
  })

  it('flags a device that still hides the user after a full sync', () => {
    const { s } = story()
    s.fullSync('d2')
    expect(rules(s.history(), peers({ u1: shown }, { d2: { u1: undefined } }))).toEqual([
      'oracle-rule3-full-sync@d2',
    ])
  })

  it('accepts either outcome for a delete made while a full sync ran', () => {
    const { s } = story()
    s.fullSync('d2', 0)
    expect(rules(s.history(), peers({ u1: shown }, { d2: { u1: undefined } }))).toEqual([])
    expect(rules(s.history(), peers({ u1: shown }))).toEqual([])
  })

  // Seed 343 of the swarm sweep: the full sync the workload asked for
  // failed before the delete, the device's own retry completed after it.
  it("shows the user again after the device's own retry of a failed full sync", () => {
    const { s } = story()
    s.lifecycle.unshift({
      kind: 'full-sync',
      seq: 0,
      device: 'd2',
      calledAt: 0,
      ackedAt: undefined,
    })
    expect(rules(s.history(), peers({ u1: shown }, { d2: { u1: undefined } }))).toEqual([])
    s.fullSync('d2')
    expect(rules(s.history(), peers({ u1: shown }))).toEqual([])
    expect(rules(s.history(), peers({ u1: shown }, { d2: { u1: undefined } }))).toEqual([
      'oracle-rule3-full-sync@d2',
    ])
  })

  // Seed 1145 of the 1,000-seed swarm: d04 deleted u007, a full sync showed
  // it again, then d04 went back to a backup taken between the delete and
  // the full sync. The restore undid the full sync, not the delete: d04
  // hides u007 again, and rightly (the oracle took the full sync as kept).
  it('hides the user again after a restore to a backup taken between the delete and a full sync', () => {
    const { s } = story()
    const backupAt = ++s.seq
    s.fullSync('d2')
    const restoredAt = ++s.seq
    s.lifecycle.push({ kind: 'restore', seq: restoredAt, device: 'd2', backupAt, at: restoredAt })
    expect(rules(s.history(), peers({ u1: shown }, { d2: { u1: undefined } }))).toEqual([])
    expect(rules(s.history(), peers({ u1: shown }))).toEqual(['oracle-rule3@d2'])
  })

  it('accepts either outcome when the backup was taken while a full sync ran', () => {
    const { s } = story()
    const calledAt = ++s.seq
    const backupAt = ++s.seq
    s.fullSync('d2', calledAt)
    const restoredAt = ++s.seq
    s.lifecycle.push({ kind: 'restore', seq: restoredAt, device: 'd2', backupAt, at: restoredAt })
    expect(rules(s.history(), peers({ u1: shown }, { d2: { u1: undefined } }))).toEqual([])
    expect(rules(s.history(), peers({ u1: shown }))).toEqual([])
  })

  it('keeps a full sync made before the backup', () => {
    const { s } = story()
    s.fullSync('d2')
    const backupAt = ++s.seq
    const restoredAt = ++s.seq
    s.lifecycle.push({ kind: 'restore', seq: restoredAt, device: 'd2', backupAt, at: restoredAt })
    expect(rules(s.history(), peers({ u1: shown }))).toEqual([])
    expect(rules(s.history(), peers({ u1: shown }, { d2: { u1: undefined } }))).toEqual([
      'oracle-rule3-full-sync@d2',
    ])
  })

  it('accepts either outcome after a put again that was lost with its device', () => {
    const { s, adoption } = story()
    const again = s.write(
      'd2',
      2,
      { kind: 'put', user: 'u1', fields: { name: 'Ann', title: 'guard' } },
      [adoption],
      2000,
    )
    s.lose(again)
    expect(rules(s.history(), peers({ u1: shown }, { d2: { u1: undefined } }))).toEqual([])
    expect(rules(s.history(), peers({ u1: shown }))).toEqual([])
  })

  it('shows the user again once the server changed it', () => {
    const { s, adoption } = story()
    s.write(
      'server',
      100,
      { kind: 'patch', user: 'u1', fields: { department: 'ops' } },
      [adoption],
      3000,
    )
    const after = { ...shown, department: 'ops' }
    expect(rules(s.history(), peers({ u1: after }))).toEqual([])
    expect(rules(s.history(), peers({ u1: after }, { d2: { u1: undefined } }))).toEqual([
      'oracle-rule3@d2',
    ])
  })
})

describe('oracle: server deletes (rule 4)', () => {
  it('flags a device edit made without seeing the delete that brings the user back', () => {
    const s = new Story()
    const put = s.write(
      'server',
      100,
      { kind: 'put', user: 'u1', fields: { name: 'Ann' } },
      [],
      1000,
    )
    const del = s.write('server', 100, { kind: 'delete', user: 'u1' }, [dotOf(put)], 2000)
    // d1 saw the put, not the delete.
    s.write('d1', 1, { kind: 'patch', user: 'u1', fields: { title: 'guard' } }, [dotOf(put)], 3000)
    expect(rules(s.history(), peers({}))).toEqual([])
    expect(rules(s.history(), peers({ u1: { id: 'u1', title: 'guard' } }))).toContain(
      'oracle-view@server',
    )
    // Enrolled again after seeing the delete: a new user (rule 2 applies).
    const again = s.write(
      'd2',
      2,
      { kind: 'put', user: 'u1', fields: { name: 'Bo' } },
      [dotOf(put), dotOf(del)],
      4000,
    )
    s.adoption('u1', [dotOf(put), dotOf(del), dotOf(again)])
    expect(rules(s.history(), peers({ u1: { id: 'u1', name: 'Bo' } }))).toEqual([])
  })
})

describe('oracle: device-specific fields (rule 5)', () => {
  function build(): { s: Story; policy: WriteRecord; put: WriteRecord; adoption: Dot } {
    const s = new Story()
    const policy = s.write(
      'server',
      100,
      { kind: 'policy', field: 'title', policy: 'device-specific' },
      [],
      1000,
    )
    const put = s.write(
      'd1',
      1,
      { kind: 'put', user: 'u1', fields: { name: 'Ann', title: 'guard' } },
      [dotOf(policy)],
      2000,
    )
    const adoption = s.adoption('u1', [dotOf(policy), dotOf(put)])
    return { s, policy, put, adoption }
  }
  const story = (): History => build().s.history()

  it('shows a device-specific value only on its device', () => {
    expect(
      rules(
        story(),
        peers(
          { u1: { id: 'u1', name: 'Ann' } },
          { d1: { u1: { id: 'u1', name: 'Ann', title: 'guard' } } },
        ),
      ),
    ).toEqual([])
  })

  it('flags a device-specific value that reached other peers', () => {
    const found = rules(story(), peers({ u1: { id: 'u1', name: 'Ann', title: 'guard' } }))
    expect(found).toEqual(['oracle-device-specific@server', 'oracle-device-specific@d2'])
  })

  it('flags a device-specific value in the device replicated part', () => {
    const views = peers(
      { u1: { id: 'u1', name: 'Ann' } },
      { d1: { u1: { id: 'u1', name: 'Ann', title: 'guard' } } },
    )
    const parts = (writer: string, user: string) =>
      writer === 'd1' && user === 'u1' ? { name: 'Ann', title: 'guard' } : undefined
    expect(rules(story(), views, parts)).toEqual(['oracle-local-leaked@d1'])
  })

  // Seed 346 of the swarm sweep: a device put a device-specific value and
  // crashed with that write in flight; neither it nor its transaction
  // survived, and the oracle took the lost value as the device's latest.
  describe('a later write of d1 that was never acknowledged', () => {
    function later(lost: boolean): History {
      const { s, policy, put, adoption } = build()
      const again = s.write(
        'd1',
        1,
        { kind: 'put', user: 'u1', fields: { name: 'Ann', title: 'boss' } },
        [dotOf(policy), dotOf(put), adoption],
        3000,
      )
      if (lost) s.lose(again)
      else s.writes[s.writes.indexOf(again)] = { ...again, ackedAt: undefined }
      return s.history()
    }
    const others = { u1: { id: 'u1', name: 'Ann' } }
    const d1Shows = (title: string) => ({ d1: { u1: { id: 'u1', name: 'Ann', title } } })

    it('lost with its peer (no peer holds it): either value may show', () => {
      expect(rules(later(true), peers(others, d1Shows('guard')))).toEqual([])
      expect(rules(later(true), peers(others, d1Shows('boss')))).toEqual([])
    })

    it('whose transaction survived: it took effect, its value must show', () => {
      expect(rules(later(false), peers(others, d1Shows('boss')))).toEqual([])
      expect(rules(later(false), peers(others, d1Shows('guard')))).toEqual([
        'oracle-device-specific@d1',
      ])
    })
  })
})
