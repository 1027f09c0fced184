/**
 * Every bound rostersync enforces, in one place, named with the unit last.
 * A limit here is a promise to operators: nothing grows past it.
 */
export const limits = {
  /** Longest user id, in characters. */
  userIdCharsMax: 128,
  /** Longest device/writer id, in characters. */
  writerIdCharsMax: 64,
  /** Longest plain text field (name, email, ...), in characters. */
  textCharsMax: 512,
  /** Most entries in `groups` or `accessLevels`. */
  groupsPerUserMax: 256,
  /** Most credentials in `cards`. */
  cardsPerUserMax: 32,
  /** Longest card value, in characters. */
  cardValueCharsMax: 256,
  /** Most fingerprint templates per user. */
  fingerprintsPerUserMax: 10,
  /** Most face templates per user. */
  facesPerUserMax: 5,
  /** Largest biometric template, in bytes. */
  templateBytesMax: 16 * 1024,
  /** Largest photo, in bytes. */
  photoBytesMax: 256 * 1024,
  /** Most custom fields a site may declare. */
  customFieldsMax: 64,
  /** Largest encoded user record, in bytes (all fields, templates included). */
  recordBytesMax: 512 * 1024,
  /** Most write operations folded into one transaction and one durable batch. */
  writeBatchOpsMax: 5_000,
  /** Most events kept in a peer's event log; the oldest are dropped first. */
  eventsMax: 100_000,
  /**
   * Appended Yjs updates after which the log is compacted into a snapshot,
   * once the write queue has been idle for `compactionIdleMs`: compaction
   * encodes the whole document (40 ms for 1,000 users after heavy editing,
   * far more for 100,000), and under heavy traffic that pause would delay
   * every answer waiting behind it.
   */
  updatesBeforeCompactionMax: 1_000,
  /** Idle time of the write queue before a due compaction runs, ms. */
  compactionIdleMs: 1_000,
  // Issue 13: generations (history compaction, server-peer/generations.ts)
  /**
   * The server starts a new generation by itself once its document's state
   * vector names more clientIDs than this (every edit pays for each:
   * yjs#415), checked when the write queue is idle.
   */
  generationClientIdsMax: 2_000,
  /**
   * ... or once the document holds this many times more deleted items
   * (history) than live ones, with at least `generationDeletedItemsMin`
   * deleted items.
   */
  generationHistoryRatioMax: 4,
  /** Deleted items below which history alone never starts a generation. */
  generationDeletedItemsMin: 100_000,
  /** How often the server looks whether a new generation is due, ms (off the hot path). */
  generationCheckIntervalMs: 10 * 60_000,
  /**
   * Least time from one generation to an automatic one, ms. Every
   * generation makes every device fetch the whole roster again, and what
   * makes one due can be driven by a device (an update of many clientIDs,
   * deleted items counted as history): with this, what devices do makes
   * the fleet fetch the roster at most once a day. (What they can add
   * meanwhile is bounded: `writerClientIdsMax`, `documentClientIdsMax`.)
   */
  generationAutoSpacingMs: 24 * 3_600_000,
  /**
   * Entries a new generation's base reads or writes between two turns of
   * the server's event loop (core/generation.ts, `buildGenerationBase`):
   * reads and syncs are answered while a large base is built (it took 5-7 s
   * in one turn at 100k users), each turn a few tens of ms.
   */
  generationBuildChunkEntries: 2_000,
  /**
   * Bytes of a base's chunks past which their merge into the snapshot runs
   * in a worker thread (server-peer/merge-updates.ts); below, on the event
   * loop (less time than a worker takes to start).
   */
  generationMergeOffThreadBytesMin: 4 * 1024 * 1024,
  /**
   * Longest a base's merge in its worker thread may take (the switch holds
   * the write queue meanwhile): past it the worker is ended and the switch
   * fails, the site staying on its generation (a 100k-user merge takes
   * about 4 s; a stuck or starved worker must not hold writes for ever).
   */
  generationMergeTimeoutMs: 10 * 60_000,
  /**
   * Appended updates after which the log is compacted at once, idle or not,
   * once it also holds 1/`updateLogToSnapshotRatioIdleMin` of the
   * snapshot's bytes (issue 13: at 1M users, single writes otherwise
   * encoded the whole roster, about 10 s, every 20,000 of them).
   */
  updatesBeforeCompactionHardMax: 20_000,
  /** Appended updates after which the log is compacted at once, whatever its bytes. */
  updatesBeforeCompactionCeiling: 200_000,
  /** Appended update bytes after which the log is compacted at once. */
  updateBytesBeforeCompactionMax: 64 * 1024 * 1024,
  /**
   * Issue 13 (`peers/replica/compactor.ts`): past
   * `updateBytesBeforeCompactionMax`, the log is compacted at once only when
   * it holds this many times the snapshot's bytes. A compaction encodes the
   * whole document (about 10 s at 1M users): at a fixed 64 MB a 1M-user
   * roster paid one every 170,000 users enrolled, each dearer than the last;
   * in proportion to the snapshot, its cost per byte written stays bounded.
   */
  updateLogToSnapshotRatioMax: 1,
  /**
   * Issue 13 (likewise): the idle compaction (`updatesBeforeCompactionMax`)
   * waits until the log holds at least 1/this of the snapshot's bytes, so
   * that a few edits to a large roster do not encode all of it.
   */
  updateLogToSnapshotRatioIdleMin: 8,
  /**
   * Issue 13 (likewise): a log whose updates delete nothing (a bulk
   * enrolment: 1M users are about 340 MB of inserts) holds no garbage: a
   * snapshot of it is as large, and encoding one paused the write queue for
   * the whole roster (about 4 s at 400,000 users, more each time). Such a
   * log is compacted at once only past the snapshot's size and this many
   * bytes (how much a cold start replays update by update); the bounds above
   * apply to the bytes of updates that delete.
   */
  updateBytesWithoutDeletesMax: 1024 * 1024 * 1024,
  /**
   * Issue 13 (likewise): while a device waits for its server's answer
   * (Replica.deferCompaction), the log is compacted only past this many
   * bytes; once the answer is in, one compaction when idle. A fresh device
   * fetching a 1M-user roster (about 340 MB in parts) otherwise encoded its
   * growing document three times during the fetch (31 of its 100 CPU s).
   */
  updateBytesWhileFetchingMax: 1024 * 1024 * 1024,
  /** Largest number of events one query returns. */
  eventsPerQueryMax: 10_000,
  /** Most remote updates a peer holds back until their clients' earlier operations arrive. */
  heldBackUpdatesMax: 10_000,
  // Issue 11: front door
  /** Longest device name kept in the registry, in characters (longer is cut). */
  deviceNameCharsMax: 128,
  /** Longest device serial kept in the registry, in characters (longer is cut). */
  deviceSerialCharsMax: 128,
  /**
   * Most devices the registry holds (revoked and pending ones included); a
   * new id past it is refused with `REGISTRY_FULL`.
   */
  devicesRegisteredMax: 10_000,
  /**
   * Most devices waiting for approval at once (approval mode); a new id past
   * it is refused with `REGISTRY_FULL`, so ids made up by a key holder
   * cannot crowd out the approved devices.
   */
  devicesPendingMax: 1_000,
  /**
   * How long a device that never synced (nothing answered or taken in
   * either direction) and is not connected must have been away before a
   * new id may take its place in a full registry, in ms. Ids made up by a
   * key holder that joined and left filled the registry in seconds, and no
   * new terminal could join until someone edited the data by hand.
   */
  deviceUnsyncedForgetMs: 60 * 60_000,
  /**
   * Most device records the server's registry writes in one write batch;
   * the rest follow in the next batches, each in its own turn of the event
   * loop. 2,000 devices joining at once took one batch of 10-25 ms (the
   * flood bench), which every connected device's message waited for.
   */
  deviceRecordsPerBatchMax: 64,
  /** Longest excerpt of a caller's input an error message or event carries, in characters. */
  errorExcerptCharsMax: 120,
  // Issue 11: floods
  /**
   * Most remote updates one link may have held back at once (a share of
   * `heldBackUpdatesMax`): 10,000 updates after a clock gap from one socket
   * made every batch scan them all (GET p99 17.7 s). Past it the update is
   * refused (`TOO_MANY_HELD_BACK`); held-back updates are not in the state
   * vector, so the next exchange sends what is missing again, whole.
   */
  heldBackUpdatesPerLinkMax: 1_000,
  /** Most bytes of remote updates one link may have held back at once. */
  heldBackBytesPerLinkMax: 16 * 1024 * 1024,
  /**
   * Most bytes of remote updates held back at once, all links together (the
   * oldest go first): links come and go, each with its own share.
   */
  heldBackBytesMax: 64 * 1024 * 1024,
  // Issue 11: update bounds
  /**
   * How far ahead of the receiver's time a stamp in a remote entry may be,
   * in ms (Replica.stampHorizon: its clock, or later where its own or its
   * server's stamps went). A later stamp is refused: an HLC adopts every stamp it observes,
   * so one stamp of 2^53 would pin every later stamp of the receiver there.
   * Larger than any pairwise skew of a site's clocks (the simulator runs
   * peers up to 15 minutes off either way, 30 minutes apart), small enough
   * that a stamp accepted at the bound stops winning within the hour.
   */
  stampSkewMsMax: 60 * 60_000,
  /**
   * On a device, how far ahead of its time a stamp in another device's
   * entry that a LAN peer sends may be. Below `stampSkewMsMax` by more than
   * a device's skew from its server, so that a LAN peer cannot push this
   * device's clock (its HLC adopts what it takes) past what its server
   * takes: a neighbour whose stamps ran an hour ahead had every write of a
   * device 3 minutes ahead refused by the server (a hostile probe). Above
   * the 30 minutes two devices of a site may be apart (the simulator's).
   */
  lanStampSkewMsMax: 40 * 60_000,
  /**
   * On a device, how far past its server's latest stamp less
   * `stampSkewMsMax` it takes other writers' stamps (ReplicaDocument.stampHorizon):
   * room for a writer's HLC counting past the server's last stamp, and the
   * most a hostile writer can push a device past what the server takes.
   */
  stampHorizonSlackMs: 10_000,
  /**
   * A device rewrites its own stamps that run more than `stampSkewMsMax`
   * less this ahead of its time (StampTime.restamp): written while its
   * clock ran ahead, the server would refuse them. Room for the error of
   * the time a device learned from its server (a round trip) and for its
   * clock's drift since.
   */
  restampMarginMs: 5 * 60_000,
  /**
   * While a device stamps at an offset from its clock (its server's time,
   * learned when its clock was more than an hour off: PROTOCOL.md,
   * "Clocks"), how often it checks that its clock was not set back
   * (StampTime): a timer of this length that finds the clock earlier than
   * it should be by more than `clockStepBackMsMin` moves the offset by the
   * step, so its stamps keep its server's time. Without it, a device whose
   * clock was set right while it kept the offset stamped days in the past
   * until its next join, and its writes lost to older ones.
   */
  clockStepCheckMs: 60_000,
  /** How far back a clock must step to move the offset (see `clockStepCheckMs`); also the offset snapped to 0. */
  clockStepBackMsMin: 60_000,
  /** Largest entry value (one user of one writer, or one field policy), estimated like a record, in bytes. */
  entryBytesMax: 640 * 1024,
  /** Largest Yjs update checked at all, in bytes (one message holds one update). */
  updateBytesMax: 128 * 1024 * 1024,
  /** Most structs (items, GC and skip ranges) in one update: a full roster of a large site fits. */
  updateStructsMax: 2_000_000,
  /** Most delete-set ranges in one update. */
  updateDeleteRangesMax: 2_000_000,
  /**
   * Most Yjs clients one update may introduce to the receiver. Every client
   * costs every later state vector (step 1) its id and clock for good; a
   * site's legitimate clients (one per writer per crash, restore or full
   * sync) stay far below this.
   */
  updateNewClientsMax: 10_000,
  /**
   * Least time between two deltas of one device that the server logs
   * (`sync-started` / `sync-succeeded` with the device), ms; every full
   * sync is logged.
   */
  serverSyncDeltaLogIntervalMs: 6 * 3_600_000,
  /**
   * Least time between two full syncs of one device that the server logs,
   * ms: a device asking for the whole roster again and again (50 step 1s a
   * second) would otherwise cycle the log in minutes.
   */
  serverSyncFullLogIntervalMs: 60_000,
  /** Longest excerpt of a peer's input quoted in an error message or event, in characters. */
  peerInputExcerptCharsMax: 200,
  /**
   * Longest error message a peer sends that this peer keeps (shown in its
   * status and logged as an event), in characters; the rest is cut.
   */
  peerErrorCharsMax: 500,
  // Issue 11: signed writes
  /**
   * Verification answers from the worker threads (peers/verify-pool.ts)
   * given to their callers per turn of the event loop, in order: each
   * caller checks and applies its update at once, and a whole batch's
   * answers together held the loop for 4-11 ms under the load bench.
   */
  verifyAnswersPerTurnMax: 32,
  /**
   * Niceness added to each verification worker thread, on Linux only (a
   * thread's niceness is its own there; elsewhere the call would renice
   * the whole process, event loop included). Verifying is throughput
   * work and the event loop's answers are latency work: at the same
   * priority a worker woken by a batch took the core the main thread was
   * about to answer on (under the load bench the main thread waited for a
   * CPU 9.8-12.7% of the load, 9.0-9.5% with the workers lowered). At 10
   * a worker still takes every CPU the loop leaves idle.
   */
  verifyWorkerNice: 10,
  /** Most Yjs clientIDs one signed envelope may write under. */
  envelopeNoncesMax: 16,
  /**
   * Most Yjs clientIDs one device may write under in a generation (one per
   * crash, restore, wipe or full sync): peers/writer-clients.ts. A new
   * generation is due long before an honest fleet gets near it
   * (`generationClientIdsMax`).
   */
  writerClientIdsMax: 512,
  /**
   * Most Yjs clientIDs a document may name before devices' new ones wait
   * for the next generation (`FORBIDDEN_WRITE`): ids are free to a key
   * holder, and 128 made-up devices of 512 clientIDs each would make every
   * state vector enormous. Four times `generationClientIdsMax`, which makes
   * a generation due long before.
   */
  documentClientIdsMax: 8_000,
  /**
   * Past `documentClientIdsMax`, a device holding fewer clientIDs than
   * this in the generation may still take new ones, up to
   * `documentClientIdsReserve` more in all: an honest device holds one or
   * a few (one more per crash, restore, wipe or full sync). A probe: 16
   * made-up ids of 500 clientIDs each, with only the site key, filled the
   * document, and every device that then took a fresh clientID (a full
   * sync, a move to the next generation, a new terminal) was refused until
   * the generation after, which they refilled in seconds. Filling the
   * reserve now takes `documentClientIdsReserve / writerClientIdsReserved`
   * made-up ids more (approval mode, `approveDevices`, admits none).
   */
  writerClientIdsReserved: 4,
  /** How many clientIDs past `documentClientIdsMax` the reserve holds (writerClientIdsReserved). */
  documentClientIdsReserve: 4_000,
  /** Most parsed public keys kept for verification (a site's writers, with room to spare). */
  publicKeysCachedMax: 4_096,
  /**
   * Most signatures made or verified kept to answer the same bytes again
   * (core/signing.ts), and the longest message kept, in bytes (key and
   * signature included): about 8 MiB at most.
   */
  signaturesMemoMax: 2_048,
  signatureMemoMessageBytesMax: 4 * 1024,
  /**
   * Most bytes of other writers' envelopes a device keeps to relay over the
   * LAN: half of `netLimits.messageBytesMax`, so that an answer holding all
   * of them and the device's own part still fits one message.
   */
  envelopeLogBytesMax: 64 * 1024 * 1024,
  /**
   * Answers to state exchanges a peer keeps, per state vector, until its
   * document changes (peers/replica/answer-cache.ts). Each may hold the
   * whole roster (about 340 MB at 1M users) while nothing changes.
   */
  answersCachedMax: 4,
  /**
   * Most bytes of answers kept in that cache: the least recently used go
   * first; the newest answer is kept even when larger alone (a restart's
   * thousand fresh devices all ask for the whole roster).
   */
  answersCachedBytesMax: 512 * 1024 * 1024,
  /**
   * Operations (clock units) lacking from which an untrusted peer's answer
   * that is not in that cache takes its turn (peers/replica/answer-turns.ts):
   * such answers are made one after another for `answerTurnSliceMs` of the
   * event loop, then the poll for I/O and, when others wait, a pause as
   * long (at most `answerTurnPauseMsMax`), the least recently served peer first; one
   * longer than a slice goes on in the next turn. Below it an answer costs
   * a fraction of a millisecond, answered at once (the delete set every
   * answer carries is written from cached bytes).
   */
  answerTurnCostMin: 200,
  /**
   * Slice of the event loop costly answers take at a time, ms (see above).
   * 4 ms: a legitimate client's p99 round trip 16.4 ms, 5.45x idle, under
   * 16 links asking answers of a 20k-user roster the cache cannot share;
   * 10 ms gave 22.4 ms (`npm run bench -- --only variants`, 2026-12-07).
   */
  answerTurnSliceMs: 4,
  answerTurnPauseMsMax: 100,
  /** Smallest answer kept in that cache, in bytes (smaller ones are cheap to encode again). */
  answerCachedBytesMin: 64 * 1024,
  // Issue 10: export / import
  /** Most users one export holds by default (`createServer({ exportUsersMax })` changes it). */
  usersPerExportMax: 500,
  /** Most groups one export may name by default (`createServer({ exportGroupsMax })`). */
  groupsPerExportMax: 50,
  /**
   * Most users an export may ever hold, whatever the server's configuration:
   * a device refuses a file with more (`EXPORT_TOO_LARGE`).
   */
  usersPerExportHardMax: 10_000,
  /** How long a prepared export can be imported, ms from its creation (15 minutes). */
  exportTtlMs: 15 * 60_000,
  /**
   * Largest export file, in bytes: the server refuses to prepare a larger one
   * (`EXPORT_TOO_LARGE`) and a device refuses to read one (`MESSAGE_TOO_LARGE`).
   */
  exportFileBytesMax: 64 * 1024 * 1024,
  // Issue 11: PIN hashes (peers/pin.ts)
  /**
   * log2 of scrypt's cost N for a PIN (N = 2^12, r = 8, p = 1: 4 MiB and
   * about 8 ms of one core per hash, measured on the loaded reference
   * machine). A PIN has 4 to 12 digits: no cost makes guessing one
   * impossible for whoever holds the site key (the pepper keeps everyone
   * else out); this makes each guess cost milliseconds and megabytes, while
   * 1,000 users enrolled with PINs still take seconds, not minutes.
   */
  pinKdfLogN: 12,
  /** scrypt's block size r for a PIN (8: the standard). Stored hashes must name exactly this. */
  pinKdfBlockSize: 8,
  /** scrypt's parallelism p for a PIN. */
  pinKdfParallelism: 1,
  /** The least scrypt cost (log2 N) a stored PIN hash may name. */
  pinKdfLogNMin: 10,
  /** The most scrypt cost (log2 N) a stored PIN hash may name: 2^16 (64 MiB at r = 8), so a hash cannot make a verifier allocate more. */
  pinKdfLogNMax: 16,
  /** The most scrypt parallelism a stored PIN hash may name. */
  pinKdfParallelismMax: 4,
  /**
   * PINs hashed at once in one process (on the libuv pool, whose 4 threads
   * the store uses too); the rest wait their turn in order.
   */
  pinHashesInFlightMax: 2,
  // Issue 11: export encryption, LAN certificates
  /**
   * log2 of scrypt's cost N for an export's passphrase (N = 2^17, r = 8,
   * p = 1: 128 MiB and about 0.8 s on one core of the reference machine,
   * OWASP's recommendation). `createServer({ exportKdfLogN })` may raise it,
   * or lower it as far as `exportKdfLogNMin` on slow hardware.
   */
  exportKdfLogN: 17,
  /** The least scrypt cost a device accepts in a file (2^15: 32 MiB). */
  exportKdfLogNMin: 15,
  /** The most scrypt cost a device accepts in a file (2^20: 1 GiB), so a file cannot make it allocate more. */
  exportKdfLogNMax: 20,
  /** Shortest export passphrase an operator may choose, in characters (a generated one has 120 bits). */
  exportPassphraseCharsMin: 12,
  /** Longest export passphrase, in characters. */
  exportPassphraseCharsMax: 1_024,
  /**
   * How long a device certificate is valid from its issue, ms (7 days). The
   * server sends one on every connection and again on a link open past half
   * of it; a device's LAN peers refuse it once expired.
   */
  certificateTtlMs: 7 * 24 * 60 * 60_000,
  /**
   * How long the server sends a device the certificate it issued it last
   * rather than signing a new one, ms (1 day): a device that reconnects
   * often (a lossy network) costs one signature a day, not one per
   * connection, and every certificate it receives has at least 6 of its 7
   * days left.
   */
  certificateReuseMsMax: 24 * 60 * 60_000,
  /** How far a certificate's expiry is stretched for the receiver's clock running ahead, ms. */
  certificateSkewMsMax: 5 * 60_000,
} as const

