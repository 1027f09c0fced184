/**
 * A device with a server keeps its process alive until it is closed, as a
 * socket does, whether its server is reachable or not: an app that opens a
 * device and waits on nothing else must not exit while the device retries
 * (a probe: the process ended at the first refused connection, its retries
 * and unsent writes with it). Real child processes, a loopback port that
 * refuses.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer as createNetServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'

const script = fileURLToPath(new URL('./fixtures/idle-device.ts', import.meta.url))
const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** A loopback port nothing listens on (taken, then let go). */
async function refusingPort(): Promise<number> {
  const probe = createNetServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const address = probe.address()
  await new Promise<void>((resolve) => probe.close(() => resolve()))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/** Starts the idle device app; resolves once it printed `opened`. */
async function idleDevice(then: 'keep' | 'close'): Promise<ChildProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'rostersync-keep-alive-'))
  const url = `ws://127.0.0.1:${await refusingPort()}`
  const child = spawn(process.execPath, ['--import', 'tsx', script, join(dir, 'd'), url, then], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await new Promise((resolve) => child.once('exit', resolve))
    }
    await rm(dir, { recursive: true, force: true })
  })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('opened')) resolve()
    })
    // 'close': after its output is read (an 'exit' may come before it).
    child.once('close', (code) => reject(new Error(`exited ${code} before opening: ${stderr}`)))
  })
  return child
}

/** Resolves with the exit code once `child` exits, or 'running' after `ms`. */
function exitWithin(child: ChildProcess, ms: number): Promise<number | string | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode)
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('running'), ms)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      resolve(code ?? signal)
    })
  })
}

describe('a device keeps its process alive', () => {
  it('while its server is out of reach: it goes on retrying', async () => {
    const child = await idleDevice('keep')
    // Its first attempts are refused within milliseconds; retries follow.
    expect(await exitWithin(child, 3_000)).toBe('running')
  })

  it('until it is closed: then the process ends', async () => {
    const child = await idleDevice('close')
    expect(await exitWithin(child, 20_000)).toBe(0)
  })
})
