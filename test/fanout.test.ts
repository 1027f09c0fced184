/** Fan-out: one server edit reaches 50 devices connected over WebSocket on 127.0.0.1. */
import { afterAll, expect, it } from 'vitest'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'

const DEVICES = 50
let server: ServerPeer | undefined
const devices: DevicePeer[] = []

afterAll(async () => {
  await Promise.all(devices.map((d) => d.close()))
  await server?.close()
})

async function eventually(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

it(`a server edit reaches ${DEVICES} connected devices`, async () => {
  server = await createServer({ store: memoryStore(), siteKey: 'fan-out' })
  await server.users.put({ id: 'u1', name: 'Ann', department: 'Ops' })
  for (let i = 0; i < DEVICES; i++) {
    devices.push(
      await createDevice({
        id: `D${i}`,
        store: memoryStore(),
        server: server.url,
        siteKey: 'fan-out',
      }),
    )
  }
  await eventually(() => devices.every((d) => d.serverLink?.synced === true), 20_000)
  expect(devices.every((d) => d.users.get('u1')?.department === 'Ops')).toBe(true)
  await server.users.patch('u1', { department: 'Security' })
  await eventually(() => devices.every((d) => d.users.get('u1')?.department === 'Security'), 20_000)
  expect(new Set(devices.map((d) => JSON.stringify(d.users.list())))).toEqual(
    new Set([JSON.stringify([{ id: 'u1', name: 'Ann', department: 'Security' }])]),
  )
  expect(server.devices.list().filter((d) => d.connected)).toHaveLength(DEVICES)
})
