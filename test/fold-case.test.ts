/**
 * Case folding: the server's searches (core/fold-case.ts) and the admin
 * page's live device filter (admin-ui/fold-case.js, plain JavaScript the
 * page loads) fold alike, so a live update keeps exactly the rows the
 * server's search lists. Checked on the cases the fold exists for and on
 * random text (any code point, and text built from the letters whose case
 * is special).
 *
 * Replay a failure: `ROSTERSYNC_SEED=<seed> npx vitest run test/fold-case.test.ts`.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
// @ts-expect-error: the page's module is plain JavaScript without types
import { foldCase as pageFold } from '../admin-ui/fold-case.js'
import { foldCase } from '../core/fold-case.js'
import { envInt, seedFromEnv } from './helpers/property-seed.js'

const seed = seedFromEnv()
const numRuns = envInt('ROSTERSYNC_PROPERTY_RUNS') ?? 500
console.log(
  `fold-case: seed ${seed}, ${numRuns} runs — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/fold-case.test.ts`,
)
const page = pageFold as (text: string) => string

/** Letters whose case does not round-trip by lower-casing alone, and their neighbours. */
const SPECIAL = [
  'ß',
  'ẞ',
  'ς',
  'σ',
  'Σ',
  'ı',
  'I',
  'i',
  'İ',
  '\u0307',
  'e\u0301',
  'é',
  'É',
  'A',
  'a',
  ' ',
]

describe('case folding', () => {
  it('matches the pairs lower-casing misses, on the server and on the page', () => {
    const cases: [string, string][] = [
      ['STRASSE', 'Hauptstraße'],
      ['straße', 'STRASSE'],
      ['ẞ', 'straße'],
      ['ilker', 'İlker'],
      ['ılker', 'ILKER'],
      ['ΟΔΟΣ', 'οδος'],
      ['Cafe\u0301', 'CAFÉ'],
    ]
    for (const fold of [foldCase, page]) {
      for (const [needle, text] of cases)
        expect(fold(text).includes(fold(needle)), `${needle} in ${text}`).toBe(true)
      expect(fold('Ann')).toBe('ann')
    }
  })

  it('folds every text alike on the server and on the page', () => {
    const special = fc.array(fc.constantFrom(...SPECIAL), { maxLength: 12 }).map((a) => a.join(''))
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: 'grapheme', maxLength: 24 }),
          fc.string({ unit: 'binary', maxLength: 24 }),
          special,
        ),
        (text) => {
          expect(page(text)).toBe(foldCase(text))
        },
      ),
      { seed, numRuns },
    )
  })
})
