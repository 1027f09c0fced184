/**
 * A device keeps the name it was given last (acceptance probe): opened
 * again without one, as a routine `rostersync device --data <dir> --delta`
 * does, it showed in its server's registry under its id, and a search by
 * the name found nothing.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDevice } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'

const SITE_KEY = 'device-name-key'
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-device-name-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe("a device's name", () => {
  it('is kept when the device is opened again without one, and a later name replaces it', async () => {
    const server = await createServer({ dataDir: join(dir, 'server'), siteKey: SITE_KEY })
    const open = (name?: string) =>
      createDevice({
        id: 'T-1',
        ...(name === undefined ? {} : { name }),
        dataDir: join(dir, 'device'),
        server: server.url,
        siteKey: SITE_KEY,
        mode: 'periodic',
      })
    const named = (): string | undefined => server.devices.list().find((d) => d.id === 'T-1')?.name
    try {
      let device = await open('Lobby Door')
      await device.sync.full()
      expect(named()).toBe('Lobby Door')
      await device.close()
      device = await open()
      expect(device.name).toBe('Lobby Door')
      await device.sync.delta()
      expect(named()).toBe('Lobby Door')
      expect(server.devices.list({ nameContains: 'lobby' }).map((d) => d.id)).toEqual(['T-1'])
      await device.close()
      device = await open('Gate 5')
      await device.sync.delta()
      await eventually(() => expect(named()).toBe('Gate 5'))
      await device.close()
    } finally {
      await server.close()
    }
  }, 60_000)
})
