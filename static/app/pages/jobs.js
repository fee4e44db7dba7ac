// Jobs: one table that says whether everything is healthy, with search, filters and sorting.
import { html } from "../../vendor/htm/standalone.module.js";
import { api, listAll } from "../api.js";
import { Badge, Empty, Loaded, PageHeader, Time } from "../ui.js";
import { MaintenanceButton } from "../maintenance.js";
import { ACTIVE, formatDuration, formatLocal, navigate, shortClass, useInterval, useQuery, useResource } from "../util.js";
import { JobActions, jobState } from "./jobactions.js";

const COLUMNS = [
  ["name", "Name"],
  ["class", "Class"],
  ["schedule", "Schedule"],
  ["next", "Next run"],
  ["last", "Last run"],
];

function sortValue(row, key) {
  switch (key) {
    case "class": return shortClass(row.job.job_class_string).toLowerCase();
    case "schedule": return (row.summary.schedule_description || "").toLowerCase();
    case "next": return row.job.next_run_time || "9999";
    case "last": return row.last ? row.last.created_at : "";
    default: return row.job.name.toLowerCase();
  }
}

export function RunStrip({ runs }) {
  const ordered = runs.slice().reverse(); // oldest on the left, newest on the right
  if (!ordered.length) return html`<span class="muted">no runs yet</span>`;
  return html`<span class="strip" role="img" aria-label=${`Last ${ordered.length} runs: ` + ordered.map((r) => r.status).join(", ")}>
    ${ordered.map((r) => html`<a key=${r._id} href=${`#/executions/${r._id}`} class=${`tick bg-${r.status}`} tabindex="-1"
      title=${`${formatLocal(r.started_at || r.created_at)} — ${r.status}, ${formatDuration(r.duration_ms)}${r.error_summary ? "\n" + r.error_summary : ""}`}></a>`)}
  </span>`;
}

export function JobsPage({ route }) {
  const [query, setQuery] = useQuery(route);
  const [state, reload] = useResource(async (background) => {
    const quiet = { quiet: background };
    const [jobs, summaries, users, classes] = await Promise.all([
      listAll("/api/scheduler/jobs", {}, quiet),
      api.get("/api/scheduler/job-summaries", { runs: 20 }, quiet),
      listAll("/api/users/", {}, quiet),
      api.get("/api/scheduler/available-jobs", null, quiet),
    ]);
    return { jobs, summaries: new Map(summaries.data.map((s) => [s.job_id, s])), users, classes: classes.jobs };
  }, []);
  const busy = state.data && [...state.data.summaries.values()].some((s) => s.recent_runs.some((r) => ACTIVE.has(r.status)));
  useInterval(() => reload(true), busy ? 1000 : 5000);

  return html`<section class="page">
    <${PageHeader} title="Jobs">
      <${MaintenanceButton} />
      <button type="button" class="primary" onClick=${() => navigate("/jobs/new")}>New job</button>
    <//>
    <${Loaded} state=${state} reload=${reload}>${(data) => html`<${JobsTable} data=${data} query=${query} setQuery=${setQuery} reload=${reload} />`}<//>
  </section>`;
}

