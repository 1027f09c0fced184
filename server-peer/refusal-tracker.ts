/**
 * What the server remembers of the updates it refused, per device, so that
 * a refusal is never silent and never papered over (issue 11):
 *
 * - `write-refused` is logged once per cause (device and code), not once
 *   per retry: a device whose change is refused sends it again on every
 *   reconnect, and each attempt would otherwise add an event.
 * - `deviceToServer` goes back to `success` only once nothing refused is
 *   still missing: for each client of a refused update, the server holds
 *   its operations up to where the update ended, or the device no longer
 *   holds them (its step 1 says so: it was reset or restored). An update
 *   applied after a refusal is no success while what it builds on is not
 *   here (Yjs holds it back; Replica.heldBackFrom).
 *
 * In memory only: after a restart the registry keeps the stored `failed`
 * until the device's next success.
 */
import * as Y from 'yjs'
import { netLimits } from '../core/limits.js'

/** The refusals of a server's devices (see the module comment). */
export class RefusalTracker {
  /** Per device: per Yjs client, the end clock of refused operations the server lacks. */
  private readonly missing = new Map<string, Map<number, number>>()
  /** Per device: the codes logged since its last success. */
  private readonly logged = new Map<string, Set<string>>()

  /**
   * Notes a refusal of `update` (when the message had one) from `deviceId`;
   * returns true when this cause is new for the device (log it).
   */
  refused(deviceId: string, code: string, update: Uint8Array | undefined, doc: Y.Doc): boolean {
    if (update !== undefined) this.remember(deviceId, update, doc)
    const codes = this.logged.get(deviceId) ?? new Set<string>()
    this.logged.set(deviceId, codes)
    if (codes.has(code)) return false
    codes.add(code)
    return true
  }

  /** The device's step 1: operations it no longer holds are no longer missing. */
  step1(deviceId: string, theirs: Map<number, number>, doc: Y.Doc): void {
    const missing = this.missing.get(deviceId)
    if (missing === undefined) return
    for (const [client, end] of missing) {
      const held = Math.min(end, theirs.get(client) ?? 0)
      if (held <= Y.getState(doc.store, client)) missing.delete(client)
      else missing.set(client, held)
    }
    if (missing.size === 0) this.missing.delete(deviceId)
  }

  /**
   * True when nothing refused of the device is still missing (a success may
   * be recorded); its logged causes are then forgotten, so that a later
   * refusal is logged again.
   */
  settled(deviceId: string, doc: Y.Doc): boolean {
    const missing = this.missing.get(deviceId)
    if (missing !== undefined) {
      for (const [client, end] of missing)
        if (Y.getState(doc.store, client) >= end) missing.delete(client)
      if (missing.size > 0) return false
      this.missing.delete(deviceId)
    }
    this.logged.delete(deviceId)
    return true
  }

  /** Drops what it remembers of a device the registry forgot (its id is new if it comes back). */
  forget(deviceId: string): void {
    this.missing.delete(deviceId)
    this.logged.delete(deviceId)
  }

  private remember(deviceId: string, update: Uint8Array, doc: Y.Doc): void {
    let ends: Map<number, number>
    try {
      ends = Y.parseUpdateMeta(update).to
    } catch {
      // Bytes that are not an update bring no operations to wait for.
      return
    }
    const missing = this.missing.get(deviceId) ?? new Map<number, number>()
    for (const [client, end] of ends) {
      if (end <= Y.getState(doc.store, client)) continue
      if (!missing.has(client) && missing.size >= netLimits.refusedClientsTrackedPerDeviceMax)
        continue
      missing.set(client, Math.max(end, missing.get(client) ?? 0))
    }
    if (missing.size > 0) this.missing.set(deviceId, missing)
  }
}
