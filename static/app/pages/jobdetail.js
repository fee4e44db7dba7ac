// One job: its fields, schedule preview, executions (paginated, live), durations and audit log.
import { html } from "../../vendor/htm/standalone.module.js";
import { api, listAll } from "../api.js";
import { DurationBars } from "../charts.js";
import { Badge, Duration, Empty, Loaded, PageHeader, Pager, Time } from "../ui.js";
import { ACTIVE, firstLine, formatInZone, formatLocal, formatSeconds, navigate, shortClass, useInterval, useQuery, useResource, utcText } from "../util.js";
import { BackfillButton } from "./backfill.js";
import { AttemptMark, CancelButton } from "./executions.js";
import { JobActions, jobState } from "./jobactions.js";
import { pauseWords, policyWords, waitingText } from "../policies.js";
import { RunStrip } from "./jobs.js";
import { TriggerUrls } from "./triggers.js";
import { kindLabel } from "./channels.js";
import { alertStateWords, alertWords } from "../alertrules.js";

const PAGE = 20;

export function JobDetailPage({ route }) {
  const id = route.segments[1];
  const [query, setQuery] = useQuery(route);
  const offset = Number(query.offset || 0);
  const auditOffset = Number(query.audit_offset || 0);
  const [state, reload] = useResource(async (background) => {
    const quiet = { quiet: background };
    const job = (await api.get(`/api/scheduler/jobs/${id}`, null, quiet)).data;
    const preview = api.get("/api/scheduler/cron/preview", {
      second: job.second, minute: job.minute, hour: job.hour, day_of_month: job.day_of_month,
      month: job.month, day_of_week: job.day_of_week, week: job.week, timezone: job.timezone, count: 5,
      job_id: id, jitter_seconds: job.jitter_seconds || 0,
    }, { quiet: true }).catch((error) => ({ error }));
    const calendars = (job.exclude_calendars || []).length || (job.mute_calendars || []).length
      ? listAll("/api/scheduler/calendars", {}, quiet) : Promise.resolve([]);
    const channels = job.notify && (job.notify.channels || []).length
      ? listAll("/api/scheduler/channels", {}, quiet) : Promise.resolve([]);
    const plan = api.get(`/api/scheduler/jobs/${id}/preview`, { count: 10 }, { quiet: true }).catch((error) => ({ error }));
    const [executions, audit, users, durations, previewResult, calendarList, planResult, channelList] = await Promise.all([
      api.get("/api/scheduler/executions", { job_id: id, limit: PAGE, offset }, quiet),
      api.get("/api/scheduler/audit-logs", { job_id: id, limit: PAGE, offset: auditOffset }, quiet),
      listAll("/api/users/", {}, quiet),
      api.get("/api/scheduler/executions", { job_id: id, limit: 50 }, quiet),
      preview,
      calendars,
      plan,
      channels,
    ]);
    return {
      job, executions, audit, owner: users.find((u) => u._id === job.user_id), durations: durations.data, preview: previewResult, plan: planResult,
      calendarNames: new Map(calendarList.map((c) => [c._id, c.name])),
      channels: new Map(channelList.map((c) => [c._id, c])),
    };
  }, [id, offset, auditOffset]);
  const busy = state.data && (state.data.durations.some((e) => ACTIVE.has(e.status)) ||
    state.data.executions.data.some((e) => ACTIVE.has(e.status)));
  useInterval(() => reload(true), busy ? 1000 : 5000);

  return html`<section class="page">
    <${Loaded} state=${state} reload=${reload}>${(data) => html`<${Detail} data=${data} reload=${reload}
      offset=${offset} auditOffset=${auditOffset} setQuery=${setQuery} />`}<//>
  </section>`;
}

