// Overview: cards, activity charts, upcoming runs, latest failures, the forecast heatmap, nodes.
import { html, useState } from "../../vendor/htm/standalone.module.js";
import { api, listAll } from "../api.js";
import { Heatmap, StackedBars } from "../charts.js";
import { Badge, ErrorBox, Loaded, Loading, PageHeader, Time } from "../ui.js";
import { MaintenanceButton } from "../maintenance.js";
import { ForecastPeaks } from "./peaks.js";
import { browserZone, firstLine, navigate, relative, shortClass, useInterval, useResource } from "../util.js";

const hourLabel = new Intl.DateTimeFormat(undefined, { hour: "numeric" });
const dayLabel = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });

function Card({ label, value, detail, href, tone = "" }) {
  const body = html`<span class="card-label">${label}</span><span class="card-value">${value}</span>${
    detail ? html`<span class="card-detail">${detail}</span>` : null
  }`;
  return href ? html`<a class=${`card ${tone}`} href=${href}>${body}</a>` : html`<div class=${`card ${tone}`}>${body}</div>`;
}

export function OverviewPage() {
  const [range, setRange] = useState("hour");
  const [summary, reload] = useResource(async (background) => {
    const quiet = { quiet: background };
    const [stats, health, jobs, failures, timeouts, nodes] = await Promise.all([
      api.get("/api/scheduler/stats", null, quiet),
      api.get("/api/scheduler/health", null, { quiet: true }).catch((error) => error.body || { status: "unhealthy", message: error.detail }),
      listAll("/api/scheduler/jobs", {}, quiet),
      api.get("/api/scheduler/executions", { status: "failed", limit: 8 }, quiet),
      api.get("/api/scheduler/executions", { status: "timeout", limit: 8 }, quiet),
      api.get("/api/scheduler/nodes", null, quiet),
    ]);
    // Failed and timed-out runs, newest first.
    const when = (e) => e.completed_at || e.created_at || "";
    const latest = [...failures.data, ...timeouts.data].sort((a, b) => when(b).localeCompare(when(a))).slice(0, 8);
    return { stats: stats.stats, health, jobs, failures: latest, nodes: nodes.data };
  }, []);
  const [activity, reloadActivity] = useResource(
    (background) => api.get("/api/scheduler/activity", { bucket: range, timezone: browserZone() }, { quiet: background }),
    [range],
  );
  const [forecast, reloadForecast] = useResource(
    (background) => api.get("/api/scheduler/forecast", { hours: 168 }, { quiet: background }),
    [],
  );
  useInterval(() => {
    reload(true);
    reloadActivity(true);
  }, 5000);
  useInterval(() => reloadForecast(true), 60000);

  return html`<section class="page">
    <${PageHeader} title="Overview">
      <${MaintenanceButton} />
      <button type="button" class="primary" onClick=${() => navigate("/jobs/new")}>New job</button>
    <//>
    <${Loaded} state=${summary} reload=${reload}>${(data) => html`<${Summary} data=${data} />`}<//>

    <section class="panel" aria-labelledby="activity-title">
      <div class="panel-head">
        <h2 id="activity-title">Executions ${range === "hour" ? "per hour, last 24 hours" : "per day, last 30 days"}</h2>
        <div class="segmented" role="group" aria-label="Period">
          <button type="button" aria-pressed=${range === "hour"} onClick=${() => setRange("hour")}>24 hours</button>
          <button type="button" aria-pressed=${range === "day"} onClick=${() => setRange("day")}>30 days</button>
        </div>
      </div>
      ${activity.error && !activity.data ? html`<${ErrorBox} error=${activity.error} retry=${reloadActivity} />`
        : !activity.data || activity.data.bucket !== range ? html`<${Loading} />`
        : html`<${StackedBars}
            buckets=${activity.data.buckets}
            title=${`Executions per ${range} by status`}
            tickEvery=${range === "hour" ? 3 : 5}
            label=${(b, long) => (range === "hour"
              ? (long ? `${dayLabel.format(new Date(b.start))} ${hourLabel.format(new Date(b.start))}` : hourLabel.format(new Date(b.start)))
              : dayLabel.format(new Date(b.start)))} />`}
    </section>

    <section class="panel" aria-labelledby="forecast-title">
      <div class="panel-head">
        <h2 id="forecast-title">Forecast: scheduled runs per hour, next 7 days</h2>
      </div>
      <${Loaded} state=${forecast} reload=${reloadForecast}>${(data) => html`
        ${data.total_runs === 0 ? html`<p class="muted">No enabled job is scheduled to run in the next 7 days.</p>` : null}
        <${Heatmap} forecast=${data} />
        <${ForecastPeaks} forecast=${data} changed=${() => reloadForecast(true)} />
        ${data.jobs.length ? html`<details><summary>Busiest jobs in the forecast</summary>
          <ul class="plain">${data.jobs.slice(0, 10).map((j) => html`<li key=${j.job_id}><a href=${`#/jobs/${j.job_id}`}>${j.name}</a>: ${j.runs}${j.capped ? "+" : ""} runs</li>`)}</ul>
        </details>` : null}
        ${data.errors.length ? html`<p class="warn">${data.errors.length} job(s) have a schedule that cannot be built.</p>` : null}
      `}<//>
    </section>
  </section>`;
}

