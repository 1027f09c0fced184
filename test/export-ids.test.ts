/**
 * `rostersync export --users / --groups` (cli/export-command.ts, idList):
 * a comma separates ids unless escaped (`\,`; `\\` is a backslash), the
 * option may be given once per id, and an empty id is refused. A probe:
 * `--users 'Smith, John'` exported users "Smith" and "John", status 0.
 */
import { describe, expect, it } from 'vitest'
import { idList } from '../cli/export-command.js'

describe('export id lists', () => {
  it('split at unescaped commas, across repeated options', () => {
    const lists: string[] = []
    expect(
      idList('users', ['a, b', 'Smith\\, John', 'x\\\\,y', 'back\\\\\\,slash'], lists),
    ).toEqual(['a', 'b', 'Smith, John', 'x\\', 'y', 'back\\,slash'])
    expect(lists).toEqual(['a, b', 'x\\\\,y'])
    expect(idList('users', undefined)).toBeUndefined()
    expect(() => idList('groups', ['a,,b'])).toThrow(/--groups has an empty id/)
    expect(() => idList('groups', [' '])).toThrow(/empty id/)
  })
})
