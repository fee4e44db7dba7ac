// A job's trigger URLs on its page: the list (never a token), create (the URL and a curl line
// shown once: the server keeps only a hash of the token) and revoke (asks first).
import { html, useEffect, useRef, useState } from "../../vendor/htm/standalone.module.js";
import { api } from "../api.js";
import { CopyLine, Field, Time, confirmDialog, toast } from "../ui.js";
import { browserZone, localInputToIso, useResource } from "../util.js";

/** The new trigger's URL, with a ready curl line; `close()` when the user is done. */
function TriggerUrlDialog({ name, url, close }) {
  const ref = useRef(null);
  useEffect(() => {
    ref.current.showModal();
  }, []);
  return html`<dialog ref=${ref} class="dialog ping-url" aria-labelledby="trigger-url-title" aria-describedby="trigger-url-once"
      onCancel=${(e) => { e.preventDefault(); close(); }}>
    <h2 id="trigger-url-title">Trigger URL “${name}”</h2>
    <p id="trigger-url-once" class="warn" role="alert"><strong>Copy it now: it will not be shown again.</strong> The server keeps
      only a hash of its token; revoke it here and make a new one if it leaks.</p>
    <${CopyLine} id="trigger-url" label="Trigger URL" text=${url} />
    <${CopyLine} id="trigger-url-curl" label="curl line" text=${`curl -X POST ${url}`} />
    <div class="dialog-actions"><button type="button" class="primary" onClick=${close}>Done</button></div>
  </dialog>`;
}

/** The rows of a list answer ({data: [...]}, or the list itself). */
const rowsOf = (answer) => (Array.isArray(answer) ? answer : answer.data || []);

export function TriggerUrls({ job }) {
  const base = `/api/scheduler/jobs/${job._id}/triggers`;
  const [state, reload] = useResource(async () => rowsOf(await api.get(base, null, { quiet: true })), [job._id]);
  const [name, setName] = useState("");
  const [expires, setExpires] = useState("");
  const [allowed, setAllowed] = useState([]);
  const [error, setError] = useState(null);
  const [shown, setShown] = useState(null); // {name, url}: once, after create
  const declared = (job.parameters || []).map((p) => p.name);

  const create = async (e) => {
    e.preventDefault();
    setError(null);
    const body = { name: name.trim() };
    if (expires) body.expires_at = localInputToIso(expires) || expires;
    if (declared.length) body.allowed_parameters = allowed;
    try {
      const made = await api.post(base, body, { quiet: true });
      setShown({ name: body.name, url: made.url });
      setName("");
      setExpires("");
      setAllowed([]);
      reload(true);
    } catch (failure) {
      setError(failure.detail || String(failure));
    }
  };
  const revoke = async (trigger) => {
    const choice = await confirmDialog({
      title: `Revoke the trigger URL “${trigger.name}”?`,
      message: "Requests to it are refused from now on. This cannot be undone; make a new one instead.",
      actions: [{ label: "Revoke", value: "revoke", danger: true }],
    });
    if (choice !== "revoke") return;
    try {
      await api.del(`${base}/${trigger._id}`);
      toast(`Trigger URL “${trigger.name}” revoked`, "success");
    } catch {
      // the API client already showed the error
    }
    reload(true);
  };

  const triggers = state.data || [];
  return html`<section class="panel" aria-labelledby="triggers-title">
    <h2 id="triggers-title">Trigger URLs</h2>
    <p class="muted small">A POST to a trigger URL starts a run (it waits like Run now), with the parameters the URL allows from its JSON body.</p>
    ${state.error ? html`<p class="warn">Trigger URLs are not available: ${state.error.detail || String(state.error)}</p>` : null}
    ${triggers.length ? html`<div class="table-wrap"><table data-testid="trigger-urls">
      <thead><tr><th scope="col">Name</th><th scope="col">Created</th><th scope="col">Expires</th><th scope="col">Last used</th>
        <th scope="col">Uses</th><th scope="col">Parameters</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
      <tbody>${triggers.map((t) => html`<tr key=${t._id} data-trigger-id=${t._id}>
        <td>${t.name}${t.revoked_at ? html` <span class="badge s-cancelled">revoked</span>` : null}</td>
        <td><${Time} value=${t.created_at} />${t.created_by ? html` <span class="muted small">by ${t.created_by}</span>` : null}</td>
        <td>${t.expires_at ? html`<${Time} value=${t.expires_at} />` : html`<span class="muted">never</span>`}</td>
        <td><${Time} value=${t.last_used_at} /></td>
        <td class="num">${t.uses || 0}</td>
        <td>${(t.allowed_parameters || []).length ? t.allowed_parameters.join(", ") : html`<span class="muted">none</span>`}</td>
        <td>${t.revoked_at ? html`<span class="muted small">revoked <${Time} value=${t.revoked_at} /></span>`
          : html`<button type="button" class="small danger" aria-label=${`Revoke ${t.name}`} onClick=${() => revoke(t)}>Revoke</button>`}</td>
      </tr>`)}</tbody></table></div>` : state.data ? html`<p class="muted">No trigger URLs.</p>` : null}
    <form class="trigger-create" onSubmit=${create} aria-labelledby="trigger-create-title">
      <h3 id="trigger-create-title">New trigger URL</h3>
      <div class="two">
        <${Field} id="trigger-name" label="Trigger name" hint="Says who calls it (shown on the runs it starts).">
          ${(a) => html`<input ...${a} type="text" required maxlength="100" value=${name} onInput=${(e) => setName(e.target.value)} autocomplete="off" />`}
        <//>
        <${Field} id="trigger-expires" label=${`Expires (optional, ${browserZone()} time)`} hint="Empty: until revoked.">
          ${(a) => html`<input ...${a} type="datetime-local" value=${expires} onInput=${(e) => setExpires(e.target.value)} />`}
        <//>
      </div>
      ${declared.length ? html`<div class="field events" role="group" aria-labelledby="trigger-allowed-label">
        <span class="group-label" id="trigger-allowed-label">Parameters callers may set</span>
        <div class="checks">${declared.map((p) => html`<span class="check" key=${p}>
          <input id=${`trigger-allow-${p}`} type="checkbox" checked=${allowed.includes(p)}
            onChange=${(e) => setAllowed((list) => (e.target.checked ? [...list, p] : list.filter((x) => x !== p)))} />
          <label for=${`trigger-allow-${p}`}>${p}</label></span>`)}</div></div>` : null}
      ${error ? html`<p class="form-error" role="alert" data-testid="trigger-error">${error}</p>` : null}
      <button type="submit" disabled=${!name.trim()}>Create trigger URL</button>
    </form>
    ${shown ? html`<${TriggerUrlDialog} name=${shown.name} url=${shown.url} close=${() => setShown(null)} />` : null}
  </section>`;
}
