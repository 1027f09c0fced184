import { createServer } from '../server-peer/create-server.js'
const t = performance.now()
const server = await createServer({ dataDir: process.argv[2]! })
const open = performance.now() - t
const res = await fetch(`${server.http}/api/users?limit=50`, { headers: { authorization: `Bearer ${server.adminToken}` } })
await res.arrayBuffer()
console.error('open', open.toFixed(0), 'answer', (performance.now() - t).toFixed(0))
await server.close()
