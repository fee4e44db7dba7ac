// Executions: filters, pages, live updates while a run is active, the output viewer (live over
// Server-Sent Events while the run goes), attempts, alerts, and Cancel.
import { html, useEffect, useLayoutEffect, useRef, useState } from "../../vendor/htm/standalone.module.js";
import { api, listAll } from "../api.js";
import { Badge, Duration, Empty, Loaded, PageHeader, Pager, Time, confirmDialog, copyText, toast } from "../ui.js";
import { waitingText } from "../policies.js";
import { RunDialog } from "../rundialog.js";
import { OriginFacts, ParametersPanel, ResultPanel, StartedRuns, useOriginNames } from "./runlineage.js";
import { ACTIVE, STATUSES, firstLine, isoToLocalInput, localInputToIso, parseTime, useInterval, useQuery, useResource } from "../util.js";

const PAGE = 50;

/** A heartbeat monitor's ping (no job: `monitor_id` names its monitor). */
const isPing = (execution) => execution.source === "monitor";

/** The job or monitor an execution belongs to, linked. */
function Origin({ execution }) {
  if (isPing(execution)) {
    return html`<a href=${`#/monitors/${execution.monitor_id}`}>${execution.job_name}</a> <span class="muted small">monitor</span>`;
  }
  return html`<a href=${`#/jobs/${execution.job_id}`}>${execution.job_name}</a>`;
}

/** Ask, then cancel a scheduled or running execution; the API's message becomes a toast. A run
 * that starts others (`downstream`) may also cancel what it started (cancel_downstream). */
export async function cancelExecution(execution, downstream = false) {
  const running = execution.status === "running";
  const choice = await confirmDialog({
    title: "Cancel this run?",
    message: running
      ? `The run of “${execution.job_name}” is stopped now and recorded as cancelled.`
      : `The run of “${execution.job_name}” will not start; it is recorded as cancelled.`,
    actions: [
      { label: "Cancel the run", value: "cancel", danger: true },
      ...(downstream ? [{ label: "Cancel it and what it started", value: "downstream", danger: true }] : []),
    ],
    dismiss: "Keep it",
  });
  if (choice !== "cancel" && choice !== "downstream") return false;
  const path = `/api/scheduler/executions/${encodeURIComponent(execution._id)}/cancel${choice === "downstream" ? "?cancel_downstream=true" : ""}`;
  const result = await api.post(path);
  toast((result && result.message) || "Cancellation requested", "success");
  return true;
}

/** Cancel, on a scheduled or running execution; "Cancelling…" (disabled) once it was asked for. */
export function CancelButton({ execution, changed, small = false, downstream = false }) {
  const [sent, setSent] = useState(false);
  const [asking, setAsking] = useState(false);
  if (!ACTIVE.has(execution.status)) return null;
  const requested = sent || !!execution.cancel_requested_at;
  const click = async () => {
    setAsking(true);
    try {
      if (await cancelExecution(execution, downstream)) setSent(true);
    } catch {
      // the API client already showed the error (409: it ended meanwhile)
    } finally {
      setAsking(false);
    }
    if (changed) changed();
  };
  return html`<button type="button" class=${`danger ${small ? "small" : ""}`} disabled=${requested || asking}
    aria-label=${requested ? "Cancelling…" : small ? `Cancel the run of ${execution.job_name}` : "Cancel"}
    data-testid="cancel-execution" onClick=${click}>${requested ? "Cancelling…" : "Cancel"}</button>`;
}

/** "#2" after the badge of a later attempt (the first attempt shows nothing). */
export function AttemptMark({ execution }) {
  const attempt = execution.attempt;
  if (!attempt || (attempt <= 1 && !execution.retry_of)) return null;
  return html` <span class="muted small attempt" title=${`Attempt ${attempt}`}>#${attempt}</span>`;
}

