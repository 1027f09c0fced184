// Events: the server's log filtered by period, device, user and type,
// newest first, in pages; new events appear live while the page is open.
import { useEffect, useState } from 'preact/hooks'
import { api, query, when } from './api.js'
import { EVENT_TYPES as TYPES } from './event-types.js'
import { ErrorLine, html, shown, useDebounced } from './ui.js'

/** Most rows the live tail keeps shown (the newest). */
const TAIL_ROWS_MAX = 500
const PAGE_SIZE = 100

/** A datetime-local input's value as ms since the epoch (undefined when empty). */
const msOf = (text) => (text === '' ? undefined : new Date(text).getTime())

function matches(event, f) {
  const since = msOf(f.since)
  const until = msOf(f.until)
  return (
    (f.type === '' || event.type === f.type) &&
    (f.device === '' || event.deviceId === f.device) &&
    (f.user === '' || event.userId === f.user) &&
    (since === undefined || event.at >= since) &&
    (until === undefined || event.at < until)
  )
}

function detail(e) {
  const parts = []
  if (e.origin !== undefined) parts.push('origin ' + e.origin)
  if (e.kind !== undefined) parts.push(e.kind)
  if (e.direction !== undefined) parts.push(e.direction)
  if (e.fields !== undefined && e.fields.length > 0) parts.push('fields: ' + e.fields.join(', '))
  if (e.code !== undefined) parts.push(e.code)
  if (e.message !== undefined) parts.push(e.message)
  return parts.join(' · ')
}

export function EventsPage({ live }) {
  const [filters, setFilters] = useState({ since: '', until: '', device: '', user: '', type: '' })
  const [applied, setApplied] = useState(filters)
  const [events, setEvents] = useState([])
  const [more, setMore] = useState(false)
  const [tail, setTail] = useState(true)
  const [error, setError] = useState()

  useDebounced(filters, 300, setApplied)
  const fetchPage = async (beforeSeq) => {
    const page = await api(
      'GET',
      '/api/events' +
        query({
          type: applied.type,
          device: applied.device,
          user: applied.user,
          since: msOf(applied.since),
          until: msOf(applied.until),
          limit: PAGE_SIZE,
          beforeSeq,
        }),
    )
    setMore(page.length === PAGE_SIZE)
    setError(undefined)
    return page.reverse()
  }
  useEffect(() => {
    fetchPage(undefined).then(setEvents).catch(setError)
  }, [applied])
  useEffect(() => {
    if (!tail) return undefined
    return live.subscribe('events', (fresh) =>
      setEvents((shown) => {
        const newest = shown[0]?.seq ?? 0
        const add = fresh.filter((e) => e.seq > newest && matches(e, applied)).reverse()
        if (add.length === 0) return shown
        // The newest TAIL_ROWS_MAX: a page left open on a busy site grew
        // without end (3,100 rows after 3,000 writes, a probe); the older
        // ones are a click away ("Older events").
        const rows = [...add, ...shown]
        return rows.length <= TAIL_ROWS_MAX ? rows : rows.slice(0, TAIL_ROWS_MAX)
      }),
    )
  }, [applied, tail])
  // Rows the tail let go can be loaded again.
  useEffect(() => {
    if (tail && events.length >= TAIL_ROWS_MAX) setMore(true)
  }, [events])
  const older = async () => {
    try {
      const page = await fetchPage(events.at(-1)?.seq)
      setEvents([...events, ...page])
    } catch (err) {
      setError(err)
    }
  }
  const set = (key) => (e) => setFilters({ ...filters, [key]: e.currentTarget.value })

  return html`<section aria-labelledby="events-title">
    <h1 id="events-title">Events</h1>
    <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
      <div>
        <label for="ev-since">From</label>
        <input id="ev-since" type="datetime-local" value=${filters.since} onInput=${set('since')} />
      </div>
      <div>
        <label for="ev-until">Until</label>
        <input id="ev-until" type="datetime-local" value=${filters.until} onInput=${set('until')} />
      </div>
      <div>
        <label for="ev-device">Device</label>
        <input id="ev-device" value=${filters.device} onInput=${set('device')} />
      </div>
      <div>
        <label for="ev-user">User</label>
        <input id="ev-user" value=${filters.user} onInput=${set('user')} />
      </div>
      <div>
        <label for="ev-type">Type</label>
        <select id="ev-type" value=${filters.type} onChange=${set('type')}>
          <option value="">any</option>
          ${TYPES.map((t) => html`<option value=${t}>${t}</option>`)}
        </select>
      </div>
      <div class="check">
        <input
          id="ev-tail"
          type="checkbox"
          checked=${tail}
          onChange=${(e) => setTail(e.currentTarget.checked)}
        />
        <label for="ev-tail">Live tail</label>
      </div>
    </form>
    <${ErrorLine} error=${error} />
    <div class="table-wrap">
      <table class="events">
        <thead>
          <tr>
            <th scope="col">Time</th>
            <th scope="col">Type</th>
            <th scope="col">Device</th>
            <th scope="col">User</th>
            <th scope="col">Detail</th>
          </tr>
        </thead>
        <tbody>
          ${events.map(
            (e) =>
              html`<tr key=${e.seq}>
                <td>${when(e.at)}</td>
                <td><span class=${'type ' + e.type}>${e.type}</span></td>
                <td>${shown(e.deviceId ?? '')}</td>
                <td>${shown(e.userId ?? '')}</td>
                <td>${shown(detail(e))}</td>
              </tr>`,
          )}
          ${
            events.length === 0
              ? html`<tr>
                  <td colspan="5" class="empty">No events.</td>
                </tr>`
              : null
          }
        </tbody>
      </table>
    </div>
    <div class="pager">
      <button type="button" disabled=${!more} onClick=${older}>Older events</button>
    </div>
  </section>`
}
