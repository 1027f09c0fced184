/** `rostersync import`: an export file into a stopped device's data directory. */
import { createReadStream, existsSync } from 'node:fs'
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { MessageTooLargeError } from '../core/errors.js'
import { limits } from '../core/limits.js'
import { CliError, parse } from './args.js'
import { passphraseOf } from './export-command.js'
import type { Command } from './main.js'
import { ROLE_FILE } from '../peers/data-role.js'
import { deviceIdOf, openDevice, siteKeyOf } from './open-device.js'

const help = `Usage: rostersync import <file | -> --data <device data dir> [options]

Imports an export file (rostersync export, POST /api/exports) into a device
whose sync is stopped: the device process must not be running. The file must
be its site server's and not expired (15 minutes); its users then show on the
device as the server's, until the device's next sync brings the server's own.
The file is encrypted. One exported without a passphrase (the default) opens
with the device's site key (--site-key, --site-key-file or ROSTERSYNC_SITE_KEY;
EXPORT_SITE_KEY_REQUIRED without one); one exported with a passphrase needs it
(--passphrase-file or ROSTERSYNC_EXPORT_PASSPHRASE). A bad file (expired,
another site's, corrupt, truncated, too large, of an older unencrypted format:
EXPORT_FORMAT_UNSUPPORTED) or a wrong passphrase (EXPORT_PASSPHRASE_INVALID)
changes nothing; a folder that held no device before holds none after a
refused file. <file> - reads the file from standard input.

Options:
  --data <dir>            the device's data directory (required)
  --id <id>               the device's id (default: the one its data directory names)
  --server-key <fp>       the server key's fingerprint (SHA256:..., printed by the
                          server at start-up): required for a device its server has
                          never admitted, which then pins that key
  --site-key <key>        the site's secret (or ROSTERSYNC_SITE_KEY): checks the file
                          is the site's, and opens a file exported without a passphrase
  --site-key-file <file>  read the site's secret from a file
  --passphrase-file <file>
                          the passphrase the file was exported with (its first
                          line), or ROSTERSYNC_EXPORT_PASSPHRASE: needed only for
                          a file exported with a passphrase
  --json                  print { imported, unchanged, expiresAt } as JSON
  -h, --help              this help`

export const importCommand: Command = {
  summary: "import an export file into a stopped device's data directory",
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      data: { type: 'string' },
      id: { type: 'string' },
      'site-key': { type: 'string' },
      'site-key-file': { type: 'string' },
      'server-key': { type: 'string' },
      json: { type: 'boolean', default: false },
      'passphrase-file': { type: 'string' },
    })
    const [file, extra] = positionals
    if (file === undefined)
      throw new CliError('the export file is required: rostersync import FILE --data DIR')
    if (extra !== undefined) throw new CliError(`unexpected argument ${extra}`)
    if (values.data === undefined)
      throw new CliError("--data <the device's data directory> is required")
    // A new device's folder is made (with --id), and removed again if the
    // import is refused (a probe: "no data directory" sent the operator of
    // a never-admitted device to make it by hand).
    const missing = !existsSync(values.data)
    if (missing && values.id === undefined)
      throw new CliError(
        `no data directory ${values.data}: give --id to make a new device there`,
        1,
      )
    const id = deviceIdOf(values.data, values.id)
    if (id === undefined) throw new CliError(`${values.data} does not name its device: give --id`)
    const bytes = await readExport(file)
    const passphrase = await passphraseOf(values['passphrase-file'])
    const siteKey = await siteKeyOf(values['site-key'], values['site-key-file'])
    // A folder that holds no device yet gets one only if the import goes
    // through: a refused file leaves it as it was.
    const dataDir = values.data
    // Only a folder with no database and no role file (a device from before
    // role files has a database: opening it rewrites its files, which a
    // cleanup by "what is new" would delete).
    // Made here, or not ours to remove: decided by the mkdir itself (one
    // made meanwhile by another process, a device started on it, must never
    // be removed with a refused import; a review).
    const made = missing && (await makeFolder(dataDir))
    const held = existsSync(join(dataDir, ROLE_FILE)) || existsSync(join(dataDir, 'CURRENT'))
    const before = held ? undefined : new Set(await readdir(dataDir))
    const device = await openDevice({
      id,
      dataDir,
      ...(siteKey === undefined ? {} : { siteKey }),
    }).catch(async (error: unknown) => {
      if (made) await rm(dataDir, { recursive: true, force: true })
      throw error
    })
    let result
    try {
      const fingerprint = values['server-key']
      result = await device.importUsers(bytes, {
        ...(fingerprint === undefined ? {} : { serverKeyFingerprint: fingerprint }),
        ...(passphrase === undefined ? {} : { passphrase }),
      })
    } catch (error) {
      await device.close().catch(() => undefined)
      if (made) await rm(dataDir, { recursive: true, force: true })
      else if (before !== undefined)
        for (const entry of await readdir(dataDir))
          if (!before.has(entry)) await rm(join(dataDir, entry), { recursive: true, force: true })
      throw error
    }
    await device.close()
    console.log(
      values.json
        ? JSON.stringify(result)
        : `imported ${result.imported} user(s) into device ${id} (${result.unchanged} unchanged: the device held them as new already)`,
    )
  },
}

/**
 * Reads the file, refusing one past the limit before reading it whole. A
 * device or a pipe says size 0 whatever it holds (`/dev/zero` grew the
 * process to 4.8 GB): its bytes are counted as they come.
 */
async function readExport(file: string): Promise<Uint8Array> {
  const max = limits.exportFileBytesMax
  try {
    if (file === '-') return await readCounted(process.stdin, max)
    const info = await stat(file)
    if (info.size > max) throw new MessageTooLargeError('the export file', info.size, max)
    if (info.isFile()) return new Uint8Array(await readFile(file))
    return await readCounted(createReadStream(file), max)
  } catch (error) {
    if (error instanceof MessageTooLargeError) throw error
    throw new CliError(`cannot read ${file}: ${(error as Error).message}`, 1)
  }
}

/** Reads a stream to its end, refusing it once past `max` bytes. */
async function readCounted(stream: AsyncIterable<Buffer>, max: number): Promise<Uint8Array> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of stream) {
    size += chunk.byteLength
    if (size > max) throw new MessageTooLargeError('the export file', size, max)
    chunks.push(chunk)
  }
  return new Uint8Array(Buffer.concat(chunks))
}

/** Makes `dir` (its parent must exist): true when made here, false when it was there already. */
async function makeFolder(dir: string): Promise<boolean> {
  try {
    await mkdir(dir, { mode: 0o700 })
    return true
  } catch (error) {
    if ((error as { code?: unknown }).code === 'EEXIST') return false
    throw new CliError(`cannot make ${dir}: ${(error as Error).message}`, 1)
  }
}