function Detail({ data, reload, offset, auditOffset, setQuery }) {
  const { job, executions, audit, owner, durations, preview, plan, calendarNames, channels } = data;
  const rules = alertWords(job, { calendarNames });
  return html`
    <${PageHeader} title=${job.name}>
      <${JobActions} job=${job} changed=${() => reload(true)} afterDelete=${() => navigate("/jobs")} />
      <${BackfillButton} job=${job} changed=${() => reload(true)} />
    <//>
    <p class="muted"><a href="#/jobs">← All jobs</a></p>
    <div class="columns">
      <section class="panel" aria-labelledby="fields-title">
        <h2 id="fields-title">Job</h2>
        <dl class="facts">
          <dt>State</dt><dd class=${`state-${jobState(job)}`} data-testid="job-state">${jobState(job)}<${PauseFacts} job=${job} />
            ${job.disabled_reason ? html`<div class="small">${job.disabled_reason}</div>` : null}</dd>
          <dt>Policies</dt><dd><ul class="policies" data-testid="job-policies">${policyWords(job, { calendarNames }).map(
            (p) => html`<li key=${p.name} data-policy=${p.name}>${p.text}</li>`)}</ul></dd>
          <dt>Alert rules</dt><dd>${rules.length ? html`<ul class="policies" data-testid="job-alert-rules">${rules.map(
            (r) => html`<li key=${r.name} data-rule=${r.name}>${r.text}</li>`)}</ul>` : html`<span class="muted" data-testid="job-alert-rules">alerts on every change of state</span>`}</dd>
          <dt>Alert state</dt><dd data-testid="job-alert-state"><${AlertState} job=${job} /></dd>
          <dt>Description</dt><dd>${job.description || html`<span class="muted">none</span>`}</dd>
          <dt>Class</dt><dd title=${job.job_class_string}>${shortClass(job.job_class_string)} <span class="muted">${job.job_class_string}</span></dd>
          <dt>Owner</dt><dd>${owner ? html`${owner.name} <span class="muted">${owner.email}</span>` : job.user_id}</dd>
          <dt>Arguments</dt><dd><code class="wrap">${JSON.stringify(job.pub_args)}</code></dd>
          <dt>Keyword arguments</dt><dd><code class="wrap">${JSON.stringify(job.pub_kwargs)}</code></dd>
          <dt>Time limit</dt><dd data-testid="job-timeout">${job.timeout_seconds ? formatSeconds(job.timeout_seconds) : html`<span class="muted">server default</span>`}</dd>
          <dt>Retries</dt><dd data-testid="job-retries">${retriesText(job)}</dd>
          <dt>Alerts</dt><dd data-testid="job-notify"><${NotifyFacts} notify=${job.notify} channels=${channels} /></dd>
          <dt>Next run</dt><dd>${job.next_run_time ? html`<${Time} value=${job.next_run_time} showRelative=${true} />` : html`<span class="muted">not scheduled (${jobState(job)})</span>`}</dd>
          <dt>Last run</dt><dd><${Time} value=${job.last_run_time} /></dd>
          <dt>Runs</dt><dd>${job.total_executions}</dd>
          <dt>Schedule adherence</dt><dd data-testid="job-adherence"><${AdherenceFacts} job=${job} /></dd>
          <dt>Created</dt><dd><${Time} value=${job.created_at} /></dd>
          <dt>Updated</dt><dd><${Time} value=${job.updated_at} /></dd>
          <dt>Id</dt><dd><code>${job._id}</code></dd>
        </dl>
      </section>
      <section class="panel" aria-labelledby="schedule-title">
        <h2 id="schedule-title">Schedule</h2>
        <p class="mono">${["second", "minute", "hour", "day_of_month", "month", "day_of_week", "week"].map((k) => job[k]).join(" ")}</p>
        ${preview.error ? html`<p class="warn">${preview.error.detail}</p>` : html`<p><strong>${preview.description}</strong></p>`}
        <${NextRuns} plan=${plan} />
        ${job.schedule_error ? html`<p class="warn">${job.schedule_error}</p>` : null}
        <h3>Latest runs</h3>
        <${RunStrip} runs=${durations.slice(0, 20)} />
        <${DurationBars} runs=${durations} />
      </section>
    </div>

    <${TriggerUrls} job=${job} />

    <section class="panel" aria-labelledby="executions-title">
      <h2 id="executions-title">Executions</h2>
      ${executions.total === 0 ? html`<${Empty}><p>This job has not run yet. Use Run now to try it.</p><//>` : html`
        <div class="table-wrap"><table>
          <thead><tr><th scope="col">Status</th><th scope="col">Scheduled</th><th scope="col">Started</th><th scope="col">Duration</th><th scope="col">Host</th><th scope="col">Output or error</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
          <tbody>${executions.data.map((e) => html`<tr key=${e._id} data-execution-id=${e._id}>
            <td><a href=${`#/executions/${e._id}`}><${Badge} status=${e.status} /></a><${AttemptMark} execution=${e} /></td>
            <td><${Time} value=${e.scheduled_at || e.created_at} /></td>
            <td><${Time} value=${e.started_at} /></td>
            <td><${Duration} ms=${e.duration_ms} /></td>
            <td>${e.hostname}</td>
            <td class="clip"><a href=${`#/executions/${e._id}`}>${waitingText(e) || firstLine(e.error) || firstLine(e.output) || "view"}</a></td>
            <td><${CancelButton} key=${e._id} execution=${e} small=${true} changed=${() => reload(true)} /></td>
          </tr>`)}</tbody>
        </table></div>
        <${Pager} total=${executions.total} limit=${PAGE} offset=${offset} onOffset=${(o) => setQuery({ offset: o, audit_offset: auditOffset || "" })} />`}
    </section>

    <section class="panel" aria-labelledby="audit-title">
      <h2 id="audit-title">Audit log</h2>
      ${audit.total === 0 ? html`<p class="muted">No entries.</p>` : html`
        <div class="table-wrap"><table>
          <thead><tr><th scope="col">When</th><th scope="col">Event</th><th scope="col">By</th><th scope="col">What</th></tr></thead>
          <tbody>${audit.data.map((a) => html`<tr key=${a._id}><td><${Time} value=${a.created_at} /></td><td>${a.event}</td><td>${a.user}</td><td class="wrap">${a.description}</td></tr>`)}</tbody>
        </table></div>
        <${Pager} total=${audit.total} limit=${PAGE} offset=${auditOffset} onOffset=${(o) => setQuery({ audit_offset: o, offset: offset || "" })} />`}
    </section>`;
}

/** The job's next runs as the scheduler will make them (GET /jobs/{id}/preview): jitter, calendar
 * exclusions (struck through, with the calendar), daylight-saving notes, and why the list ends. */
function NextRuns({ plan }) {
  if (plan.error) return html`<p class="warn">${plan.error.detail}</p>`;
  const zone = plan.timezone;
  const runs = plan.runs.map((run, i) => {
    const time = run.scheduled_at ? formatInZone(run.scheduled_at, zone) : `${run.wall_time} ${zone}`;
    const title = run.scheduled_at ? `${formatLocal(run.scheduled_at)} in your time zone · ${utcText(run.scheduled_at)}` : undefined;
    const struck = run.excluded_by || run.dst === "skipped";
    return html`<li key=${i} class=${struck ? "not-run" : ""} data-testid="next-run" title=${title}>
      ${struck ? html`<s>${time}</s>` : time}
      ${run.excluded_by ? html` <span class="small muted">excluded by ${run.excluded_by}</span>` : null}
      ${run.delay_seconds ? html` <span class="small muted">+${run.delay_seconds} s jitter</span>` : null}
      ${run.dst_note ? html`<div class="small warn" data-dst=${run.dst}>${run.dst_note}</div>` : null}
    </li>`;
  });
  return html`<h3>Next runs <span class="muted small">in ${zone}</span></h3>
    ${plan.reason ? html`<p class="warn" data-testid="next-runs-reason">${plan.reason}</p>` : null}
    ${runs.length ? html`<ol class="next-runs" aria-label="Next runs" data-testid="job-next-runs">${runs}</ol>`
      : plan.reason ? null : html`<p class="muted">No run is coming.</p>`}
    ${plan.excluded_not_listed ? html`<p class="muted small">and ${plan.excluded_not_listed} more excluded</p>` : null}
    ${plan.ends ? html`<p class="muted small" data-testid="next-runs-ends">Ends: ${plan.ends}</p>` : null}`;
}

/** A paused job's note, who paused it and when it resumes by itself. */
export function PauseFacts({ job }) {
  const pause = pauseWords(job);
  if (!pause) return null;
  return html`${pause.note ? html`<div class="pause-note" data-testid="pause-note">“${pause.note}”${pause.by ? html` <span class="muted small">(${pause.by})</span>` : null}</div>` : null}
    ${pause.resumes ? html`<div class="small" data-testid="pause-resumes">${pause.resumes}</div>` : null}`;
}

/** The job's alert state: ok (also for jobs from before alerts), failing or missed, with its
 * failure streak and whether it is flapping. */
export function AlertState({ job }) {
  const state = job.alert_state || "ok";
  const more = alertStateWords(job);
  return html`<${Badge} status=${state} />${state === "ok" ? null : html` <span class="muted small">${
    state === "failing" ? "its last run did not succeed" : "its last occurrence was missed"}</span>`}${
    more ? html`<div class="small" data-testid="job-alert-streak">${more}</div>` : null}`;
}

/** Schedule adherence over 7 and 30 days (the job's stats): occurrences started within
 * adherence_seconds, and their success rate; fetched again as the job's run count moves. */
function AdherenceFacts({ job }) {
  const [state] = useResource(async () => (await api.get("/api/scheduler/stats", { job_id: job._id }, { quiet: true })).stats.adherence,
    [job._id, job.total_executions]);
  if (!state.data) return html`<span class="muted">${state.error ? "not available" : "…"}</span>`;
  const within = `started within ${job.adherence_seconds || 60} s`;
  return html`<ul class="adherence">${["7d", "30d"].map((w) => {
    const f = state.data[w];
    const days = w === "7d" ? "7 days" : "30 days";
    return html`<li key=${w} data-window=${w}>${days}: ${f.ratio === null ? html`<span class="muted">no occurrences</span>`
      : html`<strong>${(f.ratio * 100).toFixed(1)} %</strong> on time <span class="muted small">(${f.on_time} of ${f.occurrences} ${within}; ${f.success_rate} % succeeded)</span>`}</li>`;
  })}</ul>${job.adherence_target !== null && job.adherence_target !== undefined ? html`<div class="small">alert below ${(job.adherence_target * 100).toFixed(1)} %${job.adherence_low ? html` <span class="warn">(below now)</span>` : null}</div>` : null}`;
}

function retriesText(job) {
  const retries = job.retries || 0;
  if (!retries) return html`<span class="muted">none</span>`;
  const delay = job.retry_delay_seconds ?? 60;
  const backoff = job.retry_backoff === "fixed" ? "fixed delay" : "exponential backoff (doubling, with jitter)";
  return `up to ${retries} after a failed or timed-out run, the first after ${formatSeconds(delay)}, ${backoff}`;
}

/** Where the job's alerts go: its own e-mail and webhook, and each channel it names (by name and
 * kind, with its events; an id where the channel is not visible). */
function NotifyFacts({ notify, channels }) {
  if (!notify) return html`<span class="muted" title="Every event goes to the server's ALERT_CHANNELS, if set">none</span>`;
  const emails = notify.email || [];
  const named = notify.channels || [];
  return html`${emails.length || notify.webhook ? html`<div>on ${(notify.events || []).join(", ")}</div>` : null}
    ${emails.length ? html`<div class="small">email: ${emails.join(", ")}</div>` : null}
    ${notify.webhook ? html`<div class="small">webhook: <code class="wrap">${notify.webhook}</code></div>` : null}
    ${named.length ? html`<ul class="policies" data-testid="job-notify-channels">${named.map((entry) => {
      const channel = channels.get(entry.id);
      return html`<li key=${entry.id} data-channel-id=${entry.id}>${channel
        ? html`<a href=${`#/channels/${entry.id}`}>${channel.name}</a> <span class="muted">(${kindLabel(channel.kind)})</span>`
        : html`<code>${entry.id}</code>`}: ${entry.events.join(", ")}</li>`;
    })}</ul>` : null}`;
}