function Summary({ data }) {
  const { stats, health, jobs, failures, nodes } = data;
  const upcoming = jobs.filter((j) => j.next_run_time).sort((a, b) => a.next_run_time.localeCompare(b.next_run_time)).slice(0, 10);
  const alive = nodes.filter((n) => n.state === "alive").length;
  return html`
    <div class="cards">
      <${Card} label="Jobs" value=${stats.total_jobs} detail=${`${stats.enabled_jobs} enabled · ${stats.paused_jobs} paused`} href="#/jobs" />
      <${Card} label="Executions" value=${stats.total_executions} detail=${`${stats.completed_executions} completed · ${stats.failed_executions} failed`} href="#/executions" />
      <${Card} label="Success rate" value=${`${stats.success_rate}%`} detail=${`${stats.ended_executions} ended runs`} tone=${stats.failed_executions ? "warn" : "ok"} />
      <${Card} label="Timed out" value=${stats.timeout_executions ?? 0}
        detail=${`${stats.cancelled_executions ?? 0} cancelled · ${stats.retried_executions ?? 0} retried`}
        href="#/executions?status=timeout" tone=${stats.timeout_executions ? "warn" : ""} />
      <${Card} label="Running now" value=${stats.running_executions} detail=${`${stats.skipped_executions} skipped · ${stats.missed_executions} missed`} href="#/executions?status=running" />
      <${Card} label="Scheduler" value=${health.status} detail=${health.status === "healthy" ? `${alive} live node${alive === 1 ? "" : "s"}` : health.message} tone=${health.status === "healthy" ? "ok" : "bad"} />
    </div>
    <div class="columns">
      <section class="panel" aria-labelledby="upcoming-title">
        <h2 id="upcoming-title">Next runs</h2>
        ${upcoming.length
          ? html`<ol class="list">${upcoming.map(
              (j) => html`<li key=${j._id}><a href=${`#/jobs/${j._id}`}>${j.name}</a>
                <span class="muted">${shortClass(j.job_class_string)}</span>
                <span class="push"><${Time} value=${j.next_run_time} /> <span class="muted">${relative(j.next_run_time)}</span></span></li>`,
            )}</ol>`
          : html`<p class="muted">Nothing is scheduled. <a href="#/jobs/new">Create a job</a>.</p>`}
      </section>
      <section class="panel" aria-labelledby="failures-title">
        <h2 id="failures-title">Latest failures</h2>
        ${failures.length
          ? html`<ol class="list">${failures.map(
              (e) => html`<li key=${e._id}><a href=${`#/executions/${e._id}`}>${e.job_name}</a> <${Badge} status=${e.status} />
                <span class="push"><${Time} value=${e.completed_at || e.created_at} /></span>
                <code class="error-line">${firstLine(e.error) || "(no message)"}</code></li>`,
            )}</ol>`
          : html`<p class="muted">No failed runs. </p>`}
      </section>
    </div>
    ${nodes.length > 1 ? html`<section class="panel"><h2>Server nodes</h2><ul class="plain">${nodes.map(
      (n) => html`<li key=${n._id}>${n.hostname} (pid ${n.pid}) — <${Badge} status=${n.state} /> last seen <${Time} value=${n.last_seen} />${n.is_self ? " (this node)" : ""}</li>`,
    )}</ul></section>` : null}
  `;
}
