/**
 * Plumbing of the network benches: children that stay up and take commands
 * (a server child serves while client children come and go), a TCP proxy
 * that counts the bytes on the wire, and a clock that two processes on one
 * machine can compare.
 *
 * Protocol with a controlled child: the parent writes one JSON command per
 * line on the child's stdin; the child writes one JSON line on stdout per
 * reply or report. Progress and errors go to stderr, which passes through.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { createServer as createNetServer, connect, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import { createInterface } from 'node:readline'
import type { Readable, Writable } from 'node:stream'
import { PROJECT_ROOT } from './bench.js'
import { scriptArgs } from './build.js'

/**
 * The site key every process of one network bench run shares: a server
 * started without one generates its own (secure default) and would refuse
 * the bench's devices. Set once in the orchestrator's environment, which
 * every child inherits.
 */
export function benchSiteKey(): string {
  process.env.BENCH_SITE_KEY ??= randomBytes(16).toString('hex')
  return process.env.BENCH_SITE_KEY
}

/**
 * Milliseconds on a clock shared by every process of the machine: each
 * process's monotonic clock anchored at its start on the wall clock. Used
 * to time an edit made in one process and seen in another; within a run
 * the anchors differ by far less than the latencies measured.
 */
export const sharedClockMs = (): number => performance.timeOrigin + performance.now()

/**
 * The title fan-out edit `i` sets. The server child and the fan-out clients
 * both derive it from `i`, so a client knows what to wait for without being
 * told.
 */
export const fanoutTitle = (i: number): string => `Fan-out edit ${i}`

/**
 * Node flags for every network child. Setting `BENCH_CPU_PROF=<dir>` makes
 * each child write a V8 CPU profile there (open it in Chrome DevTools), so a
 * missed target can be profiled in the exact setting it was measured in.
 * `BENCH_CHILD_FLAGS` adds flags Node refuses in NODE_OPTIONS (e.g.
 * `--trace-gc`: a child's lines that are not JSON go to stderr, labelled).
 */
export function childFlags(): string[] {
  const dir = process.env.BENCH_CPU_PROF
  const extra = (process.env.BENCH_CHILD_FLAGS ?? '').split(/\s+/).filter((f) => f !== '')
  return [
    ...(dir === undefined || dir === '' ? [] : ['--cpu-prof', '--cpu-prof-dir', dir]),
    ...extra,
  ]
}

/** Loopback source addresses the benches' device clients spread over (127.0.0.2 ...). */
export const SOURCE_ADDRESSES = 8

/**
 * The loopback source address of client `i`: devices (and a flood) come
 * from `SOURCE_ADDRESSES` addresses of 127.0.0.0/8 (all loopback on
 * Linux), as from a site's many hosts, so that the server's per-address
 * handshake cap (`netLimits.handshakesPerAddressMax`, 512) does not turn
 * a thousand connections from one address into resets.
 */
export const sourceAddress = (i: number): string => `127.0.0.${2 + (i % SOURCE_ADDRESSES)}`

/** A child process that takes JSON commands and answers with JSON lines. */
export class ControlledChild {
  private readonly lines: unknown[] = []
  private readonly waiters: Array<{ resolve: (v: unknown) => void; reject: (e: Error) => void }> =
    []
  private exitCode: number | null | undefined = undefined
  private readonly exited: Promise<number | null>

  private constructor(
    private readonly label: string,
    private readonly child: ChildProcessByStdio<Writable, Readable, null>,
  ) {
    createInterface({ input: child.stdout }).on('line', (line) => this.take(line))
    this.exited = new Promise((resolve) => {
      child.on('close', (code) => {
        this.exitCode = code
        // A child that dies leaves nothing more to read: fail every waiter
        // at once instead of letting the bench hang.
        for (const w of this.waiters.splice(0)) w.reject(this.deadError())
        resolve(code)
      })
    })
  }

  /** Starts `bench/<script> ...args` (compiled, or under tsx: bench/build.ts), from the project root. */
  static start(script: string, args: readonly string[]): ControlledChild {
    const child = spawn(process.execPath, [...childFlags(), ...scriptArgs(script), ...args], {
      cwd: PROJECT_ROOT,
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    return new ControlledChild(`bench/${script} ${args.join(' ')}`, child)
  }

  /** The next JSON line the child prints. */
  next<T>(): Promise<T> {
    const line = this.lines.shift()
    if (line !== undefined) return Promise.resolve(line as T)
    if (this.exitCode !== undefined) return Promise.reject(this.deadError())
    return new Promise<T>((resolve, reject) =>
      this.waiters.push({ resolve: resolve as (v: unknown) => void, reject }),
    )
  }

  /** Sends one command. */
  send(command: Record<string, unknown>): void {
    this.child.stdin.write(`${JSON.stringify(command)}\n`)
  }

  /** Sends one command and returns the child's answer (its next line). */
  request<T>(command: Record<string, unknown>): Promise<T> {
    this.send(command)
    return this.next<T>()
  }

  /** Closes the child's stdin (its cue to finish) and waits for a clean exit. */
  async finish(): Promise<void> {
    this.child.stdin.end()
    const code = await this.exited
    if (code !== 0) throw new Error(`${this.label} exited with ${code}`)
  }

  /** Kills the child (after a failure elsewhere) and waits for it to go. */
  async kill(): Promise<void> {
    if (this.exitCode === undefined) this.child.kill('SIGKILL')
    await this.exited
  }

  private take(line: string): void {
    let value: unknown
    try {
      value = JSON.parse(line)
    } catch {
      console.error(`${this.label}: ignoring a line that is not JSON: ${line}`)
      return
    }
    const waiter = this.waiters.shift()
    if (waiter === undefined) this.lines.push(value)
    else waiter.resolve(value)
  }

  private deadError(): Error {
    return new Error(`${this.label} exited (${this.exitCode}) before answering`)
  }
}

/**
 * Starts a controlled child, runs `fn` with it, then lets it finish; kills
 * it if `fn` throws, so a failed bench never leaves a server running.
 */
export async function withChild<T>(
  script: string,
  args: readonly string[],
  fn: (child: ControlledChild) => Promise<T>,
): Promise<T> {
  const child = ControlledChild.start(script, args)
  try {
    const result = await fn(child)
    await child.finish()
    return result
  } catch (error) {
    await child.kill()
    throw error
  }
}

/** The commands a controlled child receives, one per stdin line, until stdin closes. */
export async function* commands(): AsyncGenerator<Record<string, unknown>> {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() !== '') yield JSON.parse(line) as Record<string, unknown>
  }
}

