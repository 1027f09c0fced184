/**
 * The server's device registry: who joined, when they were last seen, and
 * who is revoked. Kept in memory and persisted through the replica's store.
 */
import type { Clock } from '../core/clock.js'

/** One registered device. */
export interface DeviceRecord {
  readonly id: string
  readonly name: string
  readonly address: string
  readonly firstSeen: number
  readonly lastSeen: number
  readonly revoked: boolean
  readonly connected: boolean
}

/** Registry of a site's devices. */
export class DeviceRegistry {
  private readonly devices = new Map<string, DeviceRecord>()

  constructor(private readonly clock: Clock) {}

  /** Records a device joining; returns whether it is new. */
  seen(id: string, name: string, address: string): boolean {
    const now = this.clock.now()
    const prev = this.devices.get(id)
    this.devices.set(id, {
      id,
      name,
      address,
      firstSeen: prev?.firstSeen ?? now,
      lastSeen: now,
      revoked: prev?.revoked ?? false,
      connected: true,
    })
    return prev === undefined
  }

  /** Marks a device disconnected. */
  left(id: string): void {
    const prev = this.devices.get(id)
    if (prev !== undefined)
      this.devices.set(id, { ...prev, connected: false, lastSeen: this.clock.now() })
  }

  /** Revokes a device; it is refused from then on. Returns false if unknown. */
  revoke(id: string): boolean {
    const prev = this.devices.get(id)
    if (prev === undefined) return false
    this.devices.set(id, { ...prev, revoked: true, connected: false })
    return true
  }

  isRevoked(id: string): boolean {
    return this.devices.get(id)?.revoked === true
  }

  /** Devices, ordered by id; `nameContains` filters by partial name (case-insensitive). */
  list(filter: { nameContains?: string } = {}): DeviceRecord[] {
    const needle = filter.nameContains?.toLowerCase()
    return [...this.devices.values()]
      .filter((d) => needle === undefined || d.name.toLowerCase().includes(needle))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  }
}
