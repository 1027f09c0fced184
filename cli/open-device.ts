/** Opens a stopped device's data directory for one-shot CLI actions. */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { hasCode } from '../core/errors.js'
import type { DeviceOptions, DevicePeer } from '../peers/create-device.js'
import { checkRole, roleOfDir } from '../peers/data-role.js'
import { CliError, openFailure } from './args.js'

/**
 * The device id a data directory belongs to: its role file's, checked
 * against `--id` when both are given. A server's directory is refused
 * (`WRONG_DATA_DIR`) before anything is opened.
 */
export function deviceIdOf(dataDir: string, given: string | undefined): string | undefined {
  const role = existsSync(dataDir) ? roleOfDir(dataDir) : undefined
  checkRole(role, { role: 'device', id: given ?? '?' }, dataDir)
  const stored = role?.role === 'device' ? role.id : undefined
  if (given !== undefined && stored !== undefined && given !== stored)
    throw new CliError(
      `${dataDir} is device ${JSON.stringify(stored)}'s data, not ${JSON.stringify(given)}'s`,
    )
  return given ?? stored
}

/** Opens a device on its data directory, explaining a lock held by a running device. */
export async function openDevice(options: DeviceOptions): Promise<DevicePeer> {
  const { createDevice } = await import('../peers/create-device.js')
  try {
    return await createDevice(options)
  } catch (error) {
    if (hasCode(error, 'STORAGE_FAILED'))
      throw new CliError(
        openFailure(
          options.dataDir ?? 'the device data',
          error as Error,
          'is the device running on it? Stop it first',
        ),
        1,
      )
    throw error
  }
}

/** The site key from --site-key, --site-key-file or ROSTERSYNC_SITE_KEY (in that order). */
export async function siteKeyOf(
  given: string | undefined,
  file: string | undefined,
): Promise<string | undefined> {
  if (given !== undefined && file !== undefined)
    throw new CliError('--site-key and --site-key-file exclude each other')
  if (file !== undefined) {
    try {
      const key = (await readFile(file, 'utf8')).trim()
      if (key === '') throw new CliError(`--site-key-file ${file} is empty`)
      return key
    } catch (error) {
      if (error instanceof CliError) throw error
      throw new CliError(`cannot read --site-key-file ${file}: ${(error as Error).message}`)
    }
  }
  // Given empty, a key is a mistake (an unset variable), not "no key": the
  // server refuses it too.
  if (given === '') throw new CliError('--site-key is empty')
  const key = given ?? process.env.ROSTERSYNC_SITE_KEY
  return key === '' ? undefined : key
}