/** Bounds of the network layer. */
export const netLimits = {
  /** Largest message a peer accepts, in bytes (a full roster push fits). */
  messageBytesMax: 128 * 1024 * 1024,
  /**
   * Largest message of an answer to a step 1, in bytes: the answer goes out
   * in parts of at most this (core/answer-chunks.ts), well under
   * `messageBytesMax` whatever the roster's size. A part holds a Yjs update
   * of at most this less `answerChunkOverheadBytesMax`. 1 MiB (16 MiB
   * before 2026-12-07): each part is one copy into its message and one
   * socket write, which no slice of a costly answer's turns can cut (a
   * 6.4 MB part held the loop 40-60 ms); and a 100k-user full sync took
   * 0.70-0.74x plain Yjs's time in parts of 1 MiB against 0.98-1.08x in
   * parts of 16 MiB (`npm run bench -- --only network`, twice each).
   */
  answerChunkBytesMax: 1024 * 1024,
  /**
   * Bytes a part's message adds to its update: the message header and a
   * server envelope (writer, signature, lengths). A part's update is cut
   * this much below `answerChunkBytesMax`.
   */
  answerChunkOverheadBytesMax: 1_024,
  /** Most simultaneous connections the server accepts. */
  connectionsMax: 10_000,
  /** First reconnect delay of a device, in ms. */
  retryDelayMsMin: 500,
  /** Largest reconnect delay of a device, in ms. */
  retryDelayMsMax: 60_000,
  /** Largest HTTP API request body, in bytes. */
  httpBodyBytesMax: 8 * 1024 * 1024,
  /** Longest error message an HTTP error body carries, in characters (longer ones are cut, their length noted). */
  httpErrorMessageCharsMax: 1_000,
  /**
   * Largest body of the admin sign-in (`POST /api/session`, `{ token }`),
   * the one body read before the caller is authenticated, in bytes.
   */
  httpSignInBodyBytesMax: 4 * 1024,
  /**
   * Deepest nesting of arrays and objects in a JSON request body: a record
   * nests 3 deep, and `JSON.parse` of 4M nested brackets (8 MB) held the
   * event loop a second and took 360 MB.
   */
  httpJsonDepthMax: 32,
  /** Most inbound messages waiting on one connection before it is closed. */
  inboundMessagesQueuedMax: 10_000,
  /** Most bytes buffered for one slow connection before it is dropped. */
  sendBufferBytesMax: 256 * 1024 * 1024,
  /**
   * Bytes buffered on a connection past which a session's further messages
   * wait in its outbox until it drains (peers/sync-session/outbox.ts): an
   * answer of a 1M-user roster (about 340 MB in parts) is more than
   * `sendBufferBytesMax`, and its parts are made as the connection takes them.
   * 8 MiB (64 MiB before 2026-12-07): a device that asked a 300k-user full
   * sync and stopped reading grew the server's RSS by 120 MB at 64 MiB, by
   * 32 MB at 8 MiB; a 100k-user full sync took the same time (0.70x and
   * 0.72x plain Yjs in the network bench, back to back).
   */
  sendPauseBufferedBytesMin: 8 * 1024 * 1024,
  /**
   * How long a session's outbox waits for its connection to take anything
   * (a message handed over, fewer bytes buffered) while messages wait, in
   * ms; then the link is closed (`SEND_STALLED`): the parts of an answer
   * wait without a bound in bytes (they are made as they go), not in time.
   * Generous: Node hands a socket's queued writes to the kernel as one
   * write, and a WebSocket's `bufferedAmount` falls only once all of it
   * went (tens of MB: a minute on a slow link).
   */
  sendStallMsMax: 5 * 60_000,
  /**
   * The time bound on an inbound message in progress, in ms
   * (transports/receive-deadline.ts): once its first byte is read, a
   * message must be whole within this plus the time its bytes read so far
   * take at `receiveRateBytesMin`, or the link is closed (1008
   * `RECEIVE_STALLED`). A peer that sent most of a 128 MiB message and
   * stopped would otherwise hold that memory for as long as it stayed
   * connected. Checked on the device links at the server and on every LAN
   * link.
   */
  receiveStallMsMax: 60_000,
  /**
   * Most bytes of messages in progress (begun, not yet read whole) on all
   * of a peer's links together (the server's WebSocket links, a device's
   * LAN links): past it the link whose message came the slowest is closed with 1008
   * `TOO_MANY_QUEUED_MESSAGES` (transports/receive-deadline.ts,
   * ReceiveBudget). Twice `messageBytesMax`: one message of the largest
   * size always fits beside others.
   */
  receivingBytesMax: 256 * 1024 * 1024,
  /**
   * The slowest rate, in bytes per second, at which a message in progress
   * must keep arriving past `receiveStallMsMax` (1 Mbit/s): a whole 128 MiB
   * message gets 18 minutes, a 16 MiB answer part 3 minutes.
   */
  receiveRateBytesMin: 128 * 1024,
  /** Most devices one device syncs with directly over the LAN at once. */
  lanPeersMax: 32,
  /**
   * Largest delay before a failed sync is retried, in ms (the backoff's
   * named bound; the first retry comes after `retryDelayMsMin`).
   */
  syncRetryDelayMsMax: 60_000,
  /**
   * How long one exchange with the server may wait for its answer, in ms,
   * plus `syncAnswerMsPerOperation` for each operation the answer brings
   * (as the server's step 1 states it: ServerExchange.answer).
   */
  syncAnswerTimeoutMs: 120_000,
  /**
   * Time an answer may take per operation it brings (Yjs clock units this
   * device lacks of the server's stated state), in ms, on top of
   * `syncAnswerTimeoutMs`: a large answer on a slow link or a loaded
   * device is not cut short (1M users, about 340 MB, take minutes at a few
   * Mbit/s; cut at a fixed bound, each retry fetched it again and failed
   * again, for ever), and a small one keeps the fixed bound. 1 ms: an
   * answer may arrive at 1,000 operations a second.
   */
  syncAnswerMsPerOperation: 1,
  /**
   * How long a connection waiting for an answer may stay silent before the
   * device sends its step 1 again on it, in ms (PROTOCOL.md,
   * "Acknowledgement"); the link reconnects only at `syncAnswerTimeoutMs`.
   */
  syncAskAgainSilenceMs: 30_000,
  /** How long a sync waits for the link to the server to come up, in ms. */
  syncConnectTimeoutMs: 30_000,
  // Issue 11: front door
  /** Longest WebSocket close reason, in UTF-8 bytes (RFC 6455: a control frame's 125 less the code). */
  closeReasonBytesMax: 123,
  /** Longest join URL (request target) the server reads, in characters. */
  joinUrlCharsMax: 4_096,
  /**
   * How long a new TCP connection may take to send its first complete
   * request head (an HTTP request or the WebSocket upgrade), in ms; then it
   * is dropped. Admission follows the head at once, so this bounds the
   * whole unauthenticated handshake.
   */
  handshakeTimeoutMs: 10_000,
  /** How long the server waits for a whole HTTP request's headers, in ms (Node's headersTimeout). */
  httpHeadersTimeoutMs: 10_000,
  /** How long the server waits for a whole HTTP request, body included, in ms. */
  httpRequestTimeoutMs: 30_000,
  /** Most connections still in their handshake (no request head yet) at once. */
  handshakesInFlightMax: 4_096,
  /**
   * Most HTTP requests one address (an IPv6 /64) may have in flight (head
   * read, response not done), and all together: a request whose body
   * never comes holds its connection for `httpRequestTimeoutMs`
   * (server-peer/front-door.ts RequestsInFlight). The admin page holds one
   * (its event stream) per open tab.
   */
  httpRequestsPerAddressMax: 64,
  httpRequestsInFlightMax: 4_096,
  /**
   * Most connections still in their handshake from one address at once:
   * one host cannot take every slot, yet a site behind one NAT address
   * (or a bench on loopback) reconnecting hundreds of devices at once fits.
   */
  handshakesPerAddressMax: 512,
  /**
   * WebSocket upgrades the server completes per event-loop turn. Upgrades
   * that arrive together (2,000 devices reconnecting after a restart, or a
   * flood) wait their turn in arrival order, so a connected device's
   * messages are read between slices instead of after all of them.
   */
  upgradesPerTurnMax: 16,
  /**
   * Main-thread time, in ms, after which a turn of upgrades completes no
   * more (at least one per turn): on a loaded machine 16 upgrades take far
   * longer than on an idle one, and a connected device's message waits for
   * the turn it arrives in.
   */
  upgradeTurnMsMax: 2,
  /** Most upgrades waiting for their turn; past it a new one is dropped. */
  upgradesWaitingMax: 4_096,
  /**
   * Close handshakes of WebSocket links the server runs per event-loop
   * turn. A peer's close frame is read at once but answered (close frame,
   * end of the stream, the session's teardown) in its turn, in arrival
   * order: 2,000 devices closing together would otherwise be one turn of
   * hundreds of ms. Nothing else of a link waits behind its close frame.
   */
  closesPerTurnMax: 16,
  /**
   * Main-thread time, in ms, after which a turn of close handshakes runs no
   * more (at least one per turn), as `upgradeTurnMsMax` for upgrades.
   */
  closeTurnMsMax: 2,
  /** Users in one page of `GET /api/users` unless `limit` says otherwise. */
  usersPerPageDefault: 100,
  /** Most users in one page of `GET /api/users`. */
  usersPerPageMax: 1_000,
  /**
   * Most users `GET /api/users?all=1` sends in one response (the whole
   * roster, or every match of the filters); past it `TOO_MANY_USERS`, and
   * the caller pages instead. 10,000 views are about 4 MB of JSON; a
   * 100,000-user roster in one response (40 MB, seconds of the server's
   * main thread) is what paging exists to avoid.
   */
  usersAllMax: 10_000,
  /**
   * About the most bytes of users one response of `GET /api/users` carries
   * (JSON, byte arrays as base64): a page ends early past it (its `next`
   * cursor set), and `all=1` is refused. A user may hold 512 KiB, so 1,000
   * of them made a 495 MiB body and a 4.5 s stall, and 900 more a string
   * longer than V8 allows (the request was never answered).
   */
  usersPageBytesMax: 16 * 1024 * 1024,
  // Issue 11: floods
  /**
   * Messages one untrusted link (a device's at the server, a LAN peer's) may
   * send per second, on average (a token bucket refilled at this rate). A
   * device's full sync is a handful of messages; the load bench's devices
   * send 10 a second. Past it the link is closed (1008 `RATE_LIMITED`).
   */
  linkMessagesPerSecondMax: 500,
  /**
   * How often a device tells its links (its server, its LAN peers) of its
   * changes once it writes faster than `deviceAnnounceFreePerSecond`, ms:
   * what it writes meanwhile goes merged, as one message. A device
   * enrolling users back to back (900 writes a second, a probe) sent one
   * message per write and was refused by its own server past
   * `linkMessagesPerSecondMax` (`RATE_LIMITED`).
   */
  deviceAnnounceIntervalMs: 10,
  /**
   * Changes a device tells at once per second of its clock, each as it is
   * made; past them, one merged message per `deviceAnnounceIntervalMs`:
   * 200 + 100 a second at most, under the server's 500.
   */
  deviceAnnounceFreePerSecond: 200,
  /** Messages one untrusted link may send in a burst (the bucket's size). */
  linkMessagesBurstMax: 2_000,
  /** Bytes one untrusted link may send per second, on average. */
  linkBytesPerSecondMax: 32 * 1024 * 1024,
  /**
   * Bytes one untrusted link may send in a burst: room for two messages of
   * `messageBytesMax` (a device pushing a large offline backlog, twice).
   */
  linkBytesBurstMax: 256 * 1024 * 1024,
  /**
   * Step 1s one untrusted link may have answered per second, on average:
   * each answer is a step 2 (2,000 empty step 1s made the server send 122
   * MB). Step 1s waiting behind a later one are not answered (the later
   * answer covers them); past the rate the link is closed (`RATE_LIMITED`).
   * A device asks at most a few times per sync; the load bench's probe
   * asks 20 times a second on one link.
   */
  step1AnswersPerSecondMax: 50,
  /** Step 1s one untrusted link may have answered in a burst. */
  step1AnswersBurstMax: 200,
  /**
   * Step 1s a device sends its server per second, on average, and in a
   * burst: under the two above, so that a device whose caller syncs after
   * every write (`whenIdle()` in a loop) waits rather than being closed
   * `RATE_LIMITED` (peers/device-sync/server-exchange.ts).
   */
  deviceStep1sPerSecondMax: 40,
  deviceStep1sBurstMax: 150,
  /**
   * Bytes of answers the peer sends all its untrusted links together, per
   * second on average (peers/replica/answer-bandwidth.ts): 20 made-up ids
   * reading a 16 MB roster as fast as they could were sent 415 MiB a
   * second and held an honest device's writes up 40 times longer. Past it,
   * answers wait for their next message, the link sent the least lately
   * first. A 1M-user roster (about 340 MB) fetched by one device comes out
   * of the burst and about a second of the rate.
   */
  answerBytesPerSecondMax: 64 * 1024 * 1024,
  /** Bytes of those answers sent at once before anyone waits (the bucket's size). */
  answerBytesBurstMax: 256 * 1024 * 1024,
  /**
   * A link known to the bucket and sent less than this lately (its count
   * halves every 30 s) goes at once, charged after: a device asking
   * deltas does not wait behind links reading the roster. A new one that
   * must wait starts as the most served, so made-up ids cannot use it.
   */
  answerBytesUnwaitedMax: 64 * 1024,
  /**
   * Most clients a step 1's state vector may name beyond those the
   * receiver's document names (the asker's own and its LAN neighbours' not
   * yet here). Checked on arrival, before the vector is decoded: one step 1
   * naming 3M clients (36 MB) held the server's loop 7 s.
   */
  stateVectorClientsMax: 65_536,
  /**
   * Answers an untrusted link may have waiting in its outbox (made as its
   * connection takes them); its next step 1 waits until fewer do, and its
   * other messages wait behind it (peers/sync-session/outbox.ts).
   */
  answersWaitingMax: 2,
  /**
   * Clients the state vectors of one untrusted link's step 1s may name per
   * second, and in a burst: answering costs about 1 µs per client named,
   * so a link sending the largest vectors at the step 1 rate would take
   * seconds of the server's CPU every second.
   */
  step1ClientsPerSecondMax: 200_000,
  step1ClientsBurstMax: 262_144,
  /** Bytes of inbound messages waiting on one connection before it is closed. */
  inboundBytesQueuedMax: 256 * 1024 * 1024,
  /**
   * Once the server closes a WebSocket link (a refusal, a replaced session,
   * a revocation), it reads nothing more of it: frames already on their way
   * (a refused flood sends thousands more before it sees the close) are
   * neither read nor parsed. The TCP stream is ended after the close frame,
   * and destroyed this long after, in ms, if the peer has not let go.
   */
  closedLinkLingerMs: 2_000,
  /**
   * Bytes of inbound messages waiting on a trusted connection (a device's
   * link to its server) past which it stops reading until half of that is
   * left (Connection.pauseReading): an answer of any size arrives as fast
   * as the device applies it, never past `inboundBytesQueuedMax`.
   */
  inboundPauseBytesMin: 64 * 1024 * 1024,
  /**
   * After the server closes with 1001 (restarting), a device reconnects
   * after a delay drawn uniformly in [0, this): a site's devices then come
   * back spread over this long, not all in the same second. At least 30 s.
   */
  reconnectAfterRestartSpreadMs: 45_000,
  /**
   * After the server closes a link with 4412 (a new generation), a device
   * reconnects (and makes its one full sync of the new generation) after
   * a delay of hash(deviceId) mod this: a site's 1,000 devices fetch the
   * roster spread over this long, each at its own fixed point of it.
   */
  generationMoveSpreadMs: 120_000,
  /**
   * Most devices fetching a new generation from the server at once
   * (server-peer/generation-moves.ts), for twice `generationMoveSpreadMs`
   * after a switch: a device past it is closed at admission, before its
   * hello (it stages nothing), with 1013 `TOO_MANY_MOVES`, and comes back
   * after its usual backoff (`retryDelayMs`). A place is held from the
   * admission to the end of the answer to its step 1 (at once freed when
   * that step 1 shows the device holds the generation already).
   */
  generationMovesInFlightMax: 16,
  /**
   * How long a link holding a move place (`generationMovesInFlightMax`) may
   * go without sending its step 1: a device sends it right after the
   * server's hello, so one that sends nothing is closed (1013
   * `TOO_MANY_MOVES`) and its place freed. Without it, links admitted and
   * left idle could hold every place for the whole window after a switch.
   */
  generationMoveStep1WaitMs: 30_000,
  /**
   * Refused updates per device whose content the server remembers as
   * missing (`deviceToServer` stays `failed` until it arrives, or the
   * device no longer holds it).
   */
  refusedClientsTrackedPerDeviceMax: 256,
  // Issue 11: LAN floods (the door of a device's LAN links, peers/lan-auth.ts)
  /**
   * Most LAN links of one device still at its door (their peer's
   * certificate not shown yet) at once: anyone holding the site key gets
   * this far. Past it a waiting link is closed with 1013
   * `TOO_MANY_HANDSHAKES` (its dialler retries with backoff) to make room
   * for the newcomer: the oldest of the host holding the most places
   * (peers/lan-door.ts). A device's peers dialling it together after a
   * restart each wait milliseconds here.
   */
  lanHandshakesInFlightMax: 8,
  /**
   * Most LAN refusals a device logs an hour (`lan-link-refused`, and a LAN
   * link's `write-refused`), each cause (code and peer) once
   * (peers/log-limiter.ts): a peer's identity costs nothing to mint.
   */
  lanRefusalsLoggedPerHourMax: 60,
  /** The window `lanRefusalsLoggedPerHourMax` counts in, ms. */
  lanRefusalsLogWindowMs: 60 * 60_000,
  /** Causes of LAN refusals a device remembers having logged (then forgotten all at once). */
  lanRefusalCausesRememberedMax: 256,
  /**
   * Wrong admin tokens one address may send in a minute (sign-ins and
   * Bearer requests); past it, 429 `RATE_LIMITED` until the minute is out
   * (server-peer/admin-sessions.ts, TokenGuesses).
   */
  adminTokenGuessesPerMinuteMax: 60,
  /**
   * Largest message a LAN link reads before its peer is admitted, in bytes:
   * a `lan-auth` frame (certificate and proof) is under 1 KiB. A longer
   * frame closes the link with 1009 `MESSAGE_TOO_LARGE` as soon as its
   * length prefix arrives, before any of it is buffered (128 MiB otherwise).
   */
  lanHandshakeMessageBytesMax: 64 * 1024,
  /**
   * Most admitted LAN links of one device (by its certificate) at a peer at
   * once: two devices link both ways (each dials the other, two streams a
   * connection: four), and a restart may leave four that have not closed yet. Past it a new link is closed
   * with 1008 `TOO_MANY_LINKS`: one certificate shown from many libp2p
   * identities would otherwise get `lanPeersMax` links, each with its own
   * buffers and per-second allowances.
   */
  lanLinksPerDeviceMax: 8,
  /**
   * Relayed envelopes one signed message of a LAN link may carry that are
   * refused while the link goes on (the server's links excuse them all) (a writer revoked, or a genuine certificate expired or
   * reset since the relay logged it; PROTOCOL.md, "Refusals"). Past it the
   * link closes with the refusal's code: each costs a signature check, and
   * a peer that keeps relaying a revoked writer's envelopes is not worth
   * reading.
   */
  staleEnvelopesPerMessageMax: 256,
  // Issue 11: signed writes
  /** Most envelopes one signed message carries (a step 2 answering a long-offline peer). */
  envelopesPerMessageMax: 100_000,
  /**
   * How far a device's join proof may be from the server's clock, in ms:
   * wider than a site's clock skew (the simulator runs peers up to 15
   * minutes off), short enough that a captured join URL is soon worthless
   * (and each proof is good once).
   */
  joinSkewMsMax: 60 * 60_000,
  /**
   * A time a CLOCK_SKEW close names is taken for join proofs when it is
   * more than this off the device's clock: less than `joinSkewMsMax`, as a
   * clock just past the hour when the server judged the proof may be just
   * within it when the refusal arrives (a round trip later). Stamps take it
   * only past `joinSkewMsMax` (peers/server-link-signing.ts).
   */
  joinTimeTakenPastMs: 55 * 60_000,
  /**
   * How long a device sends the same join URL again while its attempts do
   * not connect (peers/ws-client.ts): a proof that never reached the server
   * was never spent, and an offline device signs one every this long, not
   * one per retry. One the server did take (its acceptance lost on the way
   * back) is refused as replayed and the device joins past it at once.
   */
  joinUrlReuseMsMax: 5 * 60_000,
  /**
   * Join proofs of one device the server remembers (within the skew bound)
   * to refuse a replay of one: far more than a device joins in an hour
   * (its reconnects back off).
   */
  joinProofsKeptPerDeviceMax: 64,
  // Issue 10: admin page
  /**
   * Admin page sessions held at once (sign-ins with the admin token); a
   * sign-in past it ends the least recently used session.
   */
  adminSessionsMax: 32,
  /** An admin session unused this long ends, in ms. */
  adminSessionIdleMsMax: 30 * 60_000,
  /** An admin session ends this long after its sign-in however used, in ms. */
  adminSessionMsMax: 12 * 60 * 60_000,
  /** Live update streams (`GET /api/stream`) open at once; past it one is refused. */
  adminStreamsMax: 16,
  /** A live update stream sends a comment line this often when idle, in ms (proxies, dead peers). */
  adminStreamHeartbeatMs: 15_000,
  /** How often open live update streams look for device and event changes, in ms. */
  adminStreamPollMs: 250,
  /**
   * Changed device records go out at most this often, in ms: under heavy
   * traffic every sync moves a device's last-seen time, and the page needs
   * no more than a glance a second.
   */
  adminStreamDevicesIntervalMs: 1_000,
  /** Most events one live update message carries (the rest follow in the next). */
  adminStreamEventsPerMessageMax: 500,
  /** Longest search text of `GET /api/users?q=`, in characters. */
  userSearchCharsMax: 256,
} as const
