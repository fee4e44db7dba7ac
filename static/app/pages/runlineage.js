// A run's lineage on its page: what started it (schedule, run-now by whom, a retry, a backfill,
// another job's run, a trigger URL), the parameters it ran with (secrets as the API gives them:
// ***), what it published (`result`), and the runs its end started.
import { html } from "../../vendor/htm/standalone.module.js";
import { api } from "../api.js";
import { Badge, Time } from "../ui.js";
import { useInterval, useResource } from "../util.js";

const runLink = (id, text) => html`<a href=${`#/executions/${id}`}>${text}</a>`;
const jobLink = (id, text) => html`<a href=${`#/jobs/${id}`}>${text}</a>`;

/** The words for where a run came from, with links to the runs and jobs involved. */
function originOf(e, names) {
  const by = e.triggered_by || {};
  switch (e.trigger) {
    case "run_now":
      return html`Run now${by.user ? html` by <strong>${by.user}</strong>` : null}`;
    case "retry":
      return html`Retry of ${e.retry_of ? runLink(e.retry_of, "the first attempt") : "an earlier attempt"}`;
    case "backfill":
      return html`Catch-up (backfill)${e.backfill_id ? html` <code class="small">${e.backfill_id}</code>` : null}`;
    case "chain": {
      const upstream = by.job_id ? jobLink(by.job_id, names.get(by.job_id) || by.job_id) : "another job";
      const fanIn = by.fan_in || [];
      return html`Chain: after ${by.execution_id ? html`${upstream}'s ${runLink(by.execution_id, "run")}` : upstream}${
        fanIn.length ? html`, a fan-in of <ul class="policies">${fanIn.map((f) => html`<li key=${f.execution_id}>${
          jobLink(f.job_id, names.get(f.job_id) || f.job_id)}'s ${runLink(f.execution_id, "run")}</li>`)}</ul>` : null}${
        e.chain_depth ? html` <span class="muted small">(depth ${e.chain_depth})</span>` : null}`;
    }
    case "url":
      return html`Trigger URL “${by.name || by.trigger_id || "?"}”`;
    case "schedule":
      return "Its schedule";
    default:
      return e.trigger || "—";
  }
}

/** The names of the jobs a run's origin names (the upstream and fan-in jobs). */
export function useOriginNames(e) {
  const by = (e && e.triggered_by) || {};
  const ids = [by.job_id, ...(by.fan_in || []).map((f) => f.job_id)].filter(Boolean);
  const key = [...new Set(ids)].join(",");
  const [state] = useResource(async () => {
    const names = new Map();
    await Promise.all((key ? key.split(",") : []).map((id) => api.get(`/api/scheduler/jobs/${id}`, null, { quiet: true })
      .then((r) => names.set(id, r.data.name), () => null)));
    return names;
  }, [key]);
  return state.data || new Map();
}

export function OriginFacts({ execution, names }) {
  return html`<dt>Started by</dt><dd data-testid="execution-origin">${originOf(execution, names)}</dd>
    ${execution.cancel_downstream ? html`<dt>Downstream</dt><dd>cancelled with what it started</dd>` : null}`;
}

/** The values it ran with, in a table; a secret shows as the API gives it (***). */
export function ParametersPanel({ parameters }) {
  const entries = Object.entries(parameters || {});
  if (!entries.length) return null;
  return html`<section class="panel" aria-labelledby="parameters-title">
    <h2 id="parameters-title">Parameters</h2>
    <dl class="facts" data-testid="execution-parameters">${entries.map(([name, value]) => html`
      <dt key=${`${name}-name`}><code>${name}</code></dt>
      <dd key=${`${name}-value`} data-parameter=${name}>${typeof value === "string" ? value : JSON.stringify(value)}</dd>`)}</dl>
  </section>`;
}

/** What the run published, pretty-printed; folded away when long. */
export function ResultPanel({ result }) {
  if (result === undefined || result === null) return null;
  const text = JSON.stringify(result, null, 2);
  return html`<section class="panel" aria-labelledby="result-title">
    <h2 id="result-title">Result</h2>
    <details open=${text.split("\n").length <= 20}>
      <summary>JSON, ${text.length} characters (the next chained job receives it)</summary>
      <pre class="output" data-testid="execution-result" tabindex="0">${text}</pre>
    </details>
  </section>`;
}

/** The runs this run's end started (the executions whose parent it is), and the jobs it could
 * not start (chain_started's reasons). */
export function StartedRuns({ execution }) {
  const id = execution._id;
  const [state, reload] = useResource(
    () => api.get("/api/scheduler/executions", { parent_execution_id: id, limit: 50 }, { quiet: true }),
    [id],
  );
  const waiting = execution.chain_pending || (state.data && state.data.data.some((r) => r.status === "scheduled" || r.status === "running"));
  useInterval(() => reload(true), waiting ? 2000 : null);
  // Only the runs it started (a server without the filter would answer with every run).
  const runs = state.data ? state.data.data.filter((r) => r.parent_execution_id === id) : [];
  const refused = (execution.chain_started || []).filter((s) => !s.execution_id);
  if (!runs.length && !refused.length && !execution.chain_pending) return null;
  return html`<section class="panel" aria-labelledby="started-title">
    <h2 id="started-title">Runs it started</h2>
    ${execution.chain_pending ? html`<p class="muted small">Its chained jobs start when it ends.</p>` : null}
    ${runs.length ? html`<ul class="started-runs" data-testid="started-runs">${runs.map((r) => html`<li key=${r._id}>
      ${runLink(r._id, html`<${Badge} status=${r.status} /> ${r.job_name}`)} <span class="muted small"><${Time} value=${r.created_at} /></span></li>`)}</ul>` : null}
    ${refused.length ? html`<ul class="policies">${refused.map((s, i) => html`<li key=${i}>${jobLink(s.job_id, s.job_name || s.job_id)}: ${
      s.reason || "not started"}</li>`)}</ul>` : null}
  </section>`;
}
