// The admin page: sign-in with the admin token, then users, devices,
// events and field policies, with live updates while it is open.
import { render } from 'preact'
import { useCallback, useEffect, useRef, useState } from 'preact/hooks'
import { api, openStream, whenSignedOut } from './api.js'
import { DevicesPage } from './devices.js'
import { EventsPage } from './events.js'
import { PoliciesPage } from './policies.js'
import { ErrorLine, html } from './ui.js'
import { UsersPage } from './users.js'

const PAGES = [
  ['users', 'Users'],
  ['devices', 'Devices'],
  ['events', 'Events'],
  ['policies', 'Field policies'],
]

/** The sign-in form: the page's own, or (`again`) a modal over the page whose session ended. */
function SignIn({ onSignedIn, notice, again = false }) {
  const [token, setToken] = useState('')
  const [error, setError] = useState()
  const [busy, setBusy] = useState(false)
  const dialog = useRef(null)
  useEffect(() => {
    const d = dialog.current
    if (d !== null && !d.open) d.showModal()
    return () => {
      if (d?.open) d.close()
    }
  }, [])
  const submit = async (e) => {
    e.preventDefault()
    setBusy(true)
    setError(undefined)
    try {
      // The token goes in the body, never in a URL.
      await api('POST', '/api/session', { token: token.trim() })
      setToken('')
      onSignedIn()
    } catch (err) {
      setError(err)
    } finally {
      setBusy(false)
    }
  }
  const form = html`<form onSubmit=${submit}>
    <label for="token">Admin token</label>
    <input
      id="token"
      type="password"
      autocomplete="current-password"
      required
      value=${token}
      onInput=${(e) => setToken(e.currentTarget.value)}
    />
    <p class="hint">It is in <code>${'<data dir>/admin-token'}</code> on the server.</p>
    <button type="submit" class="primary" disabled=${busy}>Sign in</button>
    <${ErrorLine} error=${error} />
  </form>`
  const said = notice === undefined ? null : html`<p class="notice" role="status">${notice}</p>`
  if (again)
    // Modal, over the page as it was: what was typed and not saved stays
    // (an editor's fields, a search), and is saved once signed in again.
    // Escape does not close it: nothing behind works without a session.
    return html`<dialog
      ref=${dialog}
      class="confirm signin-again"
      aria-labelledby="signin-again-title"
      onCancel=${(e) => e.preventDefault()}
    >
      <h2 id="signin-again-title">Sign in again</h2>
      ${said} ${form}
    </dialog>`
  return html`<main class="signin">
    <h1>rostersync admin</h1>
    ${said} ${form}
  </main>`
}

/** One live stream for the whole page; pages subscribe to what they show. */
function useLive(session) {
  const listeners = useRef({ devices: new Set(), events: new Set() })
  const [state, setState] = useState('connecting')
  // Opened again for each session: a stream refused (401, the session
  // gone) is not retried by the browser.
  useEffect(
    () =>
      openStream({
        devices: (records) => listeners.current.devices.forEach((fn) => fn(records)),
        events: (events) => listeners.current.events.forEach((fn) => fn(events)),
        state: setState,
      }),
    [session],
  )
  const subscribe = useCallback((kind, fn) => {
    listeners.current[kind].add(fn)
    return () => listeners.current[kind].delete(fn)
  }, [])
  return { state, subscribe }
}

function Shell({ onSignOut, signOutError, session }) {
  const [page, setPage] = useState(() => {
    const wanted = location.hash.slice(1)
    return PAGES.some(([id]) => id === wanted) ? wanted : 'users'
  })
  const live = useLive(session)
  const go = (id) => {
    setPage(id)
    history.replaceState(null, '', '#' + id)
  }
  return html`<div class="shell">
    <header>
      <span class="brand">rostersync</span>
      <nav aria-label="Pages">
        ${PAGES.map(
          ([id, label]) =>
            html`<button
              type="button"
              class="tab"
              aria-current=${page === id ? 'page' : undefined}
              onClick=${() => go(id)}
            >
              ${label}
            </button>`,
        )}
      </nav>
      <span class=${'live ' + live.state} role="status" title="Live updates">
        ${live.state === 'live' ? 'Live' : 'Reconnecting…'}
      </span>
      <button type="button" onClick=${onSignOut}>Sign out</button>
    </header>
    <${ErrorLine} error=${signOutError} />
    <main>
      ${page === 'users' ? html`<${UsersPage} live=${live} />` : null}
      ${page === 'devices' ? html`<${DevicesPage} live=${live} />` : null}
      ${page === 'events' ? html`<${EventsPage} live=${live} />` : null}
      ${page === 'policies' ? html`<${PoliciesPage} />` : null}
    </main>
  </div>`
}

function App() {
  // undefined while asking the server whether this browser is signed in.
  const [signedIn, setSignedIn] = useState(undefined)
  const [notice, setNotice] = useState()
  // The session ended while the page was open: it stays, under a sign-in.
  const [ended, setEnded] = useState(false)
  // Counts sign-ins of this page: the live stream opens again with each.
  const [session, setSession] = useState(0)
  useEffect(() => {
    api('GET', '/api/session')
      .then((s) => setSignedIn(s.signedIn === true))
      .catch(() => setSignedIn(false))
    whenSignedOut(() => setEnded(true))
  }, [])
  // Signed out only once the server ended the session: a failed request
  // leaves it on (another tab, the cookie), so the page says so and stays.
  const [signOutError, setSignOutError] = useState()
  const signOut = async () => {
    setSignOutError(undefined)
    try {
      await api('DELETE', '/api/session')
    } catch (error) {
      // 401: the session had ended already.
      if (error.status !== 401) {
        setSignOutError({ message: `Not signed out (${error.message}). Try again.` })
        return
      }
    }
    setSignedIn(false)
    setEnded(false)
    setNotice('Signed out.')
  }
  if (signedIn === undefined) return html`<p class="loading">Loading…</p>`
  if (!signedIn)
    return html`<${SignIn}
      notice=${notice}
      onSignedIn=${() => {
        setNotice(undefined)
        setEnded(false)
        setSession((n) => n + 1)
        setSignedIn(true)
      }}
    />`
  return html`<${Shell} onSignOut=${signOut} signOutError=${signOutError} session=${session} /> ${
      ended
        ? html`<${SignIn}
            again=${true}
            notice="Your session ended. Sign in again: what you typed and did not save is still here."
            onSignedIn=${() => {
              setEnded(false)
              setSession((n) => n + 1)
            }}
          />`
        : null
    }`
}

render(html`<${App} />`, document.getElementById('app'))
