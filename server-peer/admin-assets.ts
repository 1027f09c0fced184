/**
 * The admin page's files, served by the server itself (a site's LAN often
 * has no internet: no CDN). The page is plain browser ES modules in
 * `admin-ui/` (no build step); preact, its hooks and htm are served
 * straight from node_modules, named by an import map in the page. Every
 * answer carries a strict Content-Security-Policy (scripts only from this
 * server plus the import map, by its hash; nothing inline otherwise; no
 * framing), `nosniff`, and an ETag so that a browser revalidates cheaply.
 */
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NotFoundError } from '../core/errors.js'
import { EVENT_TYPES } from '../core/events.js'

interface Asset {
  readonly body: Buffer
  readonly type: string
  readonly etag: string
}

const TYPES: Readonly<Record<string, string>> = {
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.html': 'text/html; charset=utf-8',
}

/** The browser modules of the UI library, by the name the page imports them with. */
const VENDOR: ReadonlyArray<{ name: string; pkg: string; file: string; url: string }> = [
  { name: 'preact', pkg: 'preact', file: 'dist/preact.mjs', url: '/admin/vendor/preact.mjs' },
  {
    name: 'preact/hooks',
    pkg: 'preact',
    file: 'hooks/dist/hooks.mjs',
    url: '/admin/vendor/preact-hooks.mjs',
  },
  { name: 'htm', pkg: 'htm', file: 'dist/htm.mjs', url: '/admin/vendor/htm.mjs' },
]

/** The page's own files: `admin-ui/` at the package root, from the sources or from `dist/`. */
function uiDir(): string {
  const here = dirname(fileURLToPath(import.meta.url))
  for (const candidate of [join(here, '..', 'admin-ui'), join(here, '..', '..', 'admin-ui')])
    if (existsSync(join(candidate, 'index.html'))) return candidate
  throw new Error(`admin-ui/ not found from ${here}`)
}

const typeOf = (name: string): string =>
  TYPES[name.slice(name.lastIndexOf('.'))] ?? 'application/octet-stream'

function asset(body: Buffer, type: string): Asset {
  return { body, type, etag: `"${createHash('sha256').update(body).digest('base64url')}"` }
}

/** Every file the page may ask for, by URL path, read once. */
function loadAssets(): { files: Map<string, Asset>; csp: string } {
  const dir = uiDir()
  const files = new Map<string, Asset>()
  for (const name of readdirSync(dir)) {
    if (name === 'index.html' || !(name.slice(name.lastIndexOf('.')) in TYPES)) continue
    files.set(`/admin/${name}`, asset(readFileSync(join(dir, name)), typeOf(name)))
  }
  // Made from core/events.ts, so the page's type filter never lags the log.
  files.set(
    '/admin/event-types.js',
    asset(
      Buffer.from(`export const EVENT_TYPES = ${JSON.stringify(EVENT_TYPES)}\n`),
      TYPES['.js'] ?? '',
    ),
  )
  const require = createRequire(import.meta.url)
  const imports: Record<string, string> = {}
  for (const vendor of VENDOR) {
    const root = packageRoot(require.resolve(vendor.pkg), vendor.pkg)
    files.set(vendor.url, asset(readFileSync(join(root, vendor.file)), TYPES['.mjs'] ?? ''))
    imports[vendor.name] = vendor.url
  }
  const importMap = JSON.stringify({ imports })
  const hash = createHash('sha256').update(importMap).digest('base64')
  const html = readFileSync(join(dir, 'index.html'), 'utf8').replace(
    '<!--importmap-->',
    `<script type="importmap">${importMap}</script>`,
  )
  files.set('/', asset(Buffer.from(html), TYPES['.html'] ?? ''))
  const csp = [
    "default-src 'none'",
    `script-src 'self' 'sha256-${hash}'`,
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ].join('; ')
  return { files, csp }
}

/**
 * The folder of package `name`, found up from its resolved entry point
 * (not every package exports its `package.json`).
 */
function packageRoot(entry: string, name: string): string {
  for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
    const manifest = join(dir, 'package.json')
    if (
      existsSync(manifest) &&
      (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === name
    )
      return dir
  }
  throw new Error(`package ${name} not found from ${entry}`)
}

let loaded: ReturnType<typeof loadAssets> | undefined

/** True when `path` is one of the page's files (`/`, `/admin/...`). */
export function isAssetPath(path: string): boolean {
  return path === '/' || path.startsWith('/admin/')
}

/** Serves one of the page's files (GET or HEAD); `NOT_FOUND` for any other path. */
export function serveAsset(path: string, req: IncomingMessage, res: ServerResponse): void {
  loaded ??= loadAssets()
  const file = loaded.files.get(path)
  if (file === undefined) throw new NotFoundError(`no file ${path.slice(0, 64)}`)
  const headers = {
    'content-type': file.type,
    'cache-control': 'no-cache',
    etag: file.etag,
    'content-security-policy': loaded.csp,
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
  }
  if (req.headers['if-none-match'] === file.etag) {
    res.writeHead(304, headers).end()
    return
  }
  res.writeHead(200, { ...headers, 'content-length': file.body.byteLength })
  res.end(req.method === 'HEAD' ? undefined : file.body)
}
