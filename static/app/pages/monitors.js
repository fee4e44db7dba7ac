// Heartbeat monitors (jobs that run elsewhere and ping Texium): the list with each one's state,
// last ping and next expected ping; create and edit; pause, resume, delete; the ping URL shown
// once (create and rotate: the server keeps only its hash) with a curl line and a crontab
// example; one monitor's page with its pings (its execution records).
import { html, useEffect, useRef, useState } from "../../vendor/htm/standalone.module.js";
import { api, listAll } from "../api.js";
import { NotifyChannels, channelEntriesOf, entryWithoutEvents } from "../notifychannels.js";
import { Badge, CopyLine, Duration, Empty, Field, Loaded, PageHeader, Pager, Time, confirmDialog, toast } from "../ui.js";
import { spanWords } from "../policies.js";
import { browserZone, fieldOf, firstLine, formatInZone, navigate, relative, timeZones, useInterval, useResource } from "../util.js";

const PINGS_PER_PAGE = 20;
const POLL_MS = 2000;
const ZONES = timeZones();
const CRON_FIELDS = [
  ["second", "Second"], ["minute", "Minute"], ["hour", "Hour"], ["day_of_month", "Day of month"],
  ["month", "Month"], ["day_of_week", "Day of week"], ["week", "ISO week"],
];
const CRON_DEFAULTS = { second: "0", minute: "0", hour: "2", day_of_month: "*", month: "*", day_of_week: "*", week: "*" };
// The events a monitor sends (the API's MonitorCreate notify events).
const EVENTS = [
  ["late", "Late", "The expected ping did not come; the grace time runs."],
  ["failure", "Down", "The grace time ended without a ping, or a failure ping came."],
  ["recovery", "Recovery", "A success ping after down."],
];

/** The routes under #/monitors: the list, a new one, an edit, one monitor. */
export function monitorRoute(id, action) {
  if (id === "new") return [MonitorFormPage, "New monitor"];
  if (id && action === "edit") return [MonitorFormPage, "Edit monitor"];
  if (id) return [MonitorPage, "Monitor"];
  return [MonitorsPage, "Monitors"];
}

/** "every 1 h", or the cron fields and their zone. */
function scheduleText(m) {
  if (m.period_seconds) return `every ${spanWords(m.period_seconds)}`;
  const fields = CRON_FIELDS.map(([key]) => m[key] ?? "*").join(" ");
  return `cron ${fields} (${m.timezone})`;
}

/** When the next ping is due, in the monitor's zone (the browser's for a period), and how soon. */
function Expected({ monitor }) {
  const value = monitor.next_expected_at;
  if (!value || monitor.state === "new" || monitor.state === "paused") {
    return html`<span class="muted">${monitor.state === "new" ? "after the first ping" : "—"}</span>`;
  }
  return html`<time datetime=${value} data-testid="monitor-next-expected">${formatInZone(value, monitor.timezone || browserZone())}</time>
    <span class="muted"> (${relative(value)})</span>`;
}

function LastPing({ monitor }) {
  if (!monitor.last_ping_at) return html`<span class="muted">never</span>`;
  return html`<${Time} value=${monitor.last_ping_at} showRelative=${true} />${
    monitor.last_exit_code !== null && monitor.last_exit_code !== undefined ? html` <span class="muted small">exit ${monitor.last_exit_code}</span>` : null}`;
}

async function setPaused(monitor, paused, changed) {
  await api.put(`/api/scheduler/monitors/${monitor._id}`, { is_paused: paused });
  toast(`Monitor “${monitor.name}” ${paused ? "paused" : "resumed"}`, "success");
  changed();
}

async function deleteMonitor(monitor) {
  const choice = await confirmDialog({
    title: "Delete this monitor?",
    message: `“${monitor.name}” stops being watched and its ping URL answers 404. Its pings stay in the executions history.`,
    actions: [{ label: "Delete", value: "delete", danger: true }],
  });
  if (choice !== "delete") return false;
  await api.del(`/api/scheduler/monitors/${monitor._id}`);
  toast(`Monitor “${monitor.name}” deleted`, "success");
  return true;
}

