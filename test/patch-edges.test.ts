/**
 * Edges of `users.patch` a black-box probe found: a patch of no field is no
 * change (it logged an update with no fields, and restamped the server's
 * entry, which is "the server changed the user": rule 3 showed a user again
 * on the device that deleted it), nor is one that writes what the server
 * holds already; `""` is vacant for every field, as null
 * is (SEMANTICS.md, "vacant"), where a PIN, a date or a status refused it.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { limits } from '../core/limits.js'
import { ManualClock } from './helpers/manual-clock.js'
import { memorySite, type MemorySite } from './helpers/memory-site.js'

let site: MemorySite | undefined
afterEach(async () => {
  await site?.close()
  site = undefined
})

/** A site whose server holds u1 (Ann), and device D1, ready. */
async function annAndDevice() {
  const clock = new ManualClock()
  site = await memorySite(clock)
  const { server } = site
  await server.users.put({ id: 'u1', name: 'Ann' })
  const device = await site.device('D1', clock)
  await device.sync.whenReady()
  return { clock, server, device, site }
}

describe('users.patch', () => {
  it('of no field changes nothing: no event, and a device delete stays (rule 3)', async () => {
    const { server, device } = await annAndDevice()
    await device.users.delete('u1')
    await device.users.put({ id: 'u2', name: 'Own' })
    await device.sync.whenIdle()
    const logged = (peer: typeof server | typeof device) =>
      peer.events.query({ type: 'user-update-succeeded' }).length
    const [serverBefore, deviceBefore] = [logged(server), logged(device)]
    await server.users.patch('u1', {})
    await device.users.patch('u2', {})
    await device.sync.whenIdle()
    expect(device.users.get('u1')).toBeUndefined()
    expect([logged(server), logged(device)]).toEqual([serverBefore, deviceBefore])
    // Still a patch: of a user that does not exist, USER_NOT_FOUND.
    await expect(server.users.patch('nobody', {})).rejects.toMatchObject({
      code: 'USER_NOT_FOUND',
    })
    // A real change shows the user again there.
    await server.users.patch('u1', { email: 'ann@example.com' })
    await device.sync.whenIdle()
    expect(device.users.get('u1')?.email).toBe('ann@example.com')
  })

  it('that writes what the server holds already changes nothing; so does a put of the same record', async () => {
    const { server, device } = await annAndDevice()
    await server.users.patch('u1', { email: 'ann@example.com', groups: ['g1'] })
    await device.sync.whenIdle()
    await device.users.delete('u1')
    const logged = () => server.events.query({ type: 'user-update-succeeded' }).length
    const before = logged()
    // An administrator saving the user again as it is (black-box probe: it
    // showed the user again on every device that had deleted it).
    await server.users.patch('u1', { name: 'Ann' })
    await server.users.patch('u1', { email: 'ann@example.com', groups: ['g1'] })
    await server.users.put({ id: 'u1', name: 'Ann', email: 'ann@example.com', groups: ['g1'] })
    await device.sync.whenIdle()
    expect(logged()).toBe(before)
    expect(device.users.get('u1')).toBeUndefined()
    // A put that leaves a field out clears it: a change.
    await server.users.put({ id: 'u1', name: 'Ann', groups: ['g1'] })
    await device.sync.whenIdle()
    expect(logged()).toBe(before + 1)
    expect(device.users.get('u1')).toEqual({ id: 'u1', name: 'Ann', groups: ['g1'] })
  })

  it('takes "" as vacant for every field: a PIN, a date and a status clear', async () => {
    const clock = new ManualClock()
    site = await memorySite(clock)
    const { server } = site
    await server.users.put({
      id: 'u1',
      name: 'Ann',
      pin: '4711',
      status: 'active',
      validFrom: '2026-01-01',
      email: 'ann@example.com',
    })
    await server.users.patch('u1', { pin: '', status: '', validFrom: '', email: '' })
    expect(server.users.get('u1')).toEqual({ id: 'u1', name: 'Ann' })
    await server.users.put({ id: 'u2', name: 'Bob', pin: '', validUntil: '' })
    expect(server.users.get('u2')).toEqual({ id: 'u2', name: 'Bob' })
    const device = await site.device('D1', clock)
    await device.sync.whenReady()
    await device.users.patch('u2', { pin: '' })
    expect(device.users.get('u2')).toEqual({ id: 'u2', name: 'Bob' })
    // Not a way round the checks: a value that is not vacant is still checked.
    await expect(server.users.patch('u1', { pin: '12' })).rejects.toMatchObject({
      code: 'INVALID_RECORD',
    })
    await expect(server.users.patch('u1', { status: ' ' })).rejects.toMatchObject({
      code: 'INVALID_RECORD',
    })
  })

  it('that would grow a record past its limit is refused, changing nothing; the device still syncs', async () => {
    const { clock, server, device, site: s } = await annAndDevice()
    const photo = new Uint8Array(limits.photoBytesMax).fill(7)
    // Each within the limit, together past it (each patch was taken, and
    // the server then refused the device's part, and all it wrote after).
    const groups = Array.from({ length: limits.groupsPerUserMax }, (_, i) =>
      `${i}`.padEnd(limits.textCharsMax, 'g'),
    )
    for (const peer of [device, server]) {
      const id = peer === device ? 'u1' : 'u2'
      if (peer === server) await server.users.put({ id, name: 'Bob' })
      await peer.users.patch(id, { photo })
      const before = peer.users.get(id)
      const refused = peer.users.patch(id, { groups })
      await expect(refused).rejects.toMatchObject({ code: 'INVALID_RECORD' })
      await expect(refused).rejects.toThrow(/would be \d+ bytes; the limit is 524288/)
      expect(peer.users.get(id)).toEqual(before)
      // A smaller change still goes.
      await peer.users.patch(id, { title: 'Ok' })
    }
    await device.sync.whenIdle()
    expect(server.users.get('u1')?.photo).toEqual(photo)
    expect(server.users.get('u1')?.title).toBe('Ok')
    // Fills of two devices, each within the limit, adopted together past
    // it: the server's record stays editable (an administrator disables
    // the user), though a write may not take a record past the limit.
    await server.users.put({ id: 'u3', name: 'Cid' })
    const other = await s.device('D2', clock)
    await other.sync.whenReady()
    await device.sync.whenIdle()
    await device.users.patch('u3', { photo })
    await other.users.patch('u3', { groups })
    await device.sync.whenIdle()
    await other.sync.whenIdle()
    expect(server.users.get('u3')?.groups).toEqual(groups)
    expect(server.users.get('u3')?.photo).toEqual(photo)
    await server.users.patch('u3', { status: 'disabled' })
    expect(server.users.get('u3')?.status).toBe('disabled')
  }, 60_000)
})