export function ExecutionsPage({ route }) {
  const [query, setQuery] = useQuery(route);
  const offset = Number(query.offset || 0);
  const [lists] = useResource(async () => {
    const [jobs, users, monitors] = await Promise.all([listAll("/api/scheduler/jobs"), listAll("/api/users/"), listAll("/api/scheduler/monitors")]);
    return { jobs, users, monitors };
  }, []);
  const [state, reload] = useResource(
    (background) => api.get("/api/scheduler/executions", {
      job_id: query.job, monitor_id: query.monitor, source: query.source, user_id: query.user, status: query.status,
      since: query.since, until: query.until, limit: PAGE, offset,
    }, { quiet: background }),
    [query.job, query.monitor, query.source, query.user, query.status, query.since, query.until, offset],
  );
  const busy = state.data && state.data.data.some((e) => ACTIVE.has(e.status));
  useInterval(() => reload(true), busy ? 1000 : 2000);
  const jobs = lists.data ? lists.data.jobs : [];
  const users = lists.data ? lists.data.users : [];
  const monitors = lists.data ? lists.data.monitors : [];

  return html`<section class="page">
    <${PageHeader} title="Executions" />
    <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
      <div class="field"><label for="exec-job">Job</label>
        <select id="exec-job" value=${query.job || ""} onChange=${(e) => setQuery({ job: e.target.value })}>
          <option value="">All jobs</option>
          ${jobs.map((j) => html`<option key=${j._id} value=${j._id}>${j.name}</option>`)}
          ${query.job && lists.data && !jobs.some((j) => j._id === query.job) ? html`<option value=${query.job}>(deleted job)</option>` : null}
        </select></div>
      <div class="field"><label for="exec-source">Source</label>
        <select id="exec-source" value=${query.source || ""} onChange=${(e) => setQuery({ source: e.target.value })}>
          <option value="">Jobs and monitors</option><option value="job">Jobs' runs</option><option value="monitor">Monitors' pings</option>
        </select></div>
      ${monitors.length || query.monitor ? html`<div class="field"><label for="exec-monitor">Monitor</label>
        <select id="exec-monitor" value=${query.monitor || ""} onChange=${(e) => setQuery({ monitor: e.target.value })}>
          <option value="">All monitors</option>
          ${monitors.map((m) => html`<option key=${m._id} value=${m._id}>${m.name}</option>`)}
          ${query.monitor && lists.data && !monitors.some((m) => m._id === query.monitor) ? html`<option value=${query.monitor}>(deleted monitor)</option>` : null}
        </select></div>` : null}
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
          <thead><tr><th scope="col">Job or monitor</th><th scope="col">Status</th><th scope="col">Scheduled</th><th scope="col">Started</th><th scope="col">Duration</th><th scope="col">Host</th><th scope="col">Output or error</th></tr></thead>
          <tbody>${page.data.map((e) => html`<tr key=${e._id} data-execution-id=${e._id}>
            <td><${Origin} execution=${e} /></td>
            <td><a href=${`#/executions/${e._id}`} aria-label=${`Execution ${e._id}: ${e.status}`}><${Badge} status=${e.status} /></a>
              <${AttemptMark} execution=${e} />
              ${e.missed_count ? html`<span class="muted small"> ×${e.missed_count}</span>` : null}</td>
            <td><${Time} value=${e.scheduled_at || e.created_at} /></td>
            <td><${Time} value=${e.started_at} /></td>
            <td><${Duration} ms=${e.duration_ms} /></td>
            <td>${e.hostname}</td>
            <td class="clip"><a href=${`#/executions/${e._id}`}>${waitingText(e) || firstLine(e.error) || firstLine(e.output) || "view"}</a></td>
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
  // The job: "attempt 2 of 3" for a retried run, and its declaration for Run again (it may have
  // been deleted since: then without "of", and no Run again).
  const jobId = state.data && !isPing(state.data) ? state.data.job_id : null;
  const [job] = useResource(
    () => (jobId ? api.get(`/api/scheduler/jobs/${jobId}`, null, { quiet: true }).then((r) => r.data, () => null) : Promise.resolve(null)),
    [jobId],
  );
  const names = useOriginNames(state.data);
  const [again, setAgain] = useState(false);
  const active = state.data && ACTIVE.has(state.data.status);
  // While the run goes, its output comes over the stream; the record (status, cancel) is polled.
  // For a minute after the end, too: the alerts its outcome set off are recorded when sent.
  const ended = state.data && parseTime(state.data.completed_at);
  const recent = !active && ended && Date.now() - ended.getTime() < 60_000;
  useInterval(() => reload(true), active ? 1000 : recent ? 2000 : null);
  // The stream is followed to its `end` even when the polled record says "ended" first (closing
  // it early would abort it); if `end` does not come soon, the stored output shows anyway.
  const [following, setFollowing] = useState(false);
  const [streamDone, setStreamDone] = useState(false);
  useEffect(() => {
    if (active) setFollowing(true);
    if (active || !following) return undefined;
    const id = setTimeout(() => setFollowing(false), 4000);
    return () => clearTimeout(id);
  }, [active, following]);
  const streamEnded = () => {
    setStreamDone(true);
    reload(true);
  };
  // A monitor's ping runs elsewhere: nothing streams its output (the record is polled).
  const showLive = !(state.data && isPing(state.data)) && (active || (following && !streamDone));
  return html`<section class="page">
    <${Loaded} state=${state} reload=${reload}>${(e) => html`
      <${PageHeader} title=${isPing(e) ? `Ping of monitor ${e.job_name}` : `Execution of ${e.job_name}`}>
        ${isPing(e) ? null : html`<${CancelButton} key=${e._id} execution=${e} changed=${() => reload(true)}
          downstream=${!!e.chain_pending || (e.chain_started || []).length > 0} />`}
        ${job.data ? html`<button type="button" onClick=${() => setAgain(true)}>Run again</button>` : null}
      <//>
      ${again && job.data ? html`<${RunDialog} job=${job.data} given=${e.parameters || {}} close=${() => setAgain(false)} />` : null}
      <p class="muted">${isPing(e)
        ? html`<a href=${`#/executions?monitor=${e.monitor_id}`}>← Pings of this monitor</a> · <a href=${`#/monitors/${e.monitor_id}`}>The monitor</a>`
        : html`<a href=${`#/executions?job=${e.job_id}`}>← Executions of this job</a> · <a href=${`#/jobs/${e.job_id}`}>The job</a>`}</p>
      <section class="panel">
        <dl class="facts">
          <dt>Status</dt><dd><span data-testid="execution-status"><${Badge} status=${e.status} /></span>${active ? html` <span class="muted">updating live…</span>` : null}
            ${e.status === "retried" ? html` <span class="muted">this attempt did not succeed; another one follows</span>` : null}</dd>
          ${attemptFacts(e, job.data)}
          ${e.cancel_requested_at || e.cancelled_by ? html`<dt>Cancelled</dt><dd data-testid="execution-cancelled">
            ${e.cancelled_by ? html`by <strong>${e.cancelled_by}</strong> ` : null}${e.cancel_requested_at ? html`(asked <${Time} value=${e.cancel_requested_at} />)` : null}</dd>` : null}
          ${e.waiting ? html`<dt>Queued</dt><dd data-testid="execution-waiting">${e.status === "scheduled" ? e.waiting : `waited (${e.waiting})`}</dd>` : null}
          ${isPing(e)
            ? html`<dt>Source</dt><dd data-testid="execution-source">ping of the heartbeat monitor <a href=${`#/monitors/${e.monitor_id}`}>${e.job_name}</a></dd>
              <dt>Exit code</dt><dd>${e.exit_code ?? "—"}</dd>`
            : html`<${OriginFacts} execution=${e} names=${names} /><dt>Class</dt><dd>${e.job_class_string}</dd>`}
          <dt>Scheduled</dt><dd><${Time} value=${e.scheduled_at} /></dd>
          <dt>Started</dt><dd><${Time} value=${e.started_at} /></dd>
          <dt>Ended</dt><dd><${Time} value=${e.completed_at} /></dd>
          <dt>Duration</dt><dd><${Duration} ms=${e.duration_ms} /></dd>
          ${isPing(e) ? null : html`<dt>Host</dt><dd>${e.hostname} <span class="muted">pid ${e.pid}${e.node_id ? `, node ${e.node_id}` : ""}</span></dd>`}
          ${e.missed_count ? html`<dt>Missed</dt><dd>${e.missed_count} occurrence(s) until <${Time} value=${e.missed_until} /></dd>` : null}
          <dt>Id</dt><dd><code>${e._id}</code></dd>
        </dl>
      </section>
      ${showLive
        ? html`<${LiveOutput} key=${e._id} execution=${e} onEnd=${streamEnded} />`
        : html`<${Output} title="Output" id="output" text=${e.output} empty="No output." />`}
      ${e.error ? html`<${Output} title="Error" id="error" text=${e.error} bad=${true} />` : null}
      ${isPing(e) ? null : html`<${ParametersPanel} parameters=${e.parameters} /><${ResultPanel} result=${e.result} /><${StartedRuns} execution=${e} />`}
      ${e.alerts && e.alerts.length ? html`<${Alerts} alerts=${e.alerts} />` : null}
    `}<//>
  </section>`;
}

function attemptFacts(e, job) {
  const attempt = e.attempt || 1;
  if (attempt <= 1 && !e.retry_of && !e.next_attempt_id) return null;
  const max = e.max_attempts || (job && Number.isInteger(job.retries) && job.retries + 1 >= attempt ? job.retries + 1 : null);
  return html`<dt>Attempt</dt><dd data-testid="execution-attempt">attempt ${attempt}${max ? ` of ${max}` : ""}
    ${e.retry_of && e.retry_of !== e._id ? html` · <a href=${`#/executions/${e.retry_of}`}>first attempt</a>` : null}
    ${e.next_attempt_id ? html` · <a href=${`#/executions/${e.next_attempt_id}`}>next attempt</a>` : null}</dd>`;
}

function Alerts({ alerts }) {
  return html`<section class="panel" aria-labelledby="alerts-title">
    <h2 id="alerts-title">Alerts sent</h2>
    <div class="table-wrap"><table class="alerts" data-testid="execution-alerts">
      <thead><tr><th scope="col">When</th><th scope="col">Event</th><th scope="col">Channel</th><th scope="col">To</th><th scope="col">Result</th><th scope="col">Status code</th><th scope="col">Attempts</th></tr></thead>
      <tbody>${alerts.map((a, i) => html`<tr key=${i}>
        <td><${Time} value=${a.at} /></td>
        <td>${a.event}</td>
        <td>${a.channel}</td>
        <td class="wrap">${a.channel_id ? html`<a href=${`#/channels/${a.channel_id}`}>${a.target}</a>` : a.target}</td>
        <td>${a.muted ? html`<span>muted</span>: <span class="wrap">${a.error}</span>` : a.ok ? html`<span class="ok-text">delivered</span>` : html`<span class="bad-text">failed</span>${a.error ? html`: <span class="wrap">${a.error}</span>` : null}`}</td>
        <td class="num">${a.status_code ?? "—"}</td>
        <td class="num">${a.attempt ?? "—"}</td>
      </tr>`)}</tbody>
    </table></div>
  </section>`;
}

function Output({ title, id, text, empty = "Nothing.", bad = false }) {
  return html`<section class="panel" aria-labelledby=${`${id}-title`}>
    <div class="panel-head"><h2 id=${`${id}-title`}>${title}</h2>
      ${text ? html`<button type="button" onClick=${() => copyText(text)} aria-label=${`Copy ${title.toLowerCase()}`}>Copy</button>` : null}</div>
    ${text ? html`<pre class=${`output ${bad ? "bad" : ""}`} data-testid=${`execution-${id}`} tabindex="0">${text}</pre>` : html`<p class="muted">${empty}</p>`}
  </section>`;
}

const PHASES = {
  connecting: ["connecting…", "wait"],
  live: ["live", "on"],
  reconnecting: ["reconnecting…", "wait"],
  ended: ["ended", "off"],
  polling: ["updating every second", "wait"],
};

/** The output of a run still going: lines arrive over Server-Sent Events and are appended; the
 * view stays at the bottom unless the reader scrolled up. On `end` the stream is closed (or the
 * browser would reconnect) and `onEnd` reloads the record. If the stream cannot be opened, the
 * record's output (polled by the page) is shown instead. */
function LiveOutput({ execution, onEnd }) {
  const id = execution._id;
  const [text, setText] = useState("");
  const [phase, setPhase] = useState("connecting");
  const box = useRef(null);
  const stick = useRef(true);
  const ended = useRef(onEnd);
  ended.current = onEnd;

  useEffect(() => {
    const source = new EventSource(`/api/scheduler/executions/${encodeURIComponent(id)}/output/stream`);
    let pending = "";
    let timer = null;
    let done = false;
    let closer = null;
    const flush = () => {
      timer = null;
      const chunk = pending;
      pending = "";
      if (chunk) setText((current) => current + chunk);
    };
    source.onopen = () => setPhase("live");
    source.onmessage = (event) => {
      pending += `${event.data}\n`;
      if (timer === null) timer = setTimeout(flush, 50); // many lines at once: one render
    };
    source.addEventListener("end", (event) => {
      // The server closes the stream right after `end`; closing it here at once could abort
      // the response's last bytes, so close a moment later (at the latest) or on that close.
      done = true;
      closer = setTimeout(() => source.close(), 1000);
      if (timer !== null) clearTimeout(timer);
      flush();
      setPhase("ended");
      let result = null;
      try {
        result = JSON.parse(event.data);
      } catch {
        result = null;
      }
      ended.current(result);
    });
    source.onerror = () => {
      if (done) {
        source.close(); // the server closed after `end`: no reconnecting
        return;
      }
      // CONNECTING: the browser reconnects by itself (Last-Event-ID resumes); CLOSED: refused.
      if (source.readyState === EventSource.CLOSED) setPhase((p) => (p === "ended" ? p : "polling"));
      else setPhase((p) => (p === "ended" ? p : "reconnecting"));
    };
    return () => {
      source.close();
      if (timer !== null) clearTimeout(timer);
      if (closer !== null) clearTimeout(closer);
    };
  }, [id]);

  const shown = phase === "polling" ? execution.output || "" : text;
  // Without a stream, the polled record is all there is: once it has ended, so has this view.
  const recordEnded = !ACTIVE.has(execution.status);
  useEffect(() => {
    if (recordEnded && phase === "polling") ended.current(null);
  }, [recordEnded, phase]);
  useLayoutEffect(() => {
    const pre = box.current;
    if (pre && stick.current) pre.scrollTop = pre.scrollHeight;
  }, [shown]);
  const onScroll = () => {
    const pre = box.current;
    if (pre) stick.current = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8;
  };
  const [label, tone] = PHASES[phase];
  return html`<section class="panel" aria-labelledby="output-title">
    <div class="panel-head"><h2 id="output-title">Output
        <span class=${`live-indicator ${tone}`} data-testid="output-live" data-phase=${phase} role="status">${label}</span></h2>
      ${shown ? html`<button type="button" onClick=${() => copyText(shown)} aria-label="Copy output">Copy</button>` : null}</div>
    <pre class=${`output live ${shown ? "" : "waiting"}`} data-testid="execution-output" tabindex="0" ref=${box} onScroll=${onScroll}>${shown}</pre>
    ${shown ? null : html`<p class="muted small">${execution.status === "scheduled" ? "The run has not started yet." : "No output yet."}</p>`}
  </section>`;
}