/** Pause or Resume, Edit, Delete. */
function MonitorActions({ monitor, changed, onDeleted }) {
  const paused = monitor.is_paused;
  return html`<div class="row-actions">
    <button type="button" aria-label=${`${paused ? "Resume" : "Pause"} ${monitor.name}`} onClick=${() => setPaused(monitor, !paused, changed).catch(() => {})}>${paused ? "Resume" : "Pause"}</button>
    <button type="button" aria-label=${`Edit ${monitor.name}`} onClick=${() => navigate(`/monitors/${monitor._id}/edit`)}>Edit</button>
    <button type="button" class="danger" aria-label=${`Delete ${monitor.name}`} onClick=${async () => {
      try {
        if (await deleteMonitor(monitor)) (onDeleted || changed)();
      } catch {
        // the API client showed the error
      }
    }}>Delete</button>
  </div>`;
}

// ---- list --------------------------------------------------------------------------------
function MonitorsPage() {
  const [state, reload] = useResource(async (background) => {
    const quiet = { quiet: background };
    const [monitors, users] = await Promise.all([listAll("/api/scheduler/monitors", {}, quiet), listAll("/api/users/", {}, quiet)]);
    return { monitors, users: new Map(users.map((u) => [u._id, u])) };
  }, []);
  useInterval(() => reload(true), POLL_MS);
  return html`<section class="page">
    <${PageHeader} title="Monitors"><button type="button" class="primary" onClick=${() => navigate("/monitors/new")}>New monitor</button><//>
    <p class="muted">Jobs that run elsewhere (a crontab, a Kubernetes CronJob, a CI pipeline) ping their monitor's URL;
      a ping that does not come in time, or reports a failure, sends an alert.</p>
    <${Loaded} state=${state} reload=${reload}>${(data) => data.monitors.length === 0
      ? html`<${Empty}><p>No monitors yet.</p><//>`
      : html`<div class="table-wrap"><table class="monitors">
          <thead><tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Schedule</th><th scope="col">Last ping</th><th scope="col">Next expected</th><th scope="col">Grace</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
          <tbody>${data.monitors.map((m) => html`<tr key=${m._id} data-monitor-id=${m._id}>
            <td class="strong"><a href=${`#/monitors/${m._id}`}>${m.name}</a>
              <div class="muted small">${data.users.get(m.user_id)?.name || m.user_id}</div></td>
            <td data-testid="monitor-state"><${Badge} status=${m.state} /></td>
            <td>${scheduleText(m)}</td>
            <td><${LastPing} monitor=${m} /></td>
            <td><${Expected} monitor=${m} /></td>
            <td>${spanWords(m.grace_seconds)}</td>
            <td><${MonitorActions} monitor=${m} changed=${() => reload(true)} /></td>
          </tr>`)}</tbody>
        </table></div>`}<//>
  </section>`;
}

// ---- the ping URL, shown once ------------------------------------------------------------------
/** The ping URL after create or rotate, with ways to use it; `close()` when the user is done. */
export function PingUrlDialog({ name, url, close }) {
  const ref = useRef(null);
  useEffect(() => {
    ref.current.showModal();
  }, []);
  return html`<dialog ref=${ref} class="dialog ping-url" aria-labelledby="ping-url-title" aria-describedby="ping-url-once"
      onCancel=${(e) => { e.preventDefault(); close(); }}>
    <h2 id="ping-url-title">Ping URL of “${name}”</h2>
    <p id="ping-url-once" class="warn" role="alert"><strong>Copy it now: it will not be shown again.</strong> The server keeps only a
      hash of it; “Rotate URL” on the monitor's page makes a new one (and retires this one).</p>
    <${CopyLine} id="ping-url" label="Ping URL" text=${url} />
    <${CopyLine} id="ping-url-curl" label="curl line" text=${`curl -fsS -m 10 --retry 3 ${url}`} />
    <${CopyLine} id="ping-url-crontab" label="Crontab line with texium ping-run" text=${`0 2 * * * texium ping-run ${url} -- /usr/local/bin/backup.sh`} />
    <p class="small muted">Add <code>/start</code> when a run begins, <code>/fail</code> or <code>${"/<exit code>"}</code> when it fails;
      <code>texium ping-run</code> does all of this around a command, with its output.</p>
    <div class="dialog-actions"><button type="button" class="primary" onClick=${close}>Done</button></div>
  </dialog>`;
}

// ---- one monitor: facts, actions, pings --------------------------------------------------------
function MonitorPage({ route }) {
  const id = route.segments[1];
  const [offset, setOffset] = useState(0);
  const [shown, setShown] = useState(null); // {name, url} after a rotate
  const [state, reload] = useResource(async (background) => {
    const quiet = { quiet: background };
    const [monitor, pings, channels] = await Promise.all([
      api.get(`/api/scheduler/monitors/${id}`, null, quiet),
      api.get("/api/scheduler/executions", { monitor_id: id, limit: PINGS_PER_PAGE, offset }, quiet),
      listAll("/api/scheduler/channels", {}, quiet),
    ]);
    return { monitor: monitor.data, pings, channels: new Map(channels.map((c) => [c._id, c])) };
  }, [id, offset]);
  useInterval(() => reload(true), POLL_MS);
  const rotate = async (monitor) => {
    const choice = await confirmDialog({
      title: "Replace the ping URL?",
      message: `The current URL of “${monitor.name}” answers 404 from now on: whatever pings it must be given the new one.`,
      actions: [{ label: "Rotate URL", value: "rotate", danger: true }],
    });
    if (choice !== "rotate") return;
    try {
      const answer = await api.post(`/api/scheduler/monitors/${monitor._id}/rotate`);
      setShown({ name: monitor.name, url: answer.ping_url });
    } catch {
      // the API client showed the error
    }
  };
  return html`<section class="page">
    <${Loaded} state=${state} reload=${reload}>${(data) => {
      const m = data.monitor;
      const entries = (m.notify && m.notify.channels) || [];
      return html`
        <${PageHeader} title=${m.name}>
          <button type="button" onClick=${() => rotate(m)}>Rotate URL</button>
          <${MonitorActions} monitor=${m} changed=${() => reload(true)} onDeleted=${() => navigate("/monitors")} />
        <//>
        <p class="muted"><a href="#/monitors">← Monitors</a> · <a href=${`#/executions?monitor=${m._id}`}>Its pings among the executions</a></p>
        <section class="panel">
          <dl class="facts">
            <dt>State</dt><dd data-testid="monitor-state"><${Badge} status=${m.state} /></dd>
            <dt>Schedule</dt><dd>${scheduleText(m)}</dd>
            <dt>Grace</dt><dd>${spanWords(m.grace_seconds)}</dd>
            <dt>Last ping</dt><dd data-testid="monitor-last-ping"><${LastPing} monitor=${m} /></dd>
            <dt>Next expected</dt><dd><${Expected} monitor=${m} /></dd>
            <dt>Alerts to</dt><dd>${entries.length
              ? entries.map((e, i) => html`${i ? "; " : ""}<a key=${e.id} href=${`#/channels/${e.id}`}>${data.channels.get(e.id)?.name || e.id}</a> (${e.events.join(", ")})`)
              : html`<span class="muted">the server's ALERT_CHANNELS</span>`}</dd>
            <dt>Ping URL</dt><dd class="muted">shown only when made (create, Rotate URL)</dd>
            <dt>Id</dt><dd><code>${m._id}</code></dd>
          </dl>
        </section>
        <${Pings} page=${data.pings} offset=${offset} onOffset=${setOffset} />
        ${shown ? html`<${PingUrlDialog} name=${shown.name} url=${shown.url} close=${() => setShown(null)} />` : null}`;
    }}<//>
  </section>`;
}

function Pings({ page, offset, onOffset }) {
  return html`<section class="panel" aria-labelledby="pings-title">
    <h2 id="pings-title">Pings</h2>
    ${page.data.length === 0 ? html`<p class="muted">No ping yet.</p>` : html`<div class="table-wrap"><table class="pings" data-testid="monitor-pings">
      <thead><tr><th scope="col">When</th><th scope="col">Status</th><th scope="col">Exit code</th><th scope="col">Duration</th><th scope="col">Output or error</th></tr></thead>
      <tbody>${page.data.map((e) => html`<tr key=${e._id} data-execution-id=${e._id}>
        <td><${Time} value=${e.completed_at || e.started_at || e.created_at} /></td>
        <td><a href=${`#/executions/${e._id}`} aria-label=${`Ping ${e._id}: ${e.status}`}><${Badge} status=${e.status} /></a></td>
        <td class="num">${e.exit_code ?? "—"}</td>
        <td><${Duration} ms=${e.duration_ms} /></td>
        <td class="clip">${firstLine(e.output) || firstLine(e.error) || html`<span class="muted">—</span>`}</td>
      </tr>`)}</tbody>
    </table></div>`}
    <${Pager} total=${page.total} limit=${PINGS_PER_PAGE} offset=${offset} onOffset=${onOffset} />
  </section>`;
}

// ---- create and edit -----------------------------------------------------------------------
function MonitorFormPage({ route }) {
  const id = route.segments[1];
  const editing = id !== "new";
  const [state, reload] = useResource(async () => {
    const [users, channels, monitor] = await Promise.all([
      listAll("/api/users/"),
      listAll("/api/scheduler/channels"),
      editing ? api.get(`/api/scheduler/monitors/${id}`) : null,
    ]);
    return { users, channels, monitor: monitor ? monitor.data : null };
  }, [id]);
  return html`<section class="page">
    <${PageHeader} title=${editing ? "Edit monitor" : "New monitor"} />
    <${Loaded} state=${state} reload=${reload}>${(data) => html`<${MonitorForm} key=${id} data=${data} />`}<//>
  </section>`;
}

function formOf(monitor, users) {
  const cron = monitor && !monitor.period_seconds;
  return {
    user_id: monitor ? monitor.user_id : users[0]?._id || "",
    name: monitor?.name || "",
    schedule: cron ? "cron" : "period",
    period_seconds: String(monitor?.period_seconds || 86400),
    ...Object.fromEntries(CRON_FIELDS.map(([key]) => [key, cron ? String(monitor[key]) : CRON_DEFAULTS[key]])),
    timezone: (cron && monitor.timezone) || browserZone(),
    grace_seconds: String(monitor?.grace_seconds ?? 300),
    is_paused: !!monitor?.is_paused,
    channels: channelEntriesOf(monitor?.notify),
  };
}

const numberOrText = (text) => (/^\s*-?\d+\s*$/.test(text) ? Number(text) : text);

/** The body the API wants: a period, or the cron fields and their zone (an edit switching from
 * one to the other says so with period_seconds null). */
function bodyOf(form, editing) {
  const body = {
    user_id: form.user_id,
    name: form.name,
    grace_seconds: numberOrText(form.grace_seconds),
    is_paused: form.is_paused,
    notify: form.channels.length ? { channels: form.channels } : null,
  };
  if (form.schedule === "period") return { ...body, period_seconds: numberOrText(form.period_seconds) };
  const cron = Object.fromEntries(CRON_FIELDS.map(([key]) => [key, form[key].trim()]));
  return { ...body, ...(editing ? { period_seconds: null } : {}), ...cron, timezone: form.timezone };
}

function MonitorForm({ data }) {
  const monitor = data.monitor;
  const [form, setForm] = useState(() => formOf(monitor, data.users));
  const [errors, setErrors] = useState({});
  const [formError, setFormError] = useState(null);
  const [saving, setSaving] = useState(false);
  const [created, setCreated] = useState(null); // {id, name, url}: the ping URL, shown once
  const set = (key) => (e) => {
    const value = e.target.type === "checkbox" ? e.target.checked : e.target.value;
    setForm((f) => ({ ...f, [key]: value }));
    setErrors((errs) => ({ ...errs, [key]: undefined }));
  };
  if (!data.users.length) {
    return html`<div class="state empty"><p>A monitor belongs to a user, and there is none yet.</p>
      <p><button type="button" class="primary" onClick=${() => navigate("/users/new")}>New user</button></p></div>`;
  }
  const submit = async (e) => {
    e.preventDefault();
    setFormError(null);
    if (entryWithoutEvents(form.channels)) {
      setErrors({ notify: "Tick at least one event for each chosen channel." });
      return;
    }
    setSaving(true);
    try {
      const body = bodyOf(form, !!monitor);
      if (monitor) {
        await api.put(`/api/scheduler/monitors/${monitor._id}`, body, { quiet: true });
        toast(`Monitor “${form.name}” saved`, "success");
        navigate(`/monitors/${monitor._id}`);
      } else {
        const answer = await api.post("/api/scheduler/monitors", body, { quiet: true });
        toast(`Monitor “${form.name}” created`, "success");
        setCreated({ id: answer.monitor_id, name: form.name, url: answer.ping_url });
      }
    } catch (error) {
      const detail = error.detail || String(error);
      const field = /^Invalid field notify/.test(detail) ? "notify" : fieldOf(detail);
      if (field && (field === "notify" || document.getElementById(`monitor-${field}`))) setErrors({ [field]: detail });
      else setFormError(detail);
      toast(detail, "error");
    } finally {
      setSaving(false);
    }
  };
  const text = (key, label, hint, attrs = {}) => html`<${Field} key=${key} id=${`monitor-${key}`} label=${label} error=${errors[key]} hint=${hint}>
    ${(a) => html`<input ...${a} ...${attrs} type="text" value=${form[key]} onInput=${set(key)} autocomplete="off" spellcheck=${false} />`}<//>`;
  return html`<form class="form narrow" onSubmit=${submit} novalidate>
    ${formError ? html`<p class="form-error" role="alert">${formError}</p>` : null}
    ${text("name", "Name")}
    <${Field} id="monitor-user_id" label="Owner" error=${errors.user_id}>${(a) => html`<select ...${a} value=${form.user_id} onChange=${set("user_id")}>
      ${data.users.map((u) => html`<option key=${u._id} value=${u._id}>${u.name} (${u.email})</option>`)}</select>`}<//>
    <fieldset><legend>When a ping is expected</legend>
      <div class="field checks" role="radiogroup" aria-label="Schedule kind">
        <span class="check"><input id="monitor-schedule-period" type="radio" name="monitor-schedule" value="period" checked=${form.schedule === "period"} onChange=${set("schedule")} />
          <label for="monitor-schedule-period">A period after the last ping</label></span>
        <span class="check"><input id="monitor-schedule-cron" type="radio" name="monitor-schedule" value="cron" checked=${form.schedule === "cron"} onChange=${set("schedule")} />
          <label for="monitor-schedule-cron">A cron schedule</label></span>
      </div>
      ${form.schedule === "period"
        ? text("period_seconds", "Period (seconds)", `A ping is due this long after the previous one${spanWords(form.period_seconds) ? ` (${spanWords(form.period_seconds)})` : ""}.`, { inputmode: "numeric" })
        : html`<div class="cron-grid">${CRON_FIELDS.map(([key, label]) => text(key, label, undefined, { class: "mono" }))}</div>
          <${Field} id="monitor-timezone" label="Time zone" error=${errors.timezone}>
            ${(a) => html`<select ...${a} value=${form.timezone} onChange=${set("timezone")}>
              ${ZONES.includes(form.timezone) ? null : html`<option value=${form.timezone}>${form.timezone}</option>`}
              ${ZONES.map((z) => html`<option key=${z} value=${z}>${z}</option>`)}
            </select>`}<//>`}
      ${text("grace_seconds", "Grace (seconds)", `How long after the expected time the monitor is late before it is down${spanWords(form.grace_seconds) ? ` (${spanWords(form.grace_seconds)})` : ""}.`, { inputmode: "numeric" })}
    </fieldset>
    <fieldset><legend>Alerts</legend>
      <${NotifyChannels} prefix="monitor" channels=${data.channels} users=${data.users} owner=${form.user_id} entries=${form.channels}
        onChange=${(channels) => { setForm((f) => ({ ...f, channels })); setErrors((errs) => ({ ...errs, notify: undefined })); }}
        events=${EVENTS} error=${errors.notify} />
    </fieldset>
    <div class="field checkbox"><input id="monitor-is_paused" type="checkbox" checked=${form.is_paused} onChange=${set("is_paused")} aria-describedby="monitor-is_paused-hint" />
      <label for="monitor-is_paused">Paused</label>
      <p class="hint" id="monitor-is_paused-hint">Pings are recorded; nothing is checked or sent.</p></div>
    <div class="form-actions">
      <button type="submit" class="primary" disabled=${saving}>Save</button>
      <button type="button" onClick=${() => navigate(monitor ? `/monitors/${monitor._id}` : "/monitors")}>Cancel</button>
    </div>
  </form>
  ${created /* outside the form: Enter in its fields must not submit the form again */
    ? html`<${PingUrlDialog} name=${created.name} url=${created.url} close=${() => navigate(`/monitors/${created.id}`)} />` : null}`;
}
