/**
 * A store for crash tests run in a child process: once armed, it numbers
 * its writes (batches) from 1, prints `WRITE <n> <keys>` once each is
 * durable, and stops dead at write `stallAt` — before it is made
 * (`'before'`) or after (`'after'`), printing `STALL <when> <n> <keys>` —
 * so that the parent kills the process there with SIGKILL.
 */
import type { StoreOp } from '../../core/store.js'
import { ForwardingStore } from './forwarding-store.js'

// Writes to a pipe are synchronous on Linux: a line is out before the next step.
export const say = (line: string): void => void process.stdout.write(`${line}\n`)

/** The keys a batch writes, shortened to their kinds (`y/u`, `l/d`, `r/site/generation` ...). */
export function summary(ops: readonly StoreOp[]): string {
  const kinds = new Set<string>()
  for (const op of ops) {
    const parts = op.key.split('/')
    const kind = op.key.startsWith('r/') ? op.key : parts.slice(0, 2).join('/')
    kinds.add(`${op.type === 'del' ? '-' : '+'}${kind}`)
  }
  return [...kinds].sort().join(',')
}

/** Numbers the writes made once armed, and stalls at one of them. */
export class StallingStore extends ForwardingStore {
  armed = false
  private count = 0
  stallAt: number | undefined
  stallWhen: 'before' | 'after' | undefined

  override async batch(ops: readonly StoreOp[]): Promise<void> {
    if (!this.armed || ops.length === 0) return this.inner.batch(ops)
    const n = ++this.count
    const keys = summary(ops)
    if (n === this.stallAt && this.stallWhen === 'before') {
      say(`STALL before ${n} ${keys}`)
      return new Promise<void>(() => undefined)
    }
    await this.inner.batch(ops)
    say(`WRITE ${n} ${keys}`)
    if (n === this.stallAt) {
      say(`STALL after ${n} ${keys}`)
      return new Promise<void>(() => undefined)
    }
  }

  override put(key: string, value: Uint8Array): Promise<void> {
    return this.batch([{ type: 'put', key, value }])
  }

  override del(key: string): Promise<void> {
    return this.batch([{ type: 'del', key }])
  }
}
