/**
 * WriterClients counts a writer's clientIDs from the document, however
 * they came (peers/writer-clients.ts): a LAN peer took a writer's 513th
 * clientID when the other 512 had come through its server's merged
 * answers, which it never counted, and relayed to the server envelopes it
 * refused (a hostile probe).
 */
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { limits } from '../core/limits.js'
import { WriterClients } from '../peers/writer-clients.js'
import { withLimits } from './helpers/limits.js'

/** Writes one entry into `root` of `doc` under `client`, as an update applied from elsewhere. */
function writeUnder(doc: Y.Doc, client: number, root: string, key: string): void {
  const other = new Y.Doc()
  other.clientID = client
  other.getMap(root).set(key, { e: 0, f: { name: key }, s: { name: 1 } })
  Y.applyUpdate(doc, Y.encodeStateAsUpdate(other))
}

describe('WriterClients', () => {
  it('counts the clientIDs a document gained without it, before it admits more', () => {
    withLimits(limits, { writerClientIdsMax: 3 })
    const doc = new Y.Doc()
    const clients = new WriterClients()
    clients.admit(doc, 'D9', [101])
    writeUnder(doc, 101, 'u:D9', 'a')
    // Two more come another way (a server's merged answer).
    writeUnder(doc, 102, 'u:D9', 'b')
    writeUnder(doc, 103, 'u:D9', 'c')
    writeUnder(doc, 201, 'u:D2', 'd')
    expect(clients.mostHeld(doc)).toBe(3)
    expect(() => clients.admit(doc, 'D9', [104])).toThrow(/writes under 4 Yjs clientIDs/)
    expect(clients.refusal(doc, 'D9', [104])?.code).toBe('FORBIDDEN_WRITE')
    // Those it holds still go, and another writer has its own count.
    expect(() => clients.admit(doc, 'D9', [102, 103])).not.toThrow()
    expect(() => clients.admit(doc, 'D2', [202, 203])).not.toThrow()
    // A refusal counts nothing.
    expect(clients.refusal(doc, 'D2', [204])).toBeDefined()
    expect(clients.mostHeld(doc)).toBe(3)
  })
})
