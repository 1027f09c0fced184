/**
 * The plain-Yjs baseline of the network benches, built the way a Yjs
 * application without rules would be: a `ws` server speaking y-protocols'
 * sync messages (as y-websocket's server does: step 1 on connect, step 2 in
 * answer to step 1, then every update broadcast), clients doing the same,
 * and an append-only update log in LevelDB (`sync: true`, as y-leveldb
 * stores updates) where durability is part of the comparison.
 */
import { createServer as createHttpServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Level } from 'level'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import WebSocket, { WebSocketServer } from 'ws'
import * as syncProtocol from 'y-protocols/sync'
import * as Y from 'yjs'

/** y-websocket's message type of sync messages (its only one we use). */
const MESSAGE_SYNC = 0

/** Name of the one map that holds the roster, user id to record. */
export const PLAIN_MAP = 'users'

/** An append-only log of Yjs updates in LevelDB, every append fsynced. */
export class UpdateLog {
  private seq = 0
  private tail: Promise<void> = Promise.resolve()

  private constructor(private readonly db: Level<string, Uint8Array>) {}

  /** Opens (or creates) the log in `dir`. */
  static async open(dir: string): Promise<UpdateLog> {
    const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' })
    await db.open()
    return new UpdateLog(db)
  }

  /** Applies every stored update to `doc` (a client reopening its replica). */
  async load(doc: Y.Doc): Promise<void> {
    for await (const [key, update] of this.db.iterator()) {
      Y.applyUpdate(doc, update)
      this.seq = Number(key.slice(2)) + 1
    }
  }

  /** Appends `update`; appends are written in call order, each durable before it resolves. */
  append(update: Uint8Array): Promise<void> {
    const key = `u/${(this.seq++).toString().padStart(15, '0')}`
    this.tail = this.tail.then(() => this.db.put(key, update, { sync: true }))
    return this.tail
  }

  /** Resolves once every append so far is durable. */
  flushed(): Promise<void> {
    return this.tail
  }

  close(): Promise<void> {
    return this.db.close()
  }
}

/** Encodes one sync message whose body `write` fills in. */
function syncMessage(write: (encoder: encoding.Encoder) => void): Uint8Array {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, MESSAGE_SYNC)
  write(encoder)
  return encoding.toUint8Array(encoder)
}

/**
 * Handles one inbound sync message on `doc` and returns the reply to send
 * (step 2 for a step 1), if any, and which sync message it was.
 */
function handleSync(
  doc: Y.Doc,
  bytes: Uint8Array,
  origin: unknown,
): { reply: Uint8Array | undefined; syncType: number | undefined } {
  const decoder = decoding.createDecoder(bytes)
  if (decoding.readVarUint(decoder) !== MESSAGE_SYNC)
    return { reply: undefined, syncType: undefined }
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, MESSAGE_SYNC)
  const syncType = syncProtocol.readSyncMessage(decoder, encoder, doc, origin)
  // Only the header was written when the message needs no answer.
  const reply = encoding.length(encoder) > 1 ? encoding.toUint8Array(encoder) : undefined
  return { reply, syncType }
}

/** A listening plain-Yjs sync server. */
export interface PlainServer {
  readonly url: string
  readonly port: number
  close(): Promise<void>
}

/**
 * The plain baseline's message bound: its step 2 is one message however
 * large (for 1M plain records, past the 256 MiB this was), and
 * the baseline measures Yjs's time, not a bound (ws's default is 100 MiB).
 */
const PLAIN_MESSAGE_BYTES_MAX = 1024 * 1024 * 1024

/**
 * Serves `doc` on 127.0.0.1. With `log`, each local update is made durable
 * before it is broadcast, as rostersync's server does with its own writes.
 */
export async function startPlainServer(doc: Y.Doc, log?: UpdateLog): Promise<PlainServer> {
  const http = createHttpServer((_req, res) => res.writeHead(404).end())
  const wss = new WebSocketServer({ server: http, maxPayload: PLAIN_MESSAGE_BYTES_MAX })
  const clients = new Set<WebSocket>()
  const broadcast = (update: Uint8Array, origin: unknown): void => {
    const message = syncMessage((e) => syncProtocol.writeUpdate(e, update))
    for (const ws of clients)
      if (ws !== origin && ws.readyState === WebSocket.OPEN) ws.send(message)
  }
  doc.on('update', (update: Uint8Array, origin: unknown) => {
    if (log === undefined) broadcast(update, origin)
    else void log.append(update).then(() => broadcast(update, origin))
  })
  wss.on('connection', (ws) => {
    clients.add(ws)
    ws.on('close', () => clients.delete(ws))
    ws.on('message', (data: Buffer) => {
      const { reply } = handleSync(doc, new Uint8Array(data), ws)
      if (reply !== undefined) ws.send(reply)
    })
    ws.send(syncMessage((e) => syncProtocol.writeSyncStep1(e, doc)))
  })
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  const port = (http.address() as AddressInfo).port
  return {
    url: `ws://127.0.0.1:${port}`,
    port,
    async close() {
      for (const ws of clients) ws.terminate()
      wss.close()
      await new Promise<void>((resolve) => http.close(() => resolve()))
    },
  }
}

/** A plain-Yjs client connection. */
export interface PlainClient {
  /** Resolves once the server's step 2 is applied (and durable, with a log). */
  readonly synced: Promise<void>
  close(): void
}

/**
 * Connects `doc` to a plain server: sends step 1, answers the server's
 * step 1, applies step 2 and every later update. With `log`, every update
 * the document emits is appended to it, and `synced` waits for that too.
 */
export function connectPlain(doc: Y.Doc, url: string, log?: UpdateLog): PlainClient {
  if (log !== undefined) doc.on('update', (update: Uint8Array) => void log.append(update))
  const ws = new WebSocket(url, { maxPayload: PLAIN_MESSAGE_BYTES_MAX })
  ws.binaryType = 'nodebuffer'
  const synced = new Promise<void>((resolve, reject) => {
    ws.once('error', reject)
    ws.on('open', () => ws.send(syncMessage((e) => syncProtocol.writeSyncStep1(e, doc))))
    ws.on('message', (data: Buffer) => {
      const { reply, syncType } = handleSync(doc, new Uint8Array(data), 'server')
      if (reply !== undefined) ws.send(reply)
      if (syncType === syncProtocol.messageYjsSyncStep2) {
        resolve(log === undefined ? undefined : log.flushed())
      }
    })
  })
  return { synced, close: () => ws.close() }
}

/**
 * Sets every record into the roster map under its id, `batch` per
 * transaction, as the heap and enrol baselines build theirs.
 */
export function fillPlainMap(
  doc: Y.Doc,
  records: ReadonlyArray<{ readonly id: string }>,
  batch: number,
): void {
  const map = doc.getMap<unknown>(PLAIN_MAP)
  for (let from = 0; from < records.length; from += batch) {
    doc.transact(() => {
      for (const record of records.slice(from, from + batch)) map.set(record.id, record)
    })
  }
}
