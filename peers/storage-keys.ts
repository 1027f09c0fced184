/**
 * Where a peer keeps what in its Store. Keys are ASCII so that LevelDB's
 * byte order is the order of the strings; sequence numbers are zero-padded.
 */
const pad = (n: number): string => n.toString().padStart(15, '0')

export const keys = {
  /** The compacted document (a Yjs update of the whole state). */
  snapshot: 'y/s',
  /** Appended Yjs updates since the snapshot. */
  update: (seq: number): string => `y/u/${pad(seq)}`,
  updatesFrom: 'y/u/',
  updatesTo: 'y/u0',
  /** The sequence number the next update gets (kept across compactions). */
  updateSeq: 'm/useq',
  /** This peer's Yjs clientID, and whether it closed cleanly. */
  clientId: 'm/client',
  clean: 'm/clean',
  /**
   * Bytes of the update log that may delete something, as a clean close
   * left them (deleted on open): a reopened log of inserts alone is not
   * taken for garbage and compacted at once on the first write (issue 13).
   */
  logDeletingBytes: 'm/logdel',
  /** The greatest HLC stamp issued or seen. */
  hlc: 'm/hlc',
  /** The latest time of its own clock the peer stamped at (Hlc.wall). */
  hlcWall: 'm/hlc-wall',
  /** Local-only state: device deletes and device-specific values. */
  deleted: (userId: string): string => `l/d/${userId}`,
  deletedFrom: 'l/d/',
  deletedTo: 'l/d0',
  localFields: (userId: string): string => `l/f/${userId}`,
  localFieldsFrom: 'l/f/',
  localFieldsTo: 'l/f0',
  /**
   * Server entries and field policies imported from an export file (a
   * device's, issue 10): local-only, never replicated; the document's own
   * server entry replaces one once it is as new (ARCHITECTURE.md, "Export /
   * import").
   */
  imported: (userId: string): string => `l/i/${userId}`,
  importedFrom: 'l/i/',
  importedTo: 'l/i0',
  importedPolicy: (field: string): string => `l/p/${field}`,
  importedPoliciesFrom: 'l/p/',
  importedPoliciesTo: 'l/p0',
  /** Peer-local records (`<namespace>/<key>`): device registry, sync state. */
  record: (name: string): string => `r/${name}`,
  recordsFrom: 'r/',
  recordsTo: 'r0',
  /** The event log. */
  event: (seq: number): string => `e/${pad(seq)}`,
  eventsFrom: 'e/',
  eventsTo: 'e0',
} as const

/** The sequence number at the end of a padded key. */
export const seqOf = (key: string): number => Number(key.slice(key.lastIndexOf('/') + 1))