/** Bytes one proxy has carried, per direction. */
export interface WireBytes {
  /** Server to client. */
  readonly down: number
  /** Client to server. */
  readonly up: number
}

/** A TCP proxy in front of a server that counts what crosses it. */
export interface CountingProxy {
  /** The port clients connect to instead of the server's. */
  readonly port: number
  /** Bytes carried since start or the last reset. */
  bytes(): WireBytes
  reset(): void
  close(): Promise<void>
}

/**
 * Starts a TCP proxy on 127.0.0.1 in front of `targetPort`. It counts TCP
 * payload bytes in each direction, so every side is measured the same way
 * whatever its protocol: HTTP headers, WebSocket framing and all. It runs in
 * the bench's parent process, which is otherwise idle during a measurement.
 */
export async function countingProxy(targetPort: number): Promise<CountingProxy> {
  let down = 0
  let up = 0
  const sockets = new Set<Socket>()
  const server = createNetServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1')
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.setNoDelay(true)
      socket.on('close', () => sockets.delete(socket))
    }
    client.on('data', (chunk: Buffer) => (up += chunk.byteLength))
    upstream.on('data', (chunk: Buffer) => (down += chunk.byteLength))
    // Either side failing ends the pair, as a dropped connection would.
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    bytes: () => ({ down, up }),
    reset() {
      down = 0
      up = 0
    },
    async close() {
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/**
 * Resolves once `check()` holds, looking every millisecond. A timer rather
 * than `setImmediate`: an immediate-loop would spin a core the measured code
 * needs (LevelDB's threads, the other process).
 */
export async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
}

/** Process CPU time (user + system, all threads) in seconds. */
export const cpuSeconds = (): number => {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1e6
}

/**
 * Seconds this process's main thread has spent runnable but waiting for a
 * CPU (Linux `/proc/self/task/<pid>/schedstat`, second field), or undefined
 * where the kernel does not say. On a machine whose cores the bench's own
 * children share, this is how much of an answer's time went to waiting for
 * the scheduler rather than to the server.
 */
export function runQueueWaitSeconds(): number | undefined {
  try {
    const fields = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')
    const ns = Number(fields[1])
    return Number.isFinite(ns) ? ns / 1e9 : undefined
  } catch {
    return undefined
  }
}

/**
 * Seconds this process's main thread has run on a CPU (the first field of
 * the same schedstat), or undefined where the kernel does not say: the
 * process's CPU time less its other threads' (a server's signature
 * verification workers, libuv's pool, GC helpers).
 */
export function mainThreadCpuSeconds(): number | undefined {
  try {
    const fields = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')
    const ns = Number(fields[0])
    return Number.isFinite(ns) ? ns / 1e9 : undefined
  } catch {
    return undefined
  }
}

/**
 * CPU seconds of this process's threads, summed by thread name (Linux
 * `/proc/self/task/<tid>/stat`: utime + stime, at 100 ticks a second), or
 * undefined where the kernel does not say. What competes with the main
 * thread inside the process: V8's workers (garbage collection, compiling),
 * libuv's pool (LevelDB), the signature-verification workers.
 */
export function threadCpuSeconds(): Record<string, number> | undefined {
  try {
    const byName: Record<string, number> = {}
    for (const tid of readdirSync('/proc/self/task')) {
      let stat: string
      try {
        stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      } catch {
        continue // a thread that ended meanwhile
      }
      const open = stat.indexOf('(')
      const close = stat.lastIndexOf(')')
      const name = tid === String(process.pid) ? 'main' : stat.slice(open + 1, close)
      const fields = stat.slice(close + 2).split(' ')
      // Fields 14 and 15 of the line; 12 and 13 after the name.
      const ticks = Number(fields[11]) + Number(fields[12])
      byName[name] = (byName[name] ?? 0) + ticks / 100
    }
    return byName
  } catch {
    return undefined
  }
}

/** `now - before`, or undefined when either is unknown (a figure the kernel did not give). */
export const difference = (
  now: number | undefined,
  before: number | undefined,
): number | undefined => (now === undefined || before === undefined ? undefined : now - before)