function JobsTable({ data, query, setQuery, reload }) {
  const users = new Map(data.users.map((u) => [u._id, u]));
  const text = (query.q || "").toLowerCase();
  const sort = query.sort || "name";
  const descending = query.dir === "desc";
  const rows = data.jobs
    .map((job) => {
      const summary = data.summaries.get(job._id) || { recent_runs: [], schedule_description: null };
      return { job, summary, last: summary.recent_runs[0] || null };
    })
    .filter(({ job }) =>
      (!text || `${job.name} ${job.description} ${job.job_class_string}`.toLowerCase().includes(text)) &&
      (!query.user || job.user_id === query.user) &&
      (!query.state || jobState(job) === query.state) &&
      (!query.class || job.job_class_string === query.class))
    .sort((a, b) => {
      const x = sortValue(a, sort);
      const y = sortValue(b, sort);
      return (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1);
    });
  const usedClasses = [...new Set(data.jobs.map((j) => j.job_class_string))].sort();
  // A job is unhealthy when its latest run that ended did not complete.
  const unhealthy = data.jobs.filter((j) => {
    const s = data.summaries.get(j._id);
    // A retried attempt is not the end of its occurrence: the attempt after it tells.
    const ended = s && s.recent_runs.find((r) => !ACTIVE.has(r.status) && !["skipped", "missed", "retried"].includes(r.status));
    return ended && ended.status !== "completed";
  }).length;
  const toggleSort = (key) => setQuery({ sort: key, dir: sort === key && !descending ? "desc" : "" });

  if (!data.jobs.length) {
    return html`<${Empty}><p>No jobs yet.</p>${data.users.length
      ? html`<p><a href="#/jobs/new">Create the first job</a>.</p>`
      : html`<p>A job belongs to a user: <a href="#/users/new">create a user</a> first, then a job.</p>`}<//>`;
  }
  return html`
    <p class=${`health-line ${unhealthy ? "bad" : "ok"}`} role="status">
      ${unhealthy ? `${unhealthy} of ${data.jobs.length} jobs failed their last finished run.` : `All ${data.jobs.length} jobs are healthy: no last finished run failed.`}
    </p>
    <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
      <div class="field"><label for="job-search">Search</label>
        <input id="job-search" type="search" value=${query.q || ""} placeholder="Name, description or class" onInput=${(e) => setQuery({ q: e.target.value })} /></div>
      <div class="field"><label for="job-filter-user">User</label>
        <select id="job-filter-user" value=${query.user || ""} onChange=${(e) => setQuery({ user: e.target.value })}>
          <option value="">All users</option>
          ${data.users.map((u) => html`<option key=${u._id} value=${u._id}>${u.name}</option>`)}
        </select></div>
      <div class="field"><label for="job-filter-state">State</label>
        <select id="job-filter-state" value=${query.state || ""} onChange=${(e) => setQuery({ state: e.target.value })}>
          <option value="">All states</option><option value="enabled">Enabled</option><option value="paused">Paused</option><option value="disabled">Disabled</option>
        </select></div>
      <div class="field"><label for="job-filter-class">Class</label>
        <select id="job-filter-class" value=${query.class || ""} onChange=${(e) => setQuery({ class: e.target.value })}>
          <option value="">All classes</option>
          ${usedClasses.map((c) => html`<option key=${c} value=${c}>${shortClass(c)}</option>`)}
        </select></div>
    </form>
    <div class="table-wrap">
      <table class="jobs">
        <thead><tr>
          ${COLUMNS.map(([key, label]) => html`<th key=${key} scope="col" aria-sort=${sort === key ? (descending ? "descending" : "ascending") : undefined}>
            <button type="button" class="sort" onClick=${() => toggleSort(key)}>${label}${sort === key ? (descending ? " ▼" : " ▲") : ""}</button></th>`)}
          <th scope="col">Last 20 runs</th>
          <th scope="col"><span class="visually-hidden">Actions</span></th>
        </tr></thead>
        <tbody>
          ${rows.map(({ job, summary, last }) => html`<tr key=${job._id} data-job-id=${job._id}>
            <td data-label="Name"><a href=${`#/jobs/${job._id}`} class="strong">${job.name}</a>
              <div class="muted small">${users.get(job.user_id)?.name || "unknown owner"} · <span class=${`state-${jobState(job)}`}>${jobState(job)}</span>${
                job.alert_state && job.alert_state !== "ok" ? html` <${Badge} status=${job.alert_state} />` : null}</div></td>
            <td data-label="Class" title=${job.job_class_string}>${shortClass(job.job_class_string)}</td>
            <td data-label="Schedule">${summary.schedule_description || html`<span class="warn">invalid schedule</span>`}
              ${job.schedule_error ? html`<div class="warn small">${job.schedule_error}</div>` : null}</td>
            <td data-label="Next run">${job.next_run_time ? html`<${Time} value=${job.next_run_time} />` : html`<span class="muted">${jobState(job) === "enabled" ? "—" : jobState(job)}</span>`}</td>
            <td data-label="Last run">${last ? html`<${Badge} status=${last.status} /> <${Time} value=${last.created_at} />` : html`<span class="muted">never</span>`}
              ${summary.last_failure && last && last.status === "completed" ? html`<div class="muted small">last failure <${Time} value=${summary.last_failure.created_at} /></div>` : null}
              ${summary.last_success && last && last.status !== "completed" ? html`<div class="muted small">last success <${Time} value=${summary.last_success.created_at} /></div>` : null}</td>
            <td data-label="Last 20 runs"><${RunStrip} runs=${summary.recent_runs} /></td>
            <td><${JobActions} job=${job} changed=${() => reload(true)} /></td>
          </tr>`)}
        </tbody>
      </table>
    </div>
    ${rows.length ? null : html`<${Empty}><p>No job matches these filters.</p><//>`}
  `;
}
