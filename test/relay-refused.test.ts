/**
 * A device that relayed a LAN peer's write the server then refuses (its
 * writer revoked or forgotten meanwhile) still completes its syncs: its own
 * changes are in, and the rest is not its to deliver. A black-box probe
 * found every later `whenIdle()`, `delta()` and `full()` of the relaying
 * device rejecting `SYNC_FAILED` for good ("the server did not take every
 * change of this device"), a restart included: its push waited for the
 * server to hold everything its document held, the refused writer's items
 * too, so it could never full-sync again.
 *
 * Real parts: a server on LevelDB admits both devices over WebSocket on
 * 127.0.0.1; the devices meet over an in-memory LAN link while the server
 * is out of their reach.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'

const SITE_KEY = 'relay-refused-site-key-0123'
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-relay-refused-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('a device that relayed a write its server refuses', () => {
  it.each([
    ['revoke', 'revoked'],
    ['forget', 'forgotten'],
  ] as const)(
    'syncs on after devices.%s of the writer (%s): its own changes reach the server, every sync succeeds',
    async (how, _participle) => {
      const server = await createServer({ dataDir: join(dir, `server-${how}`), siteKey: SITE_KEY })
      const peers: DevicePeer[] = []
      const open = async (id: string, withServer: boolean): Promise<DevicePeer> => {
        const device = await createDevice({
          id,
          dataDir: join(dir, `${how}-${id}`),
          siteKey: SITE_KEY,
          ...(withServer ? { server: server.url } : {}),
        })
        peers.push(device)
        return device
      }
      try {
        await server.users.put({ id: 'u1', name: 'Ann' })
        for (const id of ['A1', 'B1']) {
          const device = await open(id, true)
          await device.sync.whenReady()
          await device.close()
        }
        // Out of the server's reach, A1 fills a field; B1 takes it over the LAN.
        const a = await open('A1', false)
        const b = await open('B1', false)
        const [toB, toA] = memoryPair('A1', 'B1')
        a.attachLan(toB, 'B1')
        b.attachLan(toA, 'A1')
        await a.users.patch('u1', { email: 'a1@example.com' })
        await eventually(() => expect(b.users.get('u1')?.email).toBe('a1@example.com'))
        await a.close()
        await b.close()
        // The administrator takes A1 out; B1 comes back to its server.
        if (how === 'revoke') await server.devices.revoke('A1')
        else await server.devices.forget('A1')
        const back = await open('B1', true)
        await back.sync.whenIdle().catch(() => undefined) // A1's envelope is refused
        await back.users.patch('u1', { phone: '+1 555 0100' })
        await back.sync.whenIdle()
        expect(server.users.get('u1')?.phone).toBe('+1 555 0100')
        expect(server.users.get('u1')?.email).toBeUndefined()
        await back.sync.delta()
        await back.sync.full()
        expect(back.sync.status().deviceToServer.state).toBe('success')
        expect(back.users.get('u1')?.phone).toBe('+1 555 0100')
      } finally {
        for (const peer of peers) await peer.close()
        await server.close()
      }
    },
    60_000,
  )
})
