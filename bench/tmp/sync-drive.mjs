// node bench/tmp/sync-drive.mjs <users> <serverDir> <clientDir> [serverFlags...]
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { writeFileSync, readdirSync, readFileSync, appendFileSync } from 'node:fs'
const threads = (pid) => { const o = {}; for (const t of readdirSync(`/proc/${pid}/task`)) { try { const st = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8'); const name = st.slice(st.indexOf('(') + 1, st.lastIndexOf(')')); const f = st.slice(st.lastIndexOf(')') + 2).split(' '); o[t + ' ' + name] = (Number(f[11]) + Number(f[12])) / 100 } catch {} } return o }
const [users, serverDir, clientDir, ...flags] = process.argv.slice(2)
const server = spawn('node', ['--expose-gc', ...flags, '--import', 'tsx', 'bench/million-child.ts', 'serve-ours', users, serverDir], { stdio: ['pipe', 'pipe', 'inherit'] })
const lines = []
const rl = createInterface({ input: server.stdout })
let waiter
rl.on('line', (l) => { if (l.startsWith('{')) { const v = JSON.parse(l); if (waiter) { const w = waiter; waiter = undefined; w(v) } else lines.push(v) } else lines.push(l) ; if (!l.startsWith('{')) appendFileSync('/tmp/m1/gc.log', `${(performance.now()/1000).toFixed(2)} ${l}\n`) })
const gcLines = []
const next = () => new Promise((r) => { const i = lines.findIndex((x) => typeof x === 'object'); if (i >= 0) r(lines.splice(i, 1)[0]); else waiter = r })
const ready = await next()
console.log('ready', ready.openMs, ready.firstAnswerMs)
server.stdin.write(JSON.stringify({ cmd: 'cpu' }) + '\n')
const cpu0 = (await next()).cpuSeconds
const th0 = threads(server.pid)
const t0 = performance.now()
console.log('sync start at', (t0/1000).toFixed(2))
const client = spawn('node', [...(process.env.CLIENT_FLAGS ?? '').split(' ').filter(Boolean), '--import', 'tsx', 'bench/million-child.ts', 'sync-ours', users, clientDir, ready.url, ready.siteKey], { stdio: ['ignore', 'pipe', 'inherit'] })
let out = ''
client.stdout.on('data', (d) => (out += d))
await new Promise((r) => client.on('exit', r))
writeFileSync('/tmp/m1/client.out', out); console.log('sync end at', (performance.now()/1000).toFixed(2), out.trim().split('\n').filter(l => l.startsWith('{')).join(' '))
server.stdin.write(JSON.stringify({ cmd: 'cpu' }) + '\n')
const cpu1 = (await next()).cpuSeconds
const th1 = threads(server.pid); const agg = {}; for (const k of Object.keys(th1)) { const n = k.split(' ').slice(1).join(' '); agg[n] = (agg[n] ?? 0) + th1[k] - (th0[k] ?? 0) } console.log('threads', JSON.stringify(Object.fromEntries(Object.entries(agg).map(([k, v]) => [k, +v.toFixed(2)]))))
console.log('server cpu over sync', (cpu1 - cpu0).toFixed(2), 'wall', ((performance.now() - t0) / 1000).toFixed(2))

server.stdin.end()
await new Promise((r) => server.on('exit', r))
