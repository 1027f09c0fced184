// Users: a paged table searched by the server (id, name, email, group,
// card value; status and group filters), add, edit, delete, the source of
// each field, and the export of the selected users.
import { useEffect, useRef, useState } from 'preact/hooks'
import { api, BACKGROUND, downloadExport, getUser, query, when } from './api.js'
import { BidiNote, Confirm, ErrorLine, html, shown, useDebounced } from './ui.js'

const PAGE_SIZE = 50

/** Events of a change of some user: the page shown is loaded again. */
const USER_EVENTS = new Set([
  'user-update-succeeded',
  'user-deleted',
  'users-imported',
  'policy-changed',
  'history-compacted',
])

/** How long the page waits after a change of users before loading again, ms (changes come in bursts). */
const RELOAD_AFTER_MS = 500

/** The longest a live reload waits for its answer before the next may start, ms. */
const RELOAD_WAIT_MS = 30_000

export function UsersPage({ live }) {
  const [filters, setFilters] = useState({ q: '', status: '', group: '' })
  const [applied, setApplied] = useState(filters)
  // Cursors of the pages seen: [undefined, next of page 1, ...].
  const [cursors, setCursors] = useState([undefined])
  const [page, setPage] = useState({ users: [], next: null })
  const [error, setError] = useState()
  const [loading, setLoading] = useState(true)
  const [selected, setSelected] = useState(new Set())
  const [editing, setEditing] = useState(undefined)
  const [fields, setFields] = useState([])
  const [exported, setExported] = useState()
  // The server's key fingerprint: a device it never admitted needs it to import an export.
  const [serverKey, setServerKey] = useState()
  useEffect(() => {
    api('GET', '/api/session')
      .then((s) => setServerKey(s.serverKeyFingerprint))
      .catch(() => undefined)
  }, [])
  // How the export is encrypted: 'site' (the site key, the default),
  // 'generate' (a passphrase the server generates) or 'given' (typed here).
  const [protect, setProtect] = useState('site')
  const [passphrase, setPassphrase] = useState('')
  const filtered = applied.q !== '' || applied.status !== '' || applied.group !== ''

  useDebounced(filters, 250, (f) => {
    // Filters as they are in force (the first run, on mount): nothing to
    // reset. It reset the pages, undoing a "Next page" clicked meanwhile.
    if (f.q === applied.q && f.status === applied.status && f.group === applied.group) return
    setApplied(f)
    setCursors([undefined])
  })
  const after = cursors.at(-1)
  // Only the latest request's answer is shown: an earlier one answered
  // later (the first page of a large roster, then a search) showed what
  // was asked before.
  const latest = useRef(0)
  // `background`: a live reload, not the administrator's action (api.js, BACKGROUND).
  const load = async (background = false) => {
    const asked = ++latest.current
    // A live reload says nothing: the status region (aria-live) flipped
    // "Loading…" and "Page 1" with every change on a busy site (a probe).
    if (!background) setLoading(true)
    try {
      const params = { ...applied, limit: PAGE_SIZE, after, total: filtered ? 1 : undefined }
      const answer = await api(
        'GET',
        '/api/users' + query(params),
        undefined,
        background ? BACKGROUND : {},
      )
      if (asked !== latest.current) return
      setPage(answer)
      setError(undefined)
    } catch (err) {
      if (asked === latest.current) setError(err)
    } finally {
      if (asked === latest.current) setLoading(false)
    }
  }
  useEffect(() => {
    void load()
  }, [applied, after])
  // Live: a user changed anywhere (another tab, the API, a device's fill)
  // loads the page shown again; it went stale without a word (a probe).
  // One such load at a time, the next at least RELOAD_AFTER_MS after the
  // last answered: started on every event, each answer was overtaken by
  // the next request, and a busy site kept the page "Loading…" (a review).
  const reload = useRef()
  reload.current = load
  const subscribe = live?.subscribe
  useEffect(() => {
    if (subscribe === undefined) return undefined
    let timer
    let running = false
    let again = false
    let stopped = false
    const schedule = () => {
      if (timer === undefined && !stopped) timer = setTimeout(run, RELOAD_AFTER_MS)
    }
    const run = async () => {
      timer = undefined
      running = true
      again = false
      let wait
      try {
        // At most RELOAD_WAIT_MS: a request that never answers must not
        // stop the live reloads for good (its answer still shows if it comes).
        await Promise.race([
          reload.current(true),
          new Promise((resolve) => (wait = setTimeout(resolve, RELOAD_WAIT_MS))),
        ])
      } finally {
        clearTimeout(wait)
        running = false
        if (again) schedule()
      }
    }
    const stop = subscribe('events', (fresh) => {
      if (!fresh.some((e) => USER_EVENTS.has(e.type))) return
      if (running) again = true
      else schedule()
    })
    return () => {
      stopped = true
      clearTimeout(timer)
      stop()
    }
  }, [subscribe])
  useEffect(() => {
    api('GET', '/api/policies')
      .then((p) => setFields(p.fields))
      .catch(setError)
  }, [])

  const toggle = (id) => {
    const next = new Set(selected)
    if (next.has(id)) next.delete(id)
    else next.add(id)
    setSelected(next)
  }
  const allOnPage = page.users.length > 0 && page.users.every((u) => selected.has(u.id))
  const toggleAll = () => {
    const next = new Set(selected)
    for (const u of page.users) {
      if (allOnPage) next.delete(u.id)
      else next.add(u.id)
    }
    setSelected(next)
  }
  // `group`: the whole group (every member, whatever page shows), else the selection.
  const doExport = async (group) => {
    try {
      const protection =
        protect === 'generate'
          ? { generatePassphrase: true }
          : protect === 'given'
            ? { passphrase }
            : {}
      const chosen = group === undefined ? { userIds: [...selected] } : { groupIds: [group] }
      // The notice of an earlier export goes: next to a refusal it read as this one's.
      setExported(undefined)
      setExported(await downloadExport(chosen, protection))
      setError(undefined)
    } catch (err) {
      setError(err)
    }
  }
  const set = (key) => (e) => setFilters({ ...filters, [key]: e.currentTarget.value })
  // What opened the editor, focused again when it closes.
  const opener = useRef()
  const addButton = useRef()
  const edit = (id) => {
    opener.current = document.activeElement
    setEditing(id)
  }

  return html`<section aria-labelledby="users-title">
    <div class="title-row">
      <h1 id="users-title">Users</h1>
      <button type="button" class="primary" ref=${addButton} onClick=${() => edit(null)}>
        Add user
      </button>
    </div>
    <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
      <div>
        <label for="user-q">Search</label>
        <input
          id="user-q"
          type="search"
          placeholder="id, name, email, group, card"
          maxlength="256"
          value=${filters.q}
          onInput=${set('q')}
        />
      </div>
      <div>
        <label for="user-status">Status</label>
        <select id="user-status" value=${filters.status} onChange=${set('status')}>
          <option value="">any</option>
          <option value="active">active</option>
          <option value="disabled">disabled</option>
        </select>
      </div>
      <div>
        <label for="user-group">Group</label>
        <input id="user-group" maxlength="256" value=${filters.group} onInput=${set('group')} />
      </div>
    </form>
    <div class="toolbar">
      <span role="status" aria-live="polite">
        ${
          loading
            ? 'Loading…'
            : error !== undefined
              ? 'Not loaded (see the error below)'
              : filtered && page.total !== undefined
                ? `${page.total} matching user(s)`
                : `Page ${cursors.length}`
        }
      </span>
      <label for="export-protect">Encrypt export under</label>
      <select
        id="export-protect"
        value=${protect}
        onChange=${(e) => setProtect(e.currentTarget.value)}
      >
        <option value="site">the site key</option>
        <option value="given">a passphrase I give</option>
        <option value="generate">a generated passphrase</option>
      </select>
      ${
        protect === 'given'
          ? html`<label for="export-passphrase-input">Passphrase for the export</label>
              <input
                id="export-passphrase-input"
                type="password"
                autocomplete="new-password"
                minlength="12"
                value=${passphrase}
                onInput=${(e) => setPassphrase(e.currentTarget.value)}
              />`
          : null
      }
      <button type="button" disabled=${selected.size === 0} onClick=${() => doExport()}>
        Export selected (${selected.size})
      </button>
      ${
        applied.group === ''
          ? null
          : html`<button type="button" onClick=${() => doExport(applied.group)}>
              Export group ${applied.group}
            </button>`
      }
      ${
        selected.size === 0
          ? null
          : html`<button type="button" onClick=${() => setSelected(new Set())}>
              Clear selection
            </button>`
      }
    </div>
    ${
      exported === undefined
        ? null
        : html`<p class="notice" role="status">
            Export saved as ${exported.name}; it can be imported until${' '}
            ${when(exported.expiresAt)}.${' '}
            ${
              exported.keySource === 'site-key'
                ? 'It is encrypted under the site key: a device of this site imports it without a passphrase. '
                : exported.keySource === 'none'
                  ? 'This site has no site key: the file is not encrypted for secrecy; keep it safe. '
                  : exported.passphrase === undefined
                    ? 'It is encrypted under the passphrase you gave: whoever imports it needs it. '
                    : null
            }
            ${
              exported.passphrase === undefined
                ? null
                : html`It is encrypted: whoever imports it needs the passphrase${' '}
                    <code aria-label="Export passphrase">${exported.passphrase}</code> (shown once,
                    not kept).${' '}`
            }
            ${
              serverKey === undefined
                ? null
                : html`A device this server never admitted imports it given the server's key
                    fingerprint <code aria-label="Server key fingerprint">${serverKey}</code> (<code
                      >rostersync import --server-key</code
                    >, or <code>serverKeyFingerprint</code>).`
            }
          </p>`
    }
    <${ErrorLine} error=${error} />
    <div class="table-wrap">
      <table class="users">
        <thead>
          <tr>
            <th scope="col">
              <input
                type="checkbox"
                aria-label="Select every user on this page"
                checked=${allOnPage}
                onChange=${toggleAll}
              />
            </th>
            <th scope="col">Id</th>
            <th scope="col">Name</th>
            <th scope="col">Email</th>
            <th scope="col">Status</th>
            <th scope="col">Groups</th>
            <th scope="col">Cards</th>
            <th scope="col"><span class="sr-only">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          ${page.users.map(
            (u) =>
              html`<tr key=${u.id}>
                <td>
                  <input
                    type="checkbox"
                    aria-label=${'Select ' + u.id}
                    checked=${selected.has(u.id)}
                    onChange=${() => toggle(u.id)}
                  />
                </td>
                <td><code>${shown(u.id)}</code></td>
                <td>${shown(u.name ?? '')}</td>
                <td>${shown(u.email ?? '')}</td>
                <td>${u.status ?? ''}</td>
                <td>${shown((u.groups ?? []).join(', '))}</td>
                <td>${(u.cards ?? []).length || ''}</td>
                <td>
                  <button type="button" onClick=${() => edit(u.id)}>
                    Edit<span class="sr-only"> ${u.id}</span>
                  </button>
                </td>
              </tr>`,
          )}
          ${
            !loading && error === undefined && page.users.length === 0
              ? html`<tr>
                  <td colspan="8" class="empty">No users${filtered ? ' match' : ''}.</td>
                </tr>`
              : null
          }
        </tbody>
      </table>
    </div>
    <div class="pager">
      <button
        type="button"
        disabled=${cursors.length <= 1}
        onClick=${() => setCursors(cursors.slice(0, -1))}
      >
        Previous page
      </button>
      <button
        type="button"
        disabled=${page.next === null}
        onClick=${() => setCursors([...cursors, page.next])}
      >
        Next page
      </button>
    </div>
    ${
      editing === undefined
        ? null
        : html`<${UserEditor}
            id=${editing}
            fields=${fields}
            onClose=${(changed) => {
              setEditing(undefined)
              if (changed) void load()
              // Focus goes back to what opened the editor (it fell to the page's body).
              const back = opener.current
              setTimeout(() => (back?.isConnected ? back : addButton.current)?.focus(), 0)
            }}
          />`
    }
  </section>`
}

