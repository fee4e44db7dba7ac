// Executions: filters, pages, live updates while a run is active, and the output viewer.
import { html } from "../../vendor/htm/standalone.module.js";
import { api, listAll } from "../api.js";
import { Badge, Duration, Empty, Loaded, PageHeader, Pager, Time, copyText } from "../ui.js";
import { ACTIVE, STATUSES, firstLine, isoToLocalInput, localInputToIso, useInterval, useQuery, useResource } from "../util.js";

const PAGE = 50;

export function ExecutionsPage({ route }) {
  const [query, setQuery] = useQuery(route);
  const offset = Number(query.offset || 0);
  const [lists] = useResource(async () => {
    const [jobs, users] = await Promise.all([listAll("/api/scheduler/jobs"), listAll("/api/users/")]);
    return { jobs, users };
  }, []);
  const [state, reload] = useResource(
    (background) => api.get("/api/scheduler/executions", {
      job_id: query.job, user_id: query.user, status: query.status, since: query.since, until: query.until, limit: PAGE, offset,
    }, { quiet: background }),
    [query.job, query.user, query.status, query.since, query.until, offset],
  );
  const busy = state.data && state.data.data.some((e) => ACTIVE.has(e.status));
  useInterval(() => reload(true), busy ? 1000 : 2000);
  const jobs = lists.data ? lists.data.jobs : [];
  const users = lists.data ? lists.data.users : [];

  return html`<section class="page">
    <${PageHeader} title="Executions" />
    <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
      <div class="field"><label for="exec-job">Job</label>
        <select id="exec-job" value=${query.job || ""} onChange=${(e) => setQuery({ job: e.target.value })}>
          <option value="">All jobs</option>
          ${jobs.map((j) => html`<option key=${j._id} value=${j._id}>${j.name}</option>`)}
          ${query.job && lists.data && !jobs.some((j) => j._id === query.job) ? html`<option value=${query.job}>(deleted job)</option>` : null}
        </select></div>
      <div class="field"><label for="exec-user">User</label>
        <select id="exec-user" value=${query.user || ""} onChange=${(e) => setQuery({ user: e.target.value })}>
          <option value="">All users</option>
          ${users.map((u) => html`<option key=${u._id} value=${u._id}>${u.name}</option>`)}
        </select></div>
      <div class="field"><label for="exec-status">Status</label>
        <select id="exec-status" value=${query.status || ""} onChange=${(e) => setQuery({ status: e.target.value })}>
          <option value="">All statuses</option>
          ${STATUSES.map((s) => html`<option key=${s} value=${s}>${s}</option>`)}
        </select></div>
      <div class="field"><label for="exec-since">From</label>
        <input id="exec-since" type="datetime-local" value=${isoToLocalInput(query.since)} onChange=${(e) => setQuery({ since: localInputToIso(e.target.value) })} /></div>
      <div class="field"><label for="exec-until">To</label>
        <input id="exec-until" type="datetime-local" value=${isoToLocalInput(query.until)} onChange=${(e) => setQuery({ until: localInputToIso(e.target.value) })} /></div>
    </form>
    <${Loaded} state=${state} reload=${reload}>${(page) => page.total === 0
      ? html`<${Empty}><p>No executions match.</p><//>`
      : html`<div class="table-wrap"><table class="executions">
          <thead><tr><th scope="col">Job</th><th scope="col">Status</th><th scope="col">Scheduled</th><th scope="col">Started</th><th scope="col">Duration</th><th scope="col">Host</th><th scope="col">Output or error</th></tr></thead>
          <tbody>${page.data.map((e) => html`<tr key=${e._id} data-execution-id=${e._id}>
            <td><a href=${`#/jobs/${e.job_id}`}>${e.job_name}</a></td>
            <td><a href=${`#/executions/${e._id}`} aria-label=${`Execution ${e._id}: ${e.status}`}><${Badge} status=${e.status} /></a>
              ${e.missed_count ? html`<span class="muted small"> ×${e.missed_count}</span>` : null}</td>
            <td><${Time} value=${e.scheduled_at || e.created_at} /></td>
            <td><${Time} value=${e.started_at} /></td>
            <td><${Duration} ms=${e.duration_ms} /></td>
            <td>${e.hostname}</td>
            <td class="clip"><a href=${`#/executions/${e._id}`}>${firstLine(e.error) || firstLine(e.output) || "view"}</a></td>
          </tr>`)}</tbody>
        </table></div>
        <${Pager} total=${page.total} limit=${PAGE} offset=${offset} onOffset=${(o) => setQuery({ offset: o })} />`}<//>
  </section>`;
}

export function ExecutionPage({ route }) {
  const id = route.segments[1];
  const [state, reload] = useResource(
    async (background) => (await api.get(`/api/scheduler/executions/${id}`, null, { quiet: background })).data,
    [id],
  );
  const active = state.data && ACTIVE.has(state.data.status);
  useInterval(() => reload(true), active ? 500 : null);
  return html`<section class="page">
    <${Loaded} state=${state} reload=${reload}>${(e) => html`
      <${PageHeader} title=${`Execution of ${e.job_name}`} />
      <p class="muted"><a href=${`#/executions?job=${e.job_id}`}>← Executions of this job</a> · <a href=${`#/jobs/${e.job_id}`}>The job</a></p>
      <section class="panel">
        <dl class="facts">
          <dt>Status</dt><dd><span data-testid="execution-status"><${Badge} status=${e.status} /></span>${active ? html` <span class="muted">updating live…</span>` : null}</dd>
          <dt>Class</dt><dd>${e.job_class_string}</dd>
          <dt>Scheduled</dt><dd><${Time} value=${e.scheduled_at} /></dd>
          <dt>Started</dt><dd><${Time} value=${e.started_at} /></dd>
          <dt>Ended</dt><dd><${Time} value=${e.completed_at} /></dd>
          <dt>Duration</dt><dd><${Duration} ms=${e.duration_ms} /></dd>
          <dt>Host</dt><dd>${e.hostname} <span class="muted">pid ${e.pid}${e.node_id ? `, node ${e.node_id}` : ""}</span></dd>
          ${e.missed_count ? html`<dt>Missed</dt><dd>${e.missed_count} occurrence(s) until <${Time} value=${e.missed_until} /></dd>` : null}
          <dt>Id</dt><dd><code>${e._id}</code></dd>
        </dl>
      </section>
      <${Output} title="Output" id="output" text=${e.output} empty=${active ? "The output appears when the run ends." : "No output."} />
      ${e.error ? html`<${Output} title="Error" id="error" text=${e.error} bad=${true} />` : null}
    `}<//>
  </section>`;
}

function Output({ title, id, text, empty = "Nothing.", bad = false }) {
  return html`<section class="panel" aria-labelledby=${`${id}-title`}>
    <div class="panel-head"><h2 id=${`${id}-title`}>${title}</h2>
      ${text ? html`<button type="button" onClick=${() => copyText(text)} aria-label=${`Copy ${title.toLowerCase()}`}>Copy</button>` : null}</div>
    ${text ? html`<pre class=${`output ${bad ? "bad" : ""}`} data-testid=${`execution-${id}`} tabindex="0">${text}</pre>` : html`<p class="muted">${empty}</p>`}
  </section>`;
}
