import { createServer } from '../server-peer/create-server.js'
import { makeRecords } from './records.js'
const users = Number(process.argv[2]); const dir = process.argv[3]!
const server = await createServer({ dataDir: dir })
const t = performance.now(); let win = performance.now(); let cpu = process.cpuUsage(); const cpu0 = process.cpuUsage()
for (let from = 0; from < users; from += 1000) {
  const b = makeRecords(from, 1000)
  await Promise.all(b.map((r) => server.users.put(r)))
  if ((from + 1000) % 100000 === 0) { const n = performance.now(); const c = process.cpuUsage(cpu); console.error(`${from+1000} ${Math.round(100000/((n-win)/1000))}/s cpu ${((c.user+c.system)/1e6).toFixed(1)}s heap ${Math.round(process.memoryUsage().heapUsed/1e6)}MB`); win = n; cpu = process.cpuUsage() }
}
const c = process.cpuUsage(cpu0)
console.error('total', ((performance.now()-t)/1000).toFixed(1), 's cpu', ((c.user+c.system)/1e6).toFixed(1))
await server.close()
