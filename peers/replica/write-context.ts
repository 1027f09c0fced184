/**
 * The WriteContext a batch's operations run with: reads of the document,
 * changes of this peer's own roots, of local-only state and of records,
 * each store op added to the batch being written.
 */
import type { Clock } from '../../core/clock.js'
import type { Hlc } from '../../core/hlc.js'
import type { StoreOp } from '../../core/store.js'
import type { ReplicaDocument } from './document.js'
import type { EventJournal } from './event-journal.js'
import type { LocalState } from './local-state.js'
import type { WriteContext } from './types.js'

/** What a write context reads and changes. */
export interface WriteContextParts {
  readonly clock: Clock
  /** The time stamps are made at, ms (StampTime.now: the clock, moved to its server's time). */
  readonly stampNow: () => number
  readonly hlc: Hlc
  readonly document: ReplicaDocument
  readonly local: LocalState
  readonly events: EventJournal
}

/** The context of one batch; its store ops go to `storeOps`. */
export function writeContext(parts: WriteContextParts, storeOps: StoreOp[]): WriteContext {
  const { clock, stampNow, hlc, document, local, events } = parts
  return {
    stamp: () => hlc.next(stampNow()),
    now: () => clock.now(),
    replicaOf: (id) => document.replicaOf(id),
    policies: () => document.policies(),
    localOf: (id) => document.localOf(id),
    view: (id) => document.view(id),
    allUserIds: () => document.allUserIds(),
    setOwnEntry: (id, entry) => document.setOwnEntry(id, entry),
    setPolicy: (field, entry) => document.setPolicy(field, entry),
    setRevoked: (deviceId, entry) => document.setRevoked(deviceId, entry),
    setDeleted: (id, mark) => {
      // The version the mark names, kept with it (DeleteMark.v).
      const v = mark === undefined || mark.v !== undefined ? undefined : document.serverItemOf(id)
      local.setDeleted(id, mark !== undefined && v !== undefined ? { ...mark, v } : mark, storeOps)
    },
    setLocalFields: (id, fields) => local.setLocalFields(id, fields, storeOps),
    setImported: (id, entry) => local.setImported(id, entry, storeOps),
    setImportedPolicy: (field, entry) => {
      local.setImportedPolicy(field, entry, storeOps)
      document.invalidatePolicies()
    },
    dropImports: () => {
      const ids = local.importedIds()
      const fields = [...local.importedPolicyEntries().keys()]
      for (const id of ids) local.setImported(id, undefined, storeOps)
      for (const field of fields) local.setImportedPolicy(field, undefined, storeOps)
      if (fields.length > 0) document.invalidatePolicies()
      return ids.length + fields.length
    },
    event: (event) => events.append(event, clock.now()),
    setRecord: (namespace, key, value) => local.setRecord(namespace, key, value, storeOps),
  }
}