/** What a field's value looks like in a form input, by kind. */
function toInput(kind, value) {
  if (value === undefined || value === null) return kind === 'boolean' ? false : ''
  switch (kind) {
    case 'list':
      return value.map(listItemText).join(', ')
    case 'cards':
      return value.map((c) => `${c.type}:${c.value}`).join('\n')
    case 'pin':
      return ''
    case 'number':
      return String(value)
    default:
      return value
  }
}

/**
 * One list item as the editor writes it: in double quotes (a quote inside
 * doubled, as in CSV) when it holds a comma or a quote, or starts or ends
 * with a space; else as it is. A group id `Sales, EMEA` must come back as
 * one item, not two.
 */
function listItemText(item) {
  return /[,"]|^\s|\s$/.test(item) ? `"${item.replaceAll('"', '""')}"` : item
}

/** The items of a list as typed: separated by commas, an item in double quotes taken as it is. */
function listItems(text) {
  const items = []
  let i = 0
  while (i < text.length) {
    while (i < text.length && /\s/.test(text[i])) i++
    if (i >= text.length) break
    let item = ''
    if (text[i] === '"') {
      // Quoted: up to the closing quote ("" is one quote), then to the comma.
      i++
      for (; i < text.length; i++) {
        if (text[i] !== '"') item += text[i]
        else if (text[i + 1] === '"') item += text[i++]
        else break
      }
      const comma = text.indexOf(',', i)
      i = comma < 0 ? text.length : comma + 1
    } else {
      const comma = text.indexOf(',', i)
      const end = comma < 0 ? text.length : comma
      item = text.slice(i, end).trim()
      i = end + 1
    }
    if (item !== '') items.push(item)
  }
  return items
}

/** A form input's text as the field's value; undefined leaves the field out. */
function fromInput(kind, text) {
  switch (kind) {
    case 'list':
      return listItems(text)
    case 'cards':
      return text
        .split('\n')
        .map((line) => line.trim())
        .filter((line) => line !== '')
        .map((line) => {
          const colon = line.indexOf(':')
          return colon < 0
            ? { type: line, value: '' }
            : { type: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() }
        })
    case 'number':
      return text === '' ? null : Number(text)
    case 'boolean':
      return text
    default:
      return text === '' ? null : text
  }
}

/** Fields a form can edit; byte fields (templates, photos) are only shown. */
const EDITABLE = new Set(['text', 'status', 'date', 'list', 'pin', 'cards', 'number', 'boolean'])

/** The bytes a base64 text holds (its padding counted out: 1 byte is `AQ==`, not 3). */
function base64Bytes(text) {
  const padding = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0
  return Math.floor((text.length * 3) / 4) - padding
}

function describeBytes(kind, value) {
  if (value === undefined) return '—'
  if (kind === 'templates') return `${value.length} template(s)`
  return value.base64 === undefined ? '—' : `${base64Bytes(value.base64)} bytes`
}

function SourceLine({ source }) {
  if (source === undefined) return null
  let text
  if (source.source === 'device') text = `filled by device ${source.deviceId}`
  else if (source.source === 'local') text = "the server's device-specific value"
  else if (source.origin === 'device')
    text = `server (filled by device ${source.deviceId ?? '?'}, adopted)`
  else text = 'server'
  return html`<span class="source">
    ${text}${source.at === undefined ? '' : ', ' + when(source.at)}
    ${source.policy === 'shared' ? '' : ` · ${source.policy}`}
  </span>`
}

/** A refusal because the user changed since the form was filled, said as such. */
function changedMeanwhile(err) {
  // The session ended: the sign-in dialog says so, and the edit is kept to
  // be saved once signed in; an AUTH_FAILED left here stayed after it.
  if (err?.status === 401) return undefined
  if (err?.code !== 'PRECONDITION_FAILED') return err
  return {
    code: err.code,
    message:
      'someone changed this user since you opened it (another administrator, or a device filling a field): nothing was saved. Close, open it again, and redo your change.',
  }
}

/** Why `id` cannot be a user's id (core/schema.ts, userIdSchema), or undefined. */
function idProblem(id) {
  if (id === '') return 'give the user an id'
  if (id === '.' || id === '..') return 'an id cannot be "." or ".."'
  if (/[/\\]/.test(id)) return 'an id cannot hold "/" or "\\"'
  if (/\p{Cc}/u.test(id)) return 'an id cannot hold control characters'
  return undefined
}

/** Add (id null) or edit a user; the source of each field beside it. */
function UserEditor({ id, fields, onClose }) {
  const adding = id === null
  const [user, setUser] = useState(adding ? {} : undefined)
  // The tag of the view the form shows: a save is refused if the user changed since.
  const [etag, setEtag] = useState()
  const [sources, setSources] = useState({})
  const [values, setValues] = useState({})
  const [newId, setNewId] = useState('')
  const [error, setError] = useState()
  const [busy, setBusy] = useState(false)
  const [confirmDelete, setConfirmDelete] = useState(false)
  const region = useRef(null)
  // The editor opens below the table: bring it into view and move focus there.
  useEffect(() => {
    region.current?.scrollIntoView({ block: 'start' })
    region.current?.focus()
  }, [id])

  useEffect(() => {
    if (adding) return
    Promise.all([getUser(id), api('GET', `/api/users/${encodeURIComponent(id)}/sources`)])
      .then(([{ user: u, etag: tag }, s]) => {
        setUser(u)
        setEtag(tag)
        setSources(Object.fromEntries(s.fields.map((f) => [f.field, f])))
        setValues(Object.fromEntries(fields.map((f) => [f.field, toInput(f.kind, u[f.field])])))
      })
      .catch(setError)
  }, [id])

  const save = async (e) => {
    e.preventDefault()
    setBusy(true)
    setError(undefined)
    try {
      const change = {}
      for (const f of fields) {
        if (!EDITABLE.has(f.kind)) continue
        const text = values[f.field]
        if (text === undefined) continue
        if (f.kind === 'pin' && text === '') continue
        if (!adding && text === toInput(f.kind, user[f.field])) continue
        const value = fromInput(f.kind, text)
        if (adding && (value === null || (Array.isArray(value) && value.length === 0))) continue
        change[f.field] = value
      }
      // Checked here, in plain words: the request made of such an id named
      // the endpoint it reached ("no endpoint /api/") or a path segment.
      if (adding) {
        const problem = idProblem(newId.trim())
        if (problem !== undefined) throw { code: 'INVALID_RECORD', message: `Id: ${problem}` }
      }
      // Create only: an existing id is refused (USER_EXISTS), never replaced.
      if (adding)
        await api('PUT', `/api/users/${encodeURIComponent(newId.trim())}`, change, {
          'if-none-match': '*',
        })
      else if (Object.keys(change).length > 0)
        await api(
          'PATCH',
          `/api/users/${encodeURIComponent(id)}`,
          change,
          etag === undefined ? {} : { 'if-match': etag },
        )
      onClose(true)
    } catch (err) {
      setError(changedMeanwhile(err))
    } finally {
      setBusy(false)
    }
  }
  const remove = async () => {
    setBusy(true)
    try {
      await api(
        'DELETE',
        `/api/users/${encodeURIComponent(id)}`,
        undefined,
        etag === undefined ? {} : { 'if-match': etag },
      )
      onClose(true)
    } catch (err) {
      setError(changedMeanwhile(err))
      setConfirmDelete(false)
    } finally {
      setBusy(false)
    }
  }

  const input = (f) => {
    const fieldId = 'field-' + f.field
    const value = values[f.field] ?? toInput(f.kind, undefined)
    const onInput = (e) =>
      setValues({
        ...values,
        [f.field]: f.kind === 'boolean' ? e.currentTarget.checked : e.currentTarget.value,
      })
    if (!EDITABLE.has(f.kind))
      return html`<output id=${fieldId}>${describeBytes(f.kind, user?.[f.field])}</output>`
    if (f.kind === 'status')
      return html`<select id=${fieldId} value=${value} onChange=${onInput}>
        <option value="">—</option>
        <option value="active">active</option>
        <option value="disabled">disabled</option>
      </select>`
    if (f.kind === 'cards')
      return html`<textarea
        id=${fieldId}
        rows="2"
        value=${value}
        onInput=${onInput}
        placeholder="csn:04A1B2C3"
      ></textarea>`
    if (f.kind === 'boolean')
      return html`<input id=${fieldId} type="checkbox" checked=${value} onChange=${onInput} />`
    return html`<input
      id=${fieldId}
      type=${f.kind === 'pin' ? 'password' : f.kind === 'number' ? 'number' : 'text'}
      autocomplete="off"
      placeholder=${f.kind === 'pin' ? (user?.pin ? 'set; type to change' : '') : f.kind === 'date' ? 'YYYY-MM-DD' : f.kind === 'list' ? 'comma, separated' : ''}
      value=${value}
      onInput=${onInput}
    />`
  }

  return html`<div
    class="editor"
    role="region"
    aria-labelledby="editor-title"
    tabindex="-1"
    ref=${region}
    onKeyDown=${(e) => {
      // Escape closes the editor (the delete dialog takes its own Escape).
      if (e.key === 'Escape' && !confirmDelete && !e.defaultPrevented) onClose(false)
    }}
  >
    <form onSubmit=${save}>
      <div class="title-row">
        <h2 id="editor-title">${adding ? 'Add a user' : html`Edit <code>${shown(id)}</code>`}</h2>
        <button type="button" onClick=${() => onClose(false)}>Close</button>
      </div>
      <${ErrorLine} error=${error} />
      ${user === undefined && error === undefined ? html`<p>Loading…</p>` : null}
      ${
        user === undefined
          ? null
          : html`<div class="fields">
              ${
                adding
                  ? html`<div class="field">
                      <label for="field-id">Id</label>
                      <input
                        id="field-id"
                        required
                        value=${newId}
                        onInput=${(e) => setNewId(e.currentTarget.value)}
                      />
                    </div>`
                  : null
              }
              ${fields.map(
                (f) =>
                  html`<div class="field" key=${f.field}>
                    <label for=${'field-' + f.field}>${f.field}</label>
                    ${input(f)}
                    <${BidiNote} value=${values[f.field]} />
                    <${SourceLine} source=${sources[f.field]} />
                  </div>`,
              )}
            </div>`
      }
      <div class="actions">
        <button type="submit" class="primary" disabled=${busy || user === undefined}>
          ${adding ? 'Add' : 'Save'}
        </button>
        ${
          adding
            ? null
            : html`<button type="button" class="danger" onClick=${() => setConfirmDelete(true)}>
                Delete
              </button>`
        }
      </div>
    </form>
    ${
      confirmDelete
        ? html`<${Confirm}
            title=${'Delete user ' + shown(id) + '?'}
            confirmLabel="Delete"
            danger=${true}
            busy=${busy}
            onConfirm=${remove}
            onCancel=${() => setConfirmDelete(false)}
          >
            <p>The user is removed on the server and on every device (rule 4).</p>
          <//>`
        : null
    }
  </div>`
}
