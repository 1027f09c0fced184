/**
 * `POST /api/exports` (issue 10): `{ userIds?, groupIds?, passphrase?,
 * generatePassphrase? }` in, the export file's bytes out
 * (`application/octet-stream`), with its expiry in the
 * `X-Rostersync-Expires-At` header (ms since the epoch), its key source in
 * `X-Rostersync-Key-Source` (`site-key`, the default; `passphrase`;
 * `none`) and, only when the request asked for one to be generated, the
 * passphrase in `X-Rostersync-Passphrase` (the response is `no-store`). One function, so
 * that the admin page and the CLI call the same thing; errors are the API's
 * typed JSON errors (`INVALID_OPTIONS`, `USER_NOT_FOUND`, `EXPORT_TOO_LARGE`,
 * `EXPORT_PASSPHRASE_INVALID`).
 */
import type { ServerResponse } from 'node:http'
import type { ExportRequest, PreparedExport } from './export-users.js'

/** What the route needs of the server. */
export interface ExportTarget {
  exportUsers(request: ExportRequest): Promise<PreparedExport>
}

/** The file name a browser saves the export under. */
export const exportFileName = (createdAt: number): string =>
  `rostersync-export-${new Date(createdAt).toISOString().replace(/[:.]/g, '-')}.rsexport`

/** Answers one export request whose JSON body was read already. */
export async function serveExport(
  target: ExportTarget,
  body: unknown,
  res: ServerResponse,
  now: number,
): Promise<void> {
  const prepared = await target.exportUsers(body as ExportRequest)
  if (res.headersSent) return
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': prepared.file.byteLength,
    'content-disposition': `attachment; filename="${exportFileName(now)}"`,
    'x-rostersync-expires-at': String(prepared.expiresAt),
    'x-rostersync-users': String(prepared.users),
    'x-rostersync-key-source': prepared.keySource,
    'cache-control': 'no-store',
    ...(prepared.passphrase === undefined
      ? {}
      : { 'x-rostersync-passphrase': prepared.passphrase }),
  })
  res.end(prepared.file)
}
