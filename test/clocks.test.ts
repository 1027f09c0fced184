/**
 * Clock feeding (issue 12): every peer on its own injected clock, skewed
 * ahead and behind. A device whose clock is slow, editing after it has seen
 * another device's edit, wins: its edit is causally later, and the hybrid
 * logical clock stamps it past the one it saw, whatever the wall clocks say
 * (SEMANTICS.md, rule 2: "the latest write wins (hybrid logical clock)").
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { Clock } from '../core/clock.js'
import type { DevicePeer } from '../peers/create-device.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'
import { ManualClock } from './helpers/manual-clock.js'
import { memorySite, type MemorySite } from './helpers/memory-site.js'

const MINUTE = 60_000
const sites: MemorySite[] = []
afterEach(async () => {
  for (const s of sites.splice(0).reverse()) await s.close()
})

/** `base` seen through a wall clock that is `offsetMs` ahead (or, negative, behind). */
function skewed(base: ManualClock, offsetMs: number): Clock {
  return {
    now: () => base.now() + offsetMs,
    setTimeout: (fn, ms) => base.setTimeout(fn, ms),
    clearTimeout: (handle) => base.clearTimeout(handle),
  }
}

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
