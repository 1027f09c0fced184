/**
 * The plain-Yjs baseline of the enrolment benches: one Y.Map, each round of
 * records in one transaction, its update appended to LevelDB with
 * `sync: true` (as durable as rostersync's acknowledged writes).
 */
import { Level } from 'level'
import * as Y from 'yjs'
import type { BenchRecord } from './records.js'

/** The key of the `seq`-th appended update. */
export const plainUpdateKey = (seq: number): string => `y/u/${seq.toString().padStart(15, '0')}`

/** A plain Yjs document whose every round of records is an appended update. */
export interface PlainYjsLog {
  readonly doc: Y.Doc
  readonly db: Level<string, Uint8Array>
  /** Updates appended so far (keys `plainUpdateKey(0 .. n-1)`). */
  readonly appended: () => number
  write(round: readonly BenchRecord[]): Promise<void>
}

/** Opens LevelDB in `dataDir` and appends each round to map `mapName`. */
export async function openPlainYjsLog(dataDir: string, mapName: string): Promise<PlainYjsLog> {
  const db = new Level<string, Uint8Array>(dataDir, { keyEncoding: 'utf8', valueEncoding: 'view' })
  await db.open()
  const doc = new Y.Doc()
  const map = doc.getMap<unknown>(mapName)
  let seq = 0
  return {
    doc,
    db,
    appended: () => seq,
    write: async (round) => {
      let update: Uint8Array | undefined
      const capture = (u: Uint8Array): void => {
        update = u
      }
      doc.on('update', capture)
      doc.transact(() => {
        for (const record of round) map.set(record.id, record)
      })
      doc.off('update', capture)
      if (update === undefined) throw new Error('the transaction produced no update')
      await db.batch([{ type: 'put', key: plainUpdateKey(seq++), value: update }], { sync: true })
    },
  }
}
