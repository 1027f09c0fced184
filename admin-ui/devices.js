// Devices: the registry, filtered by partial name, updated live while the
// page is open; revoke and reset a device's key (each after a confirmation)
// and approve; start a new generation of the site's document (history
// compaction, after a confirmation: every device reconnects and moves).
import { useEffect, useState } from 'preact/hooks'
import { api, query, when } from './api.js'
import { foldCase } from './fold-case.js'
import { Confirm, ErrorLine, html, useDebounced } from './ui.js'

function Direction({ dir }) {
  if (dir === undefined) return '—'
  return html`<span class=${'dir ' + dir.state}>
    ${dir.state}${dir.at === undefined ? '' : html`<br /><small>${when(dir.at)}</small>`}
    ${dir.error === undefined ? '' : html`<br /><code>${dir.error}</code>`}
  </span>`
}

export function DevicesPage({ live }) {
  const [filter, setFilter] = useState('')
  const [applied, setApplied] = useState('')
  const [devices, setDevices] = useState([])
  const [error, setError] = useState()
  // { id, action: 'revoke' | 'reset-key' } while a confirmation is open.
  const [confirming, setConfirming] = useState()
  const [busy, setBusy] = useState(false)
  // The history compaction's confirmation, and what the last one did.
  const [compacting, setCompacting] = useState(false)
  const [compacted, setCompacted] = useState()

  useDebounced(filter, 250, setApplied)
  const load = () =>
    api('GET', '/api/devices' + query({ nameContains: applied }))
      .then((list) => {
        setDevices(list)
        setError(undefined)
      })
      .catch(setError)
  useEffect(() => {
    void load()
  }, [applied])
  // Live: changed records replace the ones shown (or join them, when they match the filter);
  // forgotten ones go.
  useEffect(
    () =>
      live.subscribe('devices', (records) =>
        setDevices((shown) => {
          const byId = new Map(shown.map((d) => [d.id, d]))
          // The server's fold: lower-casing alone dropped a row its search
          // listed (`ẞ`, `İ`; a review).
          const needle = foldCase(applied)
          for (const record of records) {
            // A forgotten device comes as { id, forgotten: true }.
            if (record.forgotten !== true && foldCase(record.name).includes(needle))
              byId.set(record.id, record)
            else byId.delete(record.id)
          }
          return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
        }),
      ),
    [applied],
  )

  const act = async () => {
    setBusy(true)
    try {
      await api(
        'POST',
        `/api/devices/${encodeURIComponent(confirming.id)}/${confirming.action}`,
        undefined,
        // Approved only with the key the administrator compared (412 if it changed since).
        confirming.fingerprint === undefined
          ? {}
          : { 'x-rostersync-key-fingerprint': confirming.fingerprint },
      )
      setError(undefined)
      await load()
    } catch (err) {
      setError(err)
    } finally {
      setBusy(false)
      setConfirming(undefined)
    }
  }
  const compact = async () => {
    setBusy(true)
    try {
      setCompacted(await api('POST', '/api/generations'))
      setError(undefined)
    } catch (err) {
      setError(err)
    } finally {
      setBusy(false)
      setCompacting(false)
    }
  }
  return html`<section aria-labelledby="devices-title">
    <h1 id="devices-title">Devices</h1>
    <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
      <div>
        <label for="device-filter">Name contains</label>
        <input
          id="device-filter"
          type="search"
          value=${filter}
          onInput=${(e) => setFilter(e.currentTarget.value)}
        />
      </div>
    </form>
    <p role="status" aria-live="polite">${devices.length} device(s)</p>
    <p class="section-actions">
      <button type="button" data-action="compact" onClick=${() => setCompacting(true)}>
        Compact history
      </button>
      ${
        compacted === undefined
          ? null
          : html`<span role="status" data-compacted=${compacted.generation}>
              Generation ${compacted.generation}: ${compacted.clientIdsBefore} →
              ${compacted.clientIdsAfter} clientIDs, ${compacted.bytesBefore} →
              ${compacted.bytesAfter} bytes; ${compacted.devicesClosed} device(s) reconnecting to
              move.
            </span>`
      }
    </p>
    <${ErrorLine} error=${error} />
    <div class="table-wrap">
      <table class="devices">
        <thead>
          <tr>
            <th scope="col">Id</th>
            <th scope="col">Name</th>
            <th scope="col">Serial</th>
            <th scope="col">Address</th>
            <th scope="col">First seen</th>
            <th scope="col">Last seen</th>
            <th scope="col">State</th>
            <th scope="col">Key</th>
            <th scope="col">Server → device</th>
            <th scope="col">Device → server</th>
            <th scope="col"><span class="sr-only">Actions</span></th>
          </tr>
        </thead>
        <tbody>
          ${devices.map(
            (d) =>
              html`<tr key=${d.id} data-device=${d.id}>
                <td><code>${d.id}</code></td>
                <td>${d.name}</td>
                <td>${d.serial}</td>
                <td>${d.address}</td>
                <td>${when(d.firstSeen)}</td>
                <td>${when(d.lastSeen)}</td>
                <td><span class=${'state ' + d.state}>${d.state}</span></td>
                <td>
                  ${
                    d.keyFingerprint === undefined
                      ? '—'
                      : html`<code class="fingerprint" title=${d.keyFingerprint}
                          >${d.keyFingerprint.slice(0, 19)}…</code
                        >`
                  }
                </td>
                <td><${Direction} dir=${d.sync?.serverToDevice} /></td>
                <td><${Direction} dir=${d.sync?.deviceToServer} /></td>
                <td class="row-actions">
                  ${
                    d.state === 'pending'
                      ? html`<button
                          type="button"
                          disabled=${d.keyFingerprint === undefined}
                          title=${
                            d.keyFingerprint === undefined
                              ? 'No key yet: it binds one when it joins again'
                              : undefined
                          }
                          onClick=${() =>
                            setConfirming({
                              id: d.id,
                              action: 'approve',
                              fingerprint: d.keyFingerprint,
                            })}
                        >
                          Approve<span class="sr-only"> ${d.id}</span>
                        </button>`
                      : null
                  }
                  <button
                    type="button"
                    disabled=${d.revoked || d.keyFingerprint === undefined}
                    onClick=${() => setConfirming({ id: d.id, action: 'reset-key' })}
                  >
                    Reset key<span class="sr-only"> ${d.id}</span>
                  </button>
                  <button
                    type="button"
                    class="danger"
                    disabled=${d.revoked}
                    onClick=${() => setConfirming({ id: d.id, action: 'revoke' })}
                  >
                    Revoke<span class="sr-only"> ${d.id}</span>
                  </button>
                </td>
              </tr>`,
          )}
          ${
            devices.length === 0
              ? html`<tr>
                  <td colspan="11" class="empty">No devices.</td>
                </tr>`
              : null
          }
        </tbody>
      </table>
    </div>
    ${
      confirming?.action === 'revoke'
        ? html`<${Confirm}
            title=${'Revoke device ' + confirming.id + '?'}
            confirmLabel="Revoke"
            danger=${true}
            busy=${busy}
            onConfirm=${act}
            onCancel=${() => setConfirming(undefined)}
          >
            <p>
              Its connections close now and it is refused from then on; other devices refuse its
              writes once they hear of it. This cannot be undone from this page.
            </p>
          <//>`
        : null
    }
    ${
      compacting
        ? html`<${Confirm}
            title="Compact the site's history?"
            confirmLabel="Compact history"
            danger=${false}
            busy=${busy}
            onConfirm=${compact}
            onCancel=${() => setCompacting(false)}
          >
            <p>
              Starts a new generation of the roster's document with only its live state: no view
              changes, edits get fast again. Every connected device disconnects and comes back
              within two minutes to fetch the roster once, keeping its local deletes, its own values
              and its unsent edits.
            </p>
          <//>`
        : null
    }
    ${
      confirming?.action === 'approve'
        ? html`<${Confirm}
            title=${'Approve device ' + confirming.id + '?'}
            confirmLabel="Approve"
            danger=${false}
            busy=${busy}
            onConfirm=${act}
            onCancel=${() => setConfirming(undefined)}
          >
            <p>Its key fingerprint:</p>
            <p><code class="fingerprint-full">${confirming.fingerprint ?? '—'}</code></p>
            <p>
              Approve only if the terminal shows the same (<code>rostersync device --status</code
              >${' '}on it): anyone holding the site key can ask to join under this id.
            </p>
          <//>`
        : null
    }
    ${
      confirming?.action === 'reset-key'
        ? html`<${Confirm}
            title=${'Reset the key of ' + confirming.id + '?'}
            confirmLabel="Reset key"
            danger=${true}
            busy=${busy}
            onConfirm=${act}
            onCancel=${() => setConfirming(undefined)}
          >
            <p>
              For a replaced terminal: its connections close, and it waits for approval. The next
              device that joins under this id binds its key; approve it once its key fingerprint
              here matches the one the terminal shows.
            </p>
          <//>`
        : null
    }
  </section>`
}
