import { createServer } from '../../index.js'
const dir = process.argv[2] as string
const t0 = performance.now()
const server = await createServer({ dataDir: dir })
const t1 = performance.now()
const res = await fetch(`${server.http}/api/users?limit=50`, { headers: { authorization: `Bearer ${server.adminToken}` } })
await res.arrayBuffer()
const t2 = performance.now()
console.log('open', ((t1 - t0) / 1000).toFixed(2), 'first answer', ((t2 - t0) / 1000).toFixed(2))
process.exit(0)
