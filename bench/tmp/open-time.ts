import { Level } from 'level'
import * as Y from 'yjs'
const dir = process.argv[2] as string
const mode = process.argv[3]
const t0 = performance.now()
const lap = (what: string) => console.log(what, ((performance.now() - t0) / 1000).toFixed(2))
const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' })
await db.open()
lap('open')
const snap = await db.get(mode === 'plain' ? 'y/snapshot' : 'y/s')
lap('get snapshot ' + snap?.byteLength)
if (mode !== 'plain') {
  let n = 0
  for await (const [k] of db.iterator({ gte: 'y/u/', lt: 'y/u0' })) n++
  lap('range y/u ' + n)
  let e = 0
  for await (const [k] of db.iterator({ gte: 'e/', lt: 'e0' })) e++
  lap('range e ' + e)
  let r = 0
  for await (const [k] of db.iterator({ gte: 'l/', lt: 'l0' })) r++
  lap('range l ' + r)
}
const doc = new Y.Doc()
Y.applyUpdate(doc, snap as Uint8Array)
lap('apply')
