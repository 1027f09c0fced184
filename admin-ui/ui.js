// Small pieces every page of the admin page uses: htm bound to preact, a
// confirmation dialog, an error line.
import { h } from 'preact'
import { useEffect, useRef } from 'preact/hooks'
import htm from 'htm'

/** Tagged template for preact elements. */
export const html = htm.bind(h)

/**
 * A modal confirmation (the native <dialog>): focus goes to Cancel, so
 * Enter never confirms by accident; Escape cancels.
 */
export function Confirm({ title, children, confirmLabel, danger, onConfirm, onCancel, busy }) {
  const dialog = useRef(null)
  const cancel = useRef(null)
  useEffect(() => {
    const d = dialog.current
    // Focus goes back where it was when the dialog closes (it fell to the page's body).
    const before = document.activeElement
    if (d !== null && !d.open) d.showModal()
    cancel.current?.focus()
    return () => {
      if (d?.open) d.close()
      if (before?.isConnected) setTimeout(() => before.focus(), 0)
    }
  }, [])
  return html`<dialog
    ref=${dialog}
    class="confirm"
    aria-labelledby="confirm-title"
    onCancel=${(e) => {
      e.preventDefault()
      onCancel()
    }}
  >
    <h2 id="confirm-title">${title}</h2>
    <div class="confirm-body">${children}</div>
    <div class="actions">
      <button type="button" ref=${cancel} onClick=${onCancel}>Cancel</button>
      <button
        type="button"
        class=${danger ? 'danger' : 'primary'}
        disabled=${busy}
        onClick=${onConfirm}
      >
        ${confirmLabel}
      </button>
    </div>
  </dialog>`
}

/**
 * `text` with its bidirectional controls (overrides, embeddings, isolates)
 * shown as visible marks: in a user's data they turned the text of a cell
 * around ("gnp.exe" shown as "exe.png"; a probe). The values stay as they
 * are; only what the page shows of them changes.
 */
export function shown(text) {
  if (typeof text !== 'string') return text
  return text.replace(BIDI, (c) => `⟦U+${c.codePointAt(0).toString(16).toUpperCase()}⟧`)
}

/** Bidirectional controls: embeddings, overrides, isolates, and the marks (LRM, RLM, ALM). */
const BIDI = /[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]/g

/**
 * Under a form field whose value holds bidirectional controls: the value as
 * {@link shown} shows it. The field itself shows the value as the text
 * is (a phone number filled "+1 555 <U+202E>0100" read "+1 555 0010"), and
 * marks typed into it would be saved.
 */
export function BidiNote({ value }) {
  if (typeof value !== 'string' || value.search(BIDI) < 0) return null
  return html`<p class="bidi-note">
    Holds bidirectional controls, which turn its text around: <code>${shown(value)}</code>
  </p>`
}

/** An error from the API, said once, where the action was. */
export function ErrorLine({ error }) {
  if (error === undefined || error === null) return null
  return html`<p class="error" role="alert">
    ${error.code === undefined ? '' : html`<code>${error.code}</code> `}${error.message}
  </p>`
}

/** Waits `ms` after the last change of `value` before calling `run`. */
export function useDebounced(value, ms, run) {
  useEffect(() => {
    const timer = setTimeout(() => run(value), ms)
    return () => clearTimeout(timer)
  }, [value])
}