describe('validity dates', () => {
  it('a write that leaves a user valid until before it is valid from is refused, changing nothing', async () => {
    const { server, device } = await annAndDevice()
    const refused = { code: 'INVALID_RECORD' }
    // Swapped in one write: refused on the server and on a device.
    await expect(
      server.users.put({
        id: 'u2',
        name: 'Bob',
        validFrom: '2026-03-01',
        validUntil: '2026-02-01',
      }),
    ).rejects.toMatchObject(refused)
    await expect(
      device.users.put({ id: 'u3', name: 'Cy', validFrom: '2026-03-01', validUntil: '2026-02-01' }),
    ).rejects.toMatchObject(refused)
    expect(server.users.get('u2')).toBeUndefined()
    expect(device.users.get('u3')).toBeUndefined()
    // Against the writer's own value: a patch of one date.
    await server.users.patch('u1', { validFrom: '2026-03-01' })
    await expect(server.users.patch('u1', { validUntil: '2026-02-28' })).rejects.toMatchObject(
      refused,
    )
    expect(server.users.get('u1')?.validUntil).toBeUndefined()
    // A day alone runs through its end: from and until the same day is that day.
    await server.users.patch('u1', { validUntil: '2026-03-01' })
    expect(server.users.get('u1')?.validUntil).toBe('2026-03-01')
    // Times compare as times.
    await server.users.patch('u1', {
      validFrom: '2026-03-01T08:00:00Z',
      validUntil: '2026-03-01T18:00:00Z',
    })
    await expect(
      server.users.patch('u1', { validUntil: '2026-03-01T07:59:59Z' }),
    ).rejects.toMatchObject(refused)
    // A day beside a time is not compared: the day's bounds are local time,
    // which the record does not say (valid from 20:00 New York time on the
    // 1st, until the 1st, is four hours).
    await server.users.patch('u1', {
      validFrom: '2026-03-01T20:00:00-05:00',
      validUntil: '2026-03-01',
    })
    expect(server.users.get('u1')?.validUntil).toBe('2026-03-01')
    // A write of other fields is not held up by the dates.
    await server.users.patch('u1', { title: 'Guard' })
    expect(server.users.get('u1')).toMatchObject({ title: 'Guard', validUntil: '2026-03-01' })
  })
})
