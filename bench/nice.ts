/**
 * The scheduling priority of a bench's client processes. Real devices (and
 * a real attacker) are other machines; in a bench the clients share the
 * server's two cores, and at equal priority the scheduler keeps the
 * server's main thread waiting for a CPU (Linux schedstat, which the
 * benches report), which is the bench measuring itself. The load bench's
 * clients and the flood bench's flooding client run lowered (niceness 19 by
 * default; an environment variable per bench sets another, 0 keeps the
 * normal one). The processes that measure (the probes) keep the normal
 * priority.
 */
import { execFileSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { setPriority } from 'node:os'

/**
 * Whether the load bench's client processes go in Linux's SCHED_IDLE class
 * (`BENCH_LOAD_CLIENT_SCHED`: `idle`, the default, or `normal`).
 */
export function clientIdleClass(variable: string): boolean {
  const raw = process.env[variable]
  if (raw === undefined || raw === '' || raw === 'idle') return true
  if (raw === 'normal') return false
  console.error(`${variable} must be idle or normal, got ${JSON.stringify(raw)}`)
  process.exit(2)
}

/**
 * Puts every thread of this process in Linux's SCHED_IDLE class (`chrt
 * --idle --all-tasks`, util-linux): it then runs only on a CPU that nothing
 * of normal priority wants, and a waking server thread takes the CPU from
 * it at once. Niceness alone does not do that on a 6.x kernel (EEVDF):
 * under the load bench (`perf sched timehist`, 8 s of the load, clients at
 * niceness 19) the server's main thread waited for a CPU 37 times over
 * 2 ms, up to 5 ms, while a client thread finished its slice, once with the
 * other core idle. Threads started later inherit the class. Returns false
 * when chrt is missing or refuses (the process then keeps its niceness).
 */
export function idleClass(): boolean {
  try {
    execFileSync('chrt', ['--idle', '--all-tasks', '--pid', '0', String(process.pid)], {
      stdio: 'ignore',
    })
    return true
  } catch {
    return false
  }
}

/** Default niceness of the client processes. */
const CLIENT_NICE = 19

/** The niceness `variable` names, or the default; exits 2 on a value setPriority refuses. */
export function clientNice(variable: string): number {
  const raw = process.env[variable]
  const nice = raw === undefined || raw === '' ? CLIENT_NICE : Number(raw)
  if (!Number.isInteger(nice) || nice < 0 || nice > 19) {
    console.error(`${variable} must be an integer from 0 to 19, got ${JSON.stringify(raw)}`)
    process.exit(2)
  }
  return nice
}

/**
 * Sets the niceness of every thread of this process: Linux keeps it per
 * thread, and `setPriority(n)` alone lowers only the main one, leaving V8's
 * and libuv's workers (garbage collection, compilation) at the normal
 * priority. Called again once connected, for threads started meanwhile.
 */
export function lowerPriority(nice: number): void {
  if (nice === 0) return
  setPriority(nice)
  let threads: string[]
  try {
    threads = readdirSync('/proc/self/task')
  } catch {
    return // not Linux: the call above set the whole process's
  }
  for (const tid of threads) {
    try {
      setPriority(Number(tid), nice)
    } catch {
      // A thread that ended meanwhile.
    }
  }
}
