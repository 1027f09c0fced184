// Field policies: each field's policy; a change first shows its
// consequence (rule 5: a policy change re-initialises the field), computed
// by the server, and is made only once confirmed.
import { useEffect, useState } from 'preact/hooks'
import { api, query } from './api.js'
import { Confirm, ErrorLine, html } from './ui.js'

const POLICIES = ['shared', 'device-specific', 'last-writer-wins']

export function PoliciesPage() {
  const [fields, setFields] = useState([])
  const [error, setError] = useState()
  const [preview, setPreview] = useState()
  const [busy, setBusy] = useState(false)
  const [done, setDone] = useState()

  useEffect(() => {
    api('GET', '/api/policies')
      .then((p) => setFields(p.fields))
      .catch(setError)
  }, [])

  const ask = async (field, policy) => {
    setDone(undefined)
    try {
      setPreview(await api('GET', '/api/policies/preview' + query({ field, policy })))
      setError(undefined)
    } catch (err) {
      setError(err)
    }
  }
  const confirm = async () => {
    setBusy(true)
    try {
      // Only as the preview showed it: refused (412) once another change came between.
      const result = await api(
        'PUT',
        '/api/policies',
        { [preview.field]: preview.to },
        preview.etag === undefined ? {} : { 'if-match': preview.etag },
      )
      setFields(result.fields)
      setDone(`${preview.field} is now ${preview.to}.`)
      setError(undefined)
    } catch (err) {
      setError(err)
      // What the policies are now, so that the next preview is of them.
      if (err.status === 412)
        await api('GET', '/api/policies')
          .then((p) => setFields(p.fields))
          .catch(() => undefined)
    } finally {
      setBusy(false)
      setPreview(undefined)
    }
  }

  return html`<section aria-labelledby="policies-title">
    <h1 id="policies-title">Field policies</h1>
    <ul class="hint">
      <li><strong>shared</strong>: the server wins, devices fill vacant values.</li>
      <li><strong>device-specific</strong>: never leaves the device that wrote it.</li>
      <li><strong>last-writer-wins</strong>: the latest write wins, server or device.</li>
    </ul>
    <${ErrorLine} error=${error} />
    ${done === undefined ? null : html`<p class="notice" role="status">${done}</p>`}
    <div class="table-wrap">
      <table class="policies">
        <thead>
          <tr>
            <th scope="col">Field</th>
            <th scope="col">Kind</th>
            <th scope="col">Policy</th>
          </tr>
        </thead>
        <tbody>
          ${fields.map(
            (f) =>
              html`<tr key=${f.field}>
                <td><label for=${'policy-' + f.field}>${f.field}</label></td>
                <td>${f.kind}</td>
                <td>
                  <select
                    id=${'policy-' + f.field}
                    value=${f.policy}
                    onChange=${(e) => {
                      const wanted = e.currentTarget.value
                      // The select shows the policy in force until the change is confirmed.
                      e.currentTarget.value = f.policy
                      if (wanted !== f.policy) void ask(f.field, wanted)
                    }}
                  >
                    ${POLICIES.map((p) => html`<option value=${p}>${p}</option>`)}
                  </select>
                </td>
              </tr>`,
          )}
        </tbody>
      </table>
    </div>
    ${
      preview === undefined
        ? null
        : html`<${Confirm}
            title=${`Make ${preview.field} ${preview.to}?`}
            confirmLabel="Change the policy"
            danger=${preview.usersLosingValue > 0 || preview.deviceValuesDropped > 0}
            busy=${busy}
            onConfirm=${confirm}
            onCancel=${() => setPreview(undefined)}
          >
            <p>${preview.consequence}</p>
            <ul class="counts">
              <li>Users showing a value now: ${preview.usersWithValue}</li>
              <li>Users losing or changing their value: ${preview.usersLosingValue}</li>
              <li>Server values cleared: ${preview.serverValuesCleared}</li>
              <li>Device values that stop counting: ${preview.deviceValuesDropped}</li>
            </ul>
          <//>`
    }
  </section>`
}
