/**
 * rostersync: a replicated user roster for access-control devices.
 * The server wins on conflict, a device fills only fields the server has
 * empty, and a device's deletes stay on that device.
 */
export { createServer, type ServerOptions, type ServerPeer } from './server-peer/create-server.js'
export { createDevice, type DeviceOptions, type DevicePeer } from './peers/create-device.js'
export type { UsersApi } from './peers/user-ops.js'
export type { ImportResult } from './peers/import-users.js'
export type { ExportRequest, PreparedExport } from './server-peer/export-users.js'
export { EXPORT_FORMAT_VERSION } from './core/export-file.js'
export type { Clock } from './core/clock.js'
export type { Store, StoreOp, RangeOptions } from './core/store.js'
export type { FieldPolicy } from './core/entries.js'
export type { RosterEvent, EventType, EventQuery } from './core/events.js'
export { EVENT_TYPES } from './core/events.js'
export type { UserView } from './core/resolve.js'
export {
  CARD_TYPES,
  DEFAULT_FIELDS,
  type Card,
  type CardType,
  type CustomFieldType,
} from './core/schema.js'
export * from './core/errors.js'
export { pinHashOutdated, verifyPin } from './peers/pin.js'
export { limits } from './core/limits.js'
export { runSimulation, type SimReport } from './sim/run.js'
export { CANARIES, type CanaryKind, type SimOptions } from './sim/options.js'
