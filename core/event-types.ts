/**
 * The event types every peer records (core/events.ts keeps the log), apart
 * so that the CLI's help and flags can name them without loading the log's
 * schema.
 */
/** Every event type a peer records. */
export const EVENT_TYPES = [
  'user-update-succeeded',
  'save-to-server-failed',
  'edit-overridden-by-server',
  'sync-started',
  'sync-succeeded',
  'sync-failed',
  'device-registered',
  'device-revoked',
  'user-deleted-locally',
  'user-deleted',
  'roster-wiped',
  'write-refused',
  'policy-changed',
  'compaction-failed',
  'user-signed-in',
  'users-exported',
  'users-imported',
  // Issue 13: generations
  'history-compacted',
  'generation-moved',
  // A device holds operations of the server's own the server no longer has: its data directory was restored.
  'restore-detected',
  // The administrator's approval of a device, and its key reset (issue 11).
  'device-approved',
  'device-key-reset',
  // A device's record removed: by the administrator, or to make room (issue 11).
  'device-forgotten',
  // A device's own stamps that ran ahead of its time, rewritten (PROTOCOL.md, "Clocks").
  'stamps-rewritten',
  // A device's LAN link refused or failed (a revoked peer, another generation, …): once per cause and peer.
  'lan-link-refused',
] as const
/** One event type. */
export type EventType = (typeof EVENT_TYPES)[number]
