// Case folding for the page's live device filter: the same fold as the
// server's searches (core/fold-case.ts), so a live update keeps exactly the
// rows the server's search would list. The page cannot import the server's
// TypeScript; test/fold-case.test.ts checks that the two agree.

const FOLDS = { ß: 'ss', ς: 'σ', ı: 'i', '\u0307': '' }

/** `text` case-folded (see core/fold-case.ts). */
export function foldCase(text) {
  const lower = text.toLowerCase()
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(lower)) return lower
  return text
    .normalize('NFC')
    .toLowerCase()
    .replace(/ß|ς|ı|\u0307/g, (c) => FOLDS[c] ?? c)
}
