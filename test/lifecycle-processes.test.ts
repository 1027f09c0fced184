/**
 * The sync lifecycle with real processes over loopback WebSocket: the server
 * killed in the middle of a full sync (failed, then a retried success), and
 * a server whose store fails (save-to-server-failed; the device keeps its
 * value and the retry saves it).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { SyncStatus } from '../peers/device-sync.js'
import { spawnPeer, type PeerHandle } from './fixtures/peer-handle.js'
import { eventuallyValue } from './helpers/eventually.js'

/** This file's processes get 30 s by default (a full sync of 5,000 users). */
const eventually = <T>(
  probe: () => Promise<T>,
  ok: (v: T) => boolean,
  timeoutMs = 30_000,
  everyMs = 50,
): Promise<T> => eventuallyValue(probe, ok, timeoutMs, everyMs)

const SITE_KEY = 'lifecycle-process-key'
let dir = ''
const handles: PeerHandle[] = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-life-'))
})
afterAll(async () => {
  await Promise.all(handles.map((h) => h.kill().catch(() => undefined)))
  await rm(dir, { recursive: true, force: true })
})

async function spawn(options: Record<string, unknown>): Promise<PeerHandle> {
  const h = await spawnPeer({ siteKey: SITE_KEY, ...options })
  handles.push(h)
  return h
}

it('the server dying during a full sync gives failed, then a retried success', async () => {
  const serverDir = join(dir, 'server-a')
  const server = await spawn({ role: 'server', dataDir: serverDir })
  const url = server.ready.url as string
  const port = Number(new URL(url).port)
  const users = 5_000
  await server.call('bulkPut', users, 'u')
  const device = await spawn({ role: 'device', id: 'D1', dataDir: join(dir, 'd1'), server: url })
  await device.call('whenIdle')
  expect((await device.call<SyncStatus>('syncStatus')).offlineReady).toBe(true)

  // Freeze the server, so the full sync is surely under way when it dies.
  server.child.kill('SIGSTOP')
  const full = device.call('syncFull').then(
    () => 'resolved',
    (error: { code?: string }) => error.code ?? 'rejected',
  )
  await eventually(
    () => device.call<SyncStatus>('syncStatus'),
    (s) => s.serverToDevice.state === 'in-progress' && s.deviceToServer.state === 'in-progress',
  )
  await server.kill('SIGKILL')
  expect(await full).toBe('SYNC_FAILED')
  const failed = await device.call<SyncStatus>('syncStatus')
  expect(failed.serverToDevice).toMatchObject({ state: 'failed', error: { code: 'SYNC_FAILED' } })
  expect(failed.deviceToServer).toMatchObject({ state: 'failed', error: { code: 'SYNC_FAILED' } })
  // It had completed one before: it stays allowed to work offline.
  expect(failed.offlineReady).toBe(true)

  await spawn({ role: 'server', dataDir: serverDir, port })
  // No call from the test: the device retries by itself (backoff).
  const done = await eventually(
    () => device.call<SyncStatus>('syncStatus'),
    (s) => s.serverToDevice.state === 'success' && s.deviceToServer.state === 'success',
    90_000,
    200,
  )
  expect(done.deviceToServer.state).toBe('success')
  // The retry was a full sync again.
  expect(done.lastFullSyncAt).toBe(done.serverToDevice.at)
  expect((await device.call<unknown[]>('list')).length).toBe(users)
  const events = await device.call<Array<{ type: string }>>('events', {
    type: ['sync-failed', 'sync-succeeded'],
  })
  const types = events.map((e) => e.type)
  expect(types.lastIndexOf('sync-failed')).toBeLessThan(types.lastIndexOf('sync-succeeded'))
}, 180_000)

it('a server that cannot save gives save-to-server-failed; the device keeps its value', async () => {
  const server = await spawn({ role: 'server', dataDir: join(dir, 'server-b'), faultyStore: true })
  const url = server.ready.url as string
  await server.call('put', { id: 'u1', name: 'Ann' })
  const device = await spawn({ role: 'device', id: 'D2', dataDir: join(dir, 'd2'), server: url })
  await device.call('whenIdle')

  await server.call('failStore', true)
  await device.call('patch', 'u1', { phone: '+44 20 1234' })
  await eventually(
    () => device.call<unknown[]>('events', { type: 'save-to-server-failed' }),
    (events) => events.length > 0,
  )
  expect(await device.call('get', 'u1')).toEqual({ id: 'u1', name: 'Ann', phone: '+44 20 1234' })
  expect(await server.call('get', 'u1')).toEqual({ id: 'u1', name: 'Ann' })
  const failed = await device.call('syncDelta').then(
    () => 'resolved',
    (error: { code?: string }) => error.code,
  )
  expect(failed).toBe('SAVE_TO_SERVER_FAILED')

  await server.call('failStore', false)
  await eventually(
    () => server.call('get', 'u1'),
    (u) => (u as { phone?: string } | null)?.phone === '+44 20 1234',
    90_000,
    200,
  )
  await eventually(
    () => device.call<SyncStatus>('syncStatus'),
    (s) => s.deviceToServer.state === 'success',
    90_000,
    200,
  )
}, 180_000)
