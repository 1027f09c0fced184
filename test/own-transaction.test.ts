/**
 * A batch of device updates costs the server one Yjs transaction when it
 * adopts nothing from them (issue 13, 1,000 devices: each transaction walks
 * the state vector, a clientID per device, on both of its sides), and two
 * when it adopts a fill (rule 2), which still lands in the same batch.
 */
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { usersRootName, type DeviceEntry } from '../core/entries.js'
import { asUserId, asWriterId, SERVER_ID } from '../core/ids.js'
import { deviceWrite } from '../core/writes.js'
import { createServer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'

/** Device d1's own part, written in plain Yjs: each call sets fields of one user. */
function device(): (id: string, fields: Record<string, string>) => Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = 777
  const root = doc.getMap<DeviceEntry>(usersRootName(asWriterId('d1')))
  let n = 0
  return (id, fields) => {
    const before = Y.encodeStateVector(doc)
    const key = asUserId(id)
    root.set(key, deviceWrite(root.get(key), 0, new Map(Object.entries(fields)), 10_000 + n++))
    return Y.encodeStateAsUpdate(doc, before)
  }
}

describe("the server's own transaction after device updates", () => {
  it('is skipped when nothing is adopted, and still runs for a fill', async () => {
    const server = await createServer({ store: memoryStore(), siteKey: 'own-tx', listen: false })
    try {
      await server.users.put({ id: 'u1', name: 'Ann', title: 'Chef' })
      await server.replica.drain()
      const write = device()
      let transactions = 0
      const count = (): void => {
        transactions++
      }
      server.replica.doc.on('afterTransaction', count)
      // The server holds a title: the device's one stays in its part.
      await server.replica.applyRemote(write('u1', { title: 'Cook' }))
      expect(transactions).toBe(1)
      expect(server.users.get('u1')?.title).toBe('Chef')
      // An empty field filled by the device: adopted into the server's record.
      transactions = 0
      await server.replica.applyRemote(write('u1', { email: 'ann@example.com' }))
      expect(transactions).toBe(2)
      server.replica.doc.off('afterTransaction', count)
      const own = server.replica.doc.getMap(usersRootName(SERVER_ID)).get('u1') as {
        f: Record<string, unknown>
      }
      expect(own.f.email).toBe('ann@example.com')
      expect(server.users.get('u1')?.email).toBe('ann@example.com')
    } finally {
      await server.close()
    }
  })
})
