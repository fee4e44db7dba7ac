// Audit log: every change to a job, filterable by job and time.
import { html } from "../../vendor/htm/standalone.module.js";
import { api, listAll } from "../api.js";
import { Empty, Loaded, PageHeader, Pager, Time } from "../ui.js";
import { isoToLocalInput, localInputToIso, useQuery, useResource } from "../util.js";

const PAGE = 50;

export function AuditPage({ route }) {
  const [query, setQuery] = useQuery(route);
  const offset = Number(query.offset || 0);
  const [jobs] = useResource(() => listAll("/api/scheduler/jobs"), []);
  const [state, reload] = useResource(
    () => api.get("/api/scheduler/audit-logs", { job_id: query.job, since: query.since, until: query.until, limit: PAGE, offset }),
    [query.job, query.since, query.until, offset],
  );
  return html`<section class="page">
    <${PageHeader} title="Audit log" />
    <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
      <div class="field"><label for="audit-job">Job</label>
        <select id="audit-job" value=${query.job || ""} onChange=${(e) => setQuery({ job: e.target.value })}>
          <option value="">All jobs</option>
          ${(jobs.data || []).map((j) => html`<option key=${j._id} value=${j._id}>${j.name}</option>`)}
          ${query.job && jobs.data && !jobs.data.some((j) => j._id === query.job) ? html`<option value=${query.job}>(deleted job)</option>` : null}
        </select></div>
      <div class="field"><label for="audit-since">From</label>
        <input id="audit-since" type="datetime-local" value=${isoToLocalInput(query.since)} onChange=${(e) => setQuery({ since: localInputToIso(e.target.value) })} /></div>
      <div class="field"><label for="audit-until">To</label>
        <input id="audit-until" type="datetime-local" value=${isoToLocalInput(query.until)} onChange=${(e) => setQuery({ until: localInputToIso(e.target.value) })} /></div>
    </form>
    <${Loaded} state=${state} reload=${reload}>${(page) => page.total === 0
      ? html`<${Empty}><p>No entries match.</p><//>`
      : html`<div class="table-wrap"><table>
          <thead><tr><th scope="col">When</th><th scope="col">Job</th><th scope="col">Event</th><th scope="col">By</th><th scope="col">What</th></tr></thead>
          <tbody>${page.data.map((a) => html`<tr key=${a._id}>
            <td><${Time} value=${a.created_at} /></td>
            <td><a href=${`#/audit?job=${a.job_id}`} title="Only this job">${a.job_name}</a></td>
            <td><span class=${`event e-${a.event}`}>${a.event}</span></td>
            <td>${a.user}</td>
            <td class="wrap">${a.description}</td>
          </tr>`)}</tbody>
        </table></div>
        <${Pager} total=${page.total} limit=${PAGE} offset=${offset} onOffset=${(o) => setQuery({ offset: o })} />`}<//>
  </section>`;
}
