// Create and edit a job: class notes, owner, cron fields with presets and a live preview, time
// zone, JSON arguments validated as you type, and a 400 shown next to the field it names.
import { html, useEffect, useState } from "../../vendor/htm/standalone.module.js";
import { ApiError, api, listAll } from "../api.js";
import { ErrorBox, Field, Loaded, Loading, PageHeader, toast } from "../ui.js";
import { NotifyChannels, channelEntriesOf, entryWithoutEvents } from "../notifychannels.js";
import { spanWords } from "../policies.js";
import { ALERT_EVENTS, AlertRuleInputs, DEFAULT_EVENTS, alertBodyOf, alertFormOf } from "../alertrules.js";
import { JobPicker, useJobDirectory } from "../jobpicker.js";
import { DeclarationEditor, declarationOf, declarationRows } from "../parameters.js";
import { browserZone, fieldOf, formatInZone, formatLocal, isoToLocalInput, localInputToIso, navigate, timeZones, useDebounced, useResource, utcText } from "../util.js";

const CRON = [
  ["second", "Second"],
  ["minute", "Minute"],
  ["hour", "Hour"],
  ["day_of_month", "Day of month"],
  ["month", "Month"],
  ["day_of_week", "Day of week"],
  ["week", "ISO week"],
];
const PRESETS = [
  ["Every 5 minutes", { second: "0", minute: "*/5", hour: "*", day_of_month: "*", month: "*", day_of_week: "*", week: "*" }],
  ["Hourly", { second: "0", minute: "0", hour: "*", day_of_month: "*", month: "*", day_of_week: "*", week: "*" }],
  ["Daily at 09:00", { second: "0", minute: "0", hour: "9", day_of_month: "*", month: "*", day_of_week: "*", week: "*" }],
  ["Mondays at 15:00", { second: "0", minute: "0", hour: "15", day_of_month: "*", month: "*", day_of_week: "1", week: "*" }],
  ["First of the month", { second: "0", minute: "0", hour: "0", day_of_month: "1", month: "*", day_of_week: "*", week: "*" }],
];
const ZONES = timeZones();
const EVENTS = ALERT_EVENTS;
// The run policies' inputs, one line each (a later policy, e.g. catch-up, adds one line):
// `options` makes a select, `number` a number input ("" sends `empty`), `time` a datetime-local
// input in the browser's zone; `when(form)` shows it only where it applies (hidden: not sent);
// `path` puts it in an object field (dst_policy.spring_forward; "" there: the key is not sent);
// `hint` may be a function of the form.
const POLICIES = [
  { key: "overlap_policy", label: "When a run is due while the job still runs", empty: "skip", options: [
    ["skip", "Skip the new run (default)"], ["queue_one", "Queue one run: the newest waits"],
    ["queue_all", "Queue runs, up to a limit, oldest first"], ["replace", "Replace: cancel the running run, then start"],
    ["allow", "Allow several at once"]],
    hint: "Queued runs are kept in the store: they survive restarts and run once across nodes." },
  { key: "max_queued", label: "Runs that may wait", number: { min: 1, max: 100 }, empty: null,
    when: (f) => f.overlap_policy === "queue_all", hint: "1–100 (empty: 1); beyond that an occurrence is skipped." },
  { key: "max_instances", label: "Runs at once", number: { min: 1, max: 100 }, empty: null,
    when: (f) => f.overlap_policy === "allow", hint: "1–100, over every node. Empty: the server's JOB_MAX_INSTANCES." },
  { key: "catchup_policy", label: "Runs found due late (the server was down)", empty: "latest", options: [
    ["latest", "Run only the latest (default)"], ["none", "Run none: record them missed"],
    ["all", "Catch up: run every one, oldest first"]],
    hint: "Late runs beyond the window below are recorded missed; with “all” they go through the overlap policy." },
  { key: "catchup_window_seconds", label: "Still run when late by up to (seconds)", number: { min: 1, max: 2678400 }, empty: null,
    when: (f) => f.catchup_policy !== "none",
    hint: (f) => `1 s to 31 days${spanWords(f.catchup_window_seconds) ? ` (now ${spanWords(f.catchup_window_seconds)})` : ""}. Empty: the server's MISFIRE_GRACE_TIME.` },
  { key: "dst_spring_forward", path: ["dst_policy", "spring_forward"], label: "A run in a spring-forward gap (clocks skip its time)", empty: "", options: [
    ["", "Default: at the change for a fixed time, shifted for a repeating job"], ["at_change", "Run at the change (02:30 → 03:00)"],
    ["shift", "Run shifted by the gap (02:30 → 03:30)"], ["skip", "Skip it that day"]] },
  { key: "dst_fall_back", path: ["dst_policy", "fall_back"], label: "A run in a fall-back hour (clocks repeat its time)", empty: "", options: [
    ["", "Default: once for a fixed time, twice for a repeating job"], ["once", "Run once (the first copy)"], ["twice", "Run twice (both copies)"]] },
  { key: "jitter_seconds", label: "Spread starts by up to (seconds)", number: { min: 0, max: 3600 }, empty: 0,
    hint: "0–3600: each run starts a fixed, job-specific number of seconds later, so jobs written for :00 do not all start together." },
  { key: "start_at", label: `Not before (${browserZone()} time)`, time: true, hint: "Empty: from now." },
  { key: "end_at", label: `Not after (${browserZone()} time)`, time: true, hint: "Empty: no end. After “Not before”." },
  { key: "max_runs", label: "Stop after this many runs", number: { min: 1 }, empty: null,
    hint: "1 or more: then the job disables itself, saying why. Run now and retries do not count. Empty: no limit." },
  { key: "pause_after_failures", label: "Pause after failures in a row", number: { min: 1, max: 100 }, empty: null,
    hint: "1–100: after this many failed runs in a row the job pauses itself and sends its alerts. Empty: never." },
];

const RUN_DEFAULTS = { timeout_seconds: "", retries: "0", retry_delay_seconds: "60", retry_backoff: "exponential" };
// Chains: the jobs a run's end starts, and the fan-in (start once these jobs all have a run).
const CHAIN_FIELDS = [
  ["on_success", "On success, start", "When a run of this job succeeds (after its retries)."],
  ["on_failure", "On failure, start", "When a run fails, times out, is abandoned or cancelled (after its last retry)."],
  ["on_finish", "When it ends, start", "Whatever the outcome."],
];
const CHAIN_ERRORS = ["on_success", "on_failure", "on_finish", "depends_on", "depends_on_jobs", "depends_on_within_seconds", "depends_on_require"];
const CHAIN_DEFAULTS = { on_success: [], on_failure: [], on_finish: [], depends_on_jobs: [], depends_on_within_seconds: "", depends_on_require: "success", parameter_rows: [] };

/** The chain and parameter inputs for a stored job. */
function chainFormOf(job) {
  const fanIn = job.depends_on || null;
  return {
    on_success: [...(job.on_success || [])], on_failure: [...(job.on_failure || [])], on_finish: [...(job.on_finish || [])],
    depends_on_jobs: fanIn ? [...fanIn.jobs] : [], depends_on_within_seconds: fanIn && fanIn.within_seconds ? String(fanIn.within_seconds) : "",
    depends_on_require: (fanIn && fanIn.require) || "success", parameter_rows: declarationRows(job.parameters),
  };
}

/** The chain fields for the API: depends_on is null without jobs (no fan-in). */
function chainBodyOf(form) {
  return {
    on_success: form.on_success, on_failure: form.on_failure, on_finish: form.on_finish,
    depends_on: form.depends_on_jobs.length
      ? { jobs: form.depends_on_jobs, within_seconds: numberOf(form.depends_on_within_seconds, 86400), require: form.depends_on_require }
      : null,
    parameters: declarationOf(form.parameter_rows),
  };
}

const NOTIFY_DEFAULTS = { notify_email: "", notify_webhook: "", notify_events: [...DEFAULT_EVENTS], notify_channels: [] };

function blank(users) {
  return {
    name: "", description: "", job_class_string: "jobs.echo.EchoJob", user_id: users[0]?._id || "",
    ...PRESETS[2][1], timezone: browserZone(), pub_args: "[]", pub_kwargs: "{}", is_enabled: true,
    ...RUN_DEFAULTS, ...NOTIFY_DEFAULTS, ...CHAIN_DEFAULTS, ...policiesOf({}), once: false, run_at: "", exclude_calendars: [], ...alertFormOf(),
  };
}

/** The policy inputs' texts for a job (or a new one's defaults). */
function policiesOf(job) {
  const form = {};
  for (const p of POLICIES) {
    const value = p.path ? (job[p.path[0]] || {})[p.path[1]] : job[p.key];
    if (p.time) form[p.key] = isoToLocalInput(value);
    else form[p.key] = value === null || value === undefined ? (p.options || p.empty !== null ? String(p.empty) : "") : String(value);
  }
  return form;
}

/** The object fields the `path` inputs make ({dst_policy: {spring_forward: "skip"}}): only the
 * keys chosen; none chosen is null where the job had one (back to the defaults), else not sent. */
function nestedPolicies(form, stored) {
  const fields = {};
  for (const p of POLICIES.filter((q) => q.path)) {
    const [field, key] = p.path;
    if (!(field in fields)) fields[field] = null;
    if (form[p.key] !== "") fields[field] = { ...(fields[field] || {}), [key]: form[p.key] };
  }
  return Object.fromEntries(Object.entries(fields).filter(([field, value]) => value || stored[field]));
}

/** A datetime-local text as the API wants it: the stored value when the text still shows it (an
 * input holds minutes only), null when empty, the text itself when it is not a time (the 400 names it). */
function timeOf(text, stored) {
  if (!text) return null;
  if (stored && isoToLocalInput(stored) === text) return stored;
  return localInputToIso(text) || text;
}

function fromJob(job) {
  const form = { ...job, pub_args: JSON.stringify(job.pub_args, null, 2), pub_kwargs: JSON.stringify(job.pub_kwargs, null, 2) };
  for (const [key] of CRON) form[key] = String(job[key] ?? "*");
  form.timeout_seconds = job.timeout_seconds === null || job.timeout_seconds === undefined ? "" : String(job.timeout_seconds);
  form.retries = String(job.retries ?? RUN_DEFAULTS.retries);
  form.retry_delay_seconds = String(job.retry_delay_seconds ?? RUN_DEFAULTS.retry_delay_seconds);
  form.retry_backoff = job.retry_backoff || RUN_DEFAULTS.retry_backoff;
  const notify = job.notify || null;
  form.notify_email = notify && notify.email ? notify.email.join("\n") : "";
  form.notify_webhook = (notify && notify.webhook) || "";
  form.notify_events = notify && notify.events && notify.events.length ? [...notify.events] : [...NOTIFY_DEFAULTS.notify_events];
  form.notify_channels = channelEntriesOf(notify);
  Object.assign(form, policiesOf(job));
  form.once = !!job.run_at;
  form.run_at = isoToLocalInput(job.run_at);
  form.exclude_calendars = [...(job.exclude_calendars || [])];
  Object.assign(form, alertFormOf(job), chainFormOf(job));
  return form;
}

/** A number field's text as the API wants it: a number, `empty` when blank (the text itself
 * when it is not a number, so the API's 400 names the field). */
function numberOf(text, empty) {
  const trimmed = String(text ?? "").trim();
  if (trimmed === "") return empty;
  const value = Number(trimmed);
  return Number.isFinite(value) ? value : trimmed;
}

export function emailsOf(text) {
  return String(text || "").split(/[\s,;]+/).map((e) => e.trim()).filter(Boolean);
}

/** notify for the API: null when there is no email, webhook or channel; `events` (for the
 * email and the webhook) only with those. */
function notifyOf(form) {
  const email = emailsOf(form.notify_email);
  const webhook = form.notify_webhook.trim();
  const channels = form.notify_channels;
  if (!email.length && !webhook && !channels.length) return null;
  const notify = channels.length ? { channels } : {};
  if (!email.length && !webhook) return notify;
  return { ...notify, email, webhook: webhook || null, events: EVENTS.map(([key]) => key).filter((key) => form.notify_events.includes(key)) };
}

/** The form field a 400 names: `notify.webhook` (or `notify["webhook"]`) is the webhook field,
 * `notify.channels[0].id` the channels, `notify` the alerts. */
function errorField(detail) {
  const nested = /^Invalid field ([a-z_]+)(?:\["|\.)([a-z_]+)/.exec(detail || "");
  const candidates = nested ? [`${nested[1]}_${nested[2]}`, `${nested[1].replace(/_policy$/, "")}_${nested[2]}`, nested[1]] : [];
  const top = fieldOf(detail);
  if (top) candidates.push(top);
  return candidates.find((field) => document.getElementById(`job-${field}`)) || null;
}

function parseJson(text, kind) {
  let value;
  try {
    value = JSON.parse(text.trim() === "" ? (kind === "array" ? "[]" : "{}") : text);
  } catch (error) {
    return { error: `Not valid JSON: ${error.message}` };
  }
  if (kind === "array" && !Array.isArray(value)) return { error: "Must be a JSON array, e.g. [\"a\", 1]" };
  if (kind === "object" && (value === null || typeof value !== "object" || Array.isArray(value))) {
    return { error: "Must be a JSON object, e.g. {\"key\": \"value\"}" };
  }
  return { value };
}

export function JobFormPage({ route }) {
  const [, id] = route.segments;
  const editing = id !== "new";
  const [state, reload] = useResource(async () => {
    const [users, classes, job, calendars, channels] = await Promise.all([
      listAll("/api/users/"),
      api.get("/api/scheduler/available-jobs"),
      editing ? api.get(`/api/scheduler/jobs/${id}`) : Promise.resolve(null),
      listAll("/api/scheduler/calendars"),
      listAll("/api/scheduler/channels"),
    ]);
    return { users, classes: classes.jobs, job: job ? job.data : null, calendars, channels };
  }, [id]);
  return html`<section class="page">
    <${PageHeader} title=${editing ? "Edit job" : "New job"} />
    <${Loaded} state=${state} reload=${reload}>${(data) => html`<${JobForm} key=${id} data=${data} editing=${editing} />`}<//>
  </section>`;
}

function JobForm({ data, editing }) {
  const [initial] = useState(() => (editing ? fromJob(data.job) : blank(data.users))); // what an edit compares with
  const [form, setForm] = useState(initial);
  const [errors, setErrors] = useState({});
  const [formError, setFormError] = useState(null);
  const [saving, setSaving] = useState(false);
  const set = (key) => (e) => {
    const value = e.target.type === "checkbox" ? e.target.checked : e.target.value;
    setForm((f) => ({ ...f, [key]: value }));
    setErrors((errs) => ({ ...errs, [key]: undefined, ...(key.startsWith("notify") ? { notify: undefined } : {}) }));
  };
  const choose = (key, value) => {
    setForm((f) => ({ ...f, [key]: value }));
    setErrors((errs) => ({ ...errs, [key]: undefined }));
  };
  const toggleEvent = (event) => (e) => {
    const on = e.target.checked;
    setForm((f) => ({ ...f, notify_events: on ? [...new Set([...f.notify_events, event])] : f.notify_events.filter((x) => x !== event) }));
    setErrors((errs) => ({ ...errs, notify_events: undefined, notify: undefined }));
  };
  // A change to any chain field clears every chain error (a cycle names several of them).
  const chooseChain = (key, value) => {
    setForm((f) => ({ ...f, [key]: value }));
    setErrors((errs) => ({ ...errs, ...Object.fromEntries(CHAIN_ERRORS.map((k) => [k, undefined])) }));
  };
  const directory = useJobDirectory([...initial.on_success, ...initial.on_failure, ...initial.on_finish, ...initial.depends_on_jobs]);
  const self = editing ? [data.job._id] : [];
  const jobClass = data.classes.find((c) => c.class_string === form.job_class_string);
  const args = parseJson(form.pub_args, "array");
  const kwargs = parseJson(form.pub_kwargs, "object");

  if (!data.users.length) {
    return html`<div class="state empty"><p>A job belongs to a user, and there is none yet.</p>
      <p><button type="button" class="primary" onClick=${() => navigate("/users/new")}>New user</button></p></div>`;
  }

  const submit = async (e) => {
    e.preventDefault();
    const notify = notifyOf(form);
    const noEvents = notify && notify.events && !notify.events.length;
    const silent = entryWithoutEvents(form.notify_channels);
    if (args.error || kwargs.error || noEvents || silent) {
      setErrors((errs) => ({
        ...errs, pub_args: args.error, pub_kwargs: kwargs.error,
        notify_events: noEvents ? "Choose at least one event, or clear the emails and the webhook to send no alerts." : undefined,
        notify_channels: silent ? `Choose at least one event for ${data.channels.find((c) => c._id === silent.id)?.name || silent.id}, or untick the channel.` : undefined,
      }));
      return;
    }
    const body = {
      name: form.name, description: form.description, job_class_string: form.job_class_string, user_id: form.user_id,
      timezone: form.timezone, pub_args: args.value, pub_kwargs: kwargs.value, is_enabled: !!form.is_enabled,
      timeout_seconds: numberOf(form.timeout_seconds, null),
      retries: numberOf(form.retries, 0),
      retry_delay_seconds: numberOf(form.retry_delay_seconds, 60),
      retry_backoff: form.retry_backoff,
      notify,
      exclude_calendars: form.exclude_calendars,
    };
    const stored = editing ? data.job : {};
    for (const p of POLICIES) {
      if (p.when && !p.when(form)) continue; // does not apply: not sent (an edit keeps what is stored)
      if (p.path) continue;
      body[p.key] = p.time ? timeOf(form[p.key], stored[p.key]) : p.options ? form[p.key] : numberOf(form[p.key], p.empty);
    }
    Object.assign(body, nestedPolicies(form, stored), alertBodyOf(form, initial, stored), chainBodyOf(form));
    if (form.once) {
      // A one-off job has no cron fields (the server makes them from run_at); an unchanged run_at is not sent again.
      const runAt = timeOf(form.run_at, stored.run_at);
      if (runAt !== stored.run_at || !editing) body.run_at = runAt;
    } else {
      for (const [key] of CRON) body[key] = form[key];
      if (stored.run_at || !editing) body.run_at = null;
    }
    setSaving(true);
    setFormError(null);
    try {
      if (editing) {
        await api.put(`/api/scheduler/jobs/${data.job._id}`, body, { quiet: true });
        toast(`Job “${form.name}” saved`, "success");
        navigate(`/jobs/${data.job._id}`);
      } else {
        const result = await api.post("/api/scheduler/jobs", body, { quiet: true });
        toast(`Job “${form.name}” created`, "success");
        navigate(`/jobs/${result.job_id}`);
      }
    } catch (error) {
      const field = error instanceof ApiError && error.status === 400 ? errorField(error.detail) : null;
      if (field) setErrors((errs) => ({ ...errs, [field]: error.detail }));
      else setFormError(error.detail || String(error));
      toast(error.detail || String(error), "error");
    } finally {
      setSaving(false);
    }
  };

  const input = (key, label, props = {}) => html`<${Field} id=${`job-${key}`} label=${label} error=${errors[key]} hint=${props.hint}>
    ${(a) => html`<input ...${a} name=${key} type="text" value=${form[key]} onInput=${set(key)} autocomplete="off" ...${props.attrs || {}} />`}
  <//>`;

  const number = (key, label, attrs, hint) => html`<${Field} id=${`job-${key}`} label=${label} error=${errors[key]} hint=${hint}>
    ${(a) => html`<input ...${a} name=${key} type="number" inputmode="decimal" value=${form[key]} onInput=${set(key)} ...${attrs} />`}
  <//>`;

  const policyInput = (policy) => {
    const p = typeof policy.hint === "function" ? { ...policy, hint: policy.hint(form) } : policy;
    if (p.options) {
      return html`<${Field} key=${p.key} id=${`job-${p.key}`} label=${p.label} error=${errors[p.key]} hint=${p.hint}>
        ${(a) => html`<select ...${a} value=${form[p.key]} onChange=${set(p.key)}>${p.options.map(([value, text]) => html`<option key=${value} value=${value}>${text}</option>`)}</select>`}
      <//>`;
    }
    if (p.time) {
      return html`<${Field} key=${p.key} id=${`job-${p.key}`} label=${p.label} error=${errors[p.key]} hint=${p.hint}>
        ${(a) => html`<input ...${a} name=${p.key} type="datetime-local" value=${form[p.key]} onInput=${set(p.key)} />`}
      <//>`;
    }
    return html`<div key=${p.key}>${number(p.key, p.label, { ...p.number, step: 1 }, p.hint)}</div>`;
  };

  return html`<form class="form job-form" onSubmit=${submit} novalidate>
    ${formError ? html`<p class="form-error" role="alert">${formError}</p>` : null}
    <fieldset><legend>Job</legend>
      ${input("name", "Name")}
      <${Field} id="job-description" label="Description" error=${errors.description}>
        ${(a) => html`<textarea ...${a} rows="2" value=${form.description} onInput=${set("description")}></textarea>`}
      <//>
      <div class="two">
        <${Field} id="job-job_class_string" label="Job class" error=${errors.job_class_string}>
          ${(a) => html`<select ...${a} value=${form.job_class_string} onChange=${set("job_class_string")}>
            ${data.classes.map((c) => html`<option key=${c.class_string} value=${c.class_string}>${c.name} (${c.class_string})</option>`)}
            ${jobClass ? null : html`<option value=${form.job_class_string}>${form.job_class_string} (not available)</option>`}
          </select>`}
        <//>
        <${Field} id="job-user_id" label="Owner" error=${errors.user_id}>
          ${(a) => html`<select ...${a} value=${form.user_id} onChange=${set("user_id")}>
            ${data.users.map((u) => html`<option key=${u._id} value=${u._id}>${u.name} (${u.email})</option>`)}
          </select>`}
        <//>
      </div>
      ${jobClass ? html`<${ClassNotes} jobClass=${jobClass} onExample=${() => {
        const example = jobClass.meta_info.example_arguments;
        setForm((f) => ({ ...f, pub_args: JSON.stringify(example.pub_args, null, 2), pub_kwargs: JSON.stringify(example.pub_kwargs, null, 2) }));
      }} />` : null}
    </fieldset>

    <fieldset><legend>Schedule</legend>
      <div class="field checkbox">
        <input id="job-once" type="checkbox" checked=${!!form.once} onChange=${set("once")} aria-describedby="job-once-hint" />
        <label for="job-once">Run once, at a set time (no repeating schedule)</label>
        <p class="hint" id="job-once-hint">A one-off job fires once and then has no next run.</p>
      </div>
      ${form.once ? html`<${Field} id="job-run_at" label=${`Run at (${browserZone()} time)`} error=${errors.run_at} hint="In the future; the job's time zone below is the one its description uses.">
        ${(a) => html`<input ...${a} type="datetime-local" value=${form.run_at} onInput=${set("run_at")} />`}
      <//>` : html`<div class="presets" role="group" aria-label="Presets">
        ${PRESETS.map(([label, fields]) => html`<button type="button" key=${label} onClick=${() => { setForm((f) => ({ ...f, ...fields })); setErrors({}); }}>${label}</button>`)}
      </div>
      <div class="cron-grid">
        ${CRON.map(([key, label]) => input(key, label, { attrs: { spellcheck: false, class: "mono" } }))}
      </div>`}
      <${Field} id="job-timezone" label="Time zone" error=${errors.timezone}>
        ${(a) => html`<select ...${a} value=${form.timezone} onChange=${set("timezone")}>
          ${ZONES.includes(form.timezone) ? null : html`<option value=${form.timezone}>${form.timezone}</option>`}
          ${ZONES.map((z) => html`<option key=${z} value=${z}>${z}</option>`)}
        </select>`}
      <//>
      ${form.once ? null : html`<${CronPreview} form=${form} jobId=${editing ? data.job._id : null} jitter=${jitterOf(form.jitter_seconds)} setFieldError=${(field, message) => setErrors((errs) => ({ ...errs, [field]: message }))} />`}
    </fieldset>

    <fieldset><legend>Run policies</legend>
      <div class="two">
        ${POLICIES.filter((p) => !p.when || p.when(form)).map((p) => policyInput(p))}
        <${Field} id="job-exclude_calendars" label="Skip runs in (calendars)" error=${errors.exclude_calendars}
            hint=${data.calendars.length ? "Runs inside these calendars' blackouts do not happen. Ctrl/Cmd-click to choose several." : "No calendars yet: create them on the Calendars page."}>
          ${(a) => html`<select ...${a} multiple size=${Math.min(5, Math.max(2, data.calendars.length))} onChange=${(e) => {
            const chosen = [...e.target.selectedOptions].map((o) => o.value);
            setForm((f) => ({ ...f, exclude_calendars: chosen }));
            setErrors((errs) => ({ ...errs, exclude_calendars: undefined }));
          }}>
            ${data.calendars.map((c) => html`<option key=${c._id} value=${c._id} selected=${form.exclude_calendars.includes(c._id)}>${c.name}${
              c.user_id === form.user_id ? "" : ` (${data.users.find((u) => u._id === c.user_id)?.name || "another user"}'s)`}</option>`)}
            ${form.exclude_calendars.filter((cid) => !data.calendars.some((c) => c._id === cid)).map((cid) => html`<option key=${cid} value=${cid} selected>${cid} (not visible)</option>`)}
          </select>`}
        <//>
      </div>
    </fieldset>

    <fieldset><legend>Arguments</legend>
      <div class="two">
        <${Field} id="job-pub_args" label="Arguments (JSON)" error=${errors.pub_args || args.error} hint="A JSON array: the job's positional arguments.">
          ${(a) => html`<textarea ...${a} class="mono" rows="5" spellcheck=${false} value=${form.pub_args} onInput=${set("pub_args")}></textarea>`}
        <//>
        <${Field} id="job-pub_kwargs" label="Keyword arguments (JSON)" error=${errors.pub_kwargs || kwargs.error} hint="A JSON object: the job's keyword arguments.">
          ${(a) => html`<textarea ...${a} class="mono" rows="5" spellcheck=${false} value=${form.pub_kwargs} onInput=${set("pub_kwargs")}></textarea>`}
        <//>
      </div>
      <div class="field checkbox">
        <input id="job-is_enabled" type="checkbox" checked=${!!form.is_enabled} onChange=${set("is_enabled")} />
        <label for="job-is_enabled">Enabled</label>
        <p class="hint">A disabled job never fires on its schedule; Run now still works.</p>
      </div>
    </fieldset>

    <fieldset><legend>Chains</legend>
      <p class="hint">Jobs this job starts when a run ends (each started job keeps its own pause and overlap rules), and the jobs it waits for.
        A loop back to this job is refused.</p>
      <div class="two">
        ${CHAIN_FIELDS.map(([key, label, hint]) => html`<${JobPicker} key=${key} id=${`job-${key}`} label=${label} hint=${hint} error=${errors[key]}
          value=${form[key]} onChange=${(ids) => chooseChain(key, ids)} directory=${directory} exclude=${self} />`)}
        <${JobPicker} id="job-depends_on" label="Start after all of (fan-in)" error=${errors.depends_on || errors.depends_on_jobs}
          hint="This job starts once each of these jobs has a run with the outcome below, within the window below; each of their runs counts once."
          value=${form.depends_on_jobs} onChange=${(ids) => chooseChain("depends_on_jobs", ids)} directory=${directory} exclude=${self} />
      </div>
      ${form.depends_on_jobs.length ? html`<div class="two">
        ${number("depends_on_within_seconds", "Fan-in window (seconds)", { min: 1, max: 2592000, step: 1, placeholder: "86400" },
          "Their runs must have ended within this long of each other (1 s to 30 days; empty: one day).")}
        <${Field} id="job-depends_on_require" label="Fan-in needs their runs to" error=${errors.depends_on_require}>
          ${(a) => html`<select ...${a} value=${form.depends_on_require} onChange=${(e) => chooseChain("depends_on_require", e.target.value)}>
            <option value="success">succeed</option><option value="finish">end, whatever the outcome</option></select>`}
        <//>
      </div>` : null}
    </fieldset>

    <fieldset><legend>Parameters</legend>
      <${DeclarationEditor} rows=${form.parameter_rows} error=${errors.parameters}
        onChange=${(rows) => { setForm((f) => ({ ...f, parameter_rows: rows })); setErrors((errs) => ({ ...errs, parameters: undefined })); }} />
    </fieldset>

    <fieldset><legend>Time limit and retries</legend>
      <div class="two">
        ${number("timeout_seconds", "Time limit (seconds)", { min: 1, max: 604800, step: 1, placeholder: "server default" },
          "A run still going after this long is stopped and recorded timeout. Empty: the server's default (none unless DEFAULT_JOB_TIMEOUT is set).")}
        ${number("retries", "Retries", { min: 0, max: 10, step: 1 }, "Attempts after a run that failed or timed out (0–10; 0: none).")}
        ${number("retry_delay_seconds", "Retry delay (seconds)", { min: 0, max: 86400, step: "any" }, "Wait before the first retry (0–86400).")}
        <${Field} id="job-retry_backoff" label="Backoff" error=${errors.retry_backoff}
            hint="Exponential: the delay doubles for each further attempt, with some jitter.">
          ${(a) => html`<select ...${a} value=${form.retry_backoff} onChange=${set("retry_backoff")}>
            <option value="exponential">Exponential</option>
            <option value="fixed">Fixed</option>
          </select>`}
        <//>
      </div>
    </fieldset>

    <fieldset id="job-notify" aria-describedby=${errors.notify ? "job-notify-error" : undefined}><legend>Alerts</legend>
      <p class="hint">Sent when the job's state changes (its first failure, its first success after failures, a timeout,
        a missed run) and on the events the rules below add. Leave the emails and the webhook empty and tick no channel to send none.</p>
      ${errors.notify ? html`<p class="field-error" id="job-notify-error" role="alert">${errors.notify}</p>` : null}
      <div class="two">
        <${Field} id="job-notify_email" label="Alert emails" error=${errors.notify_email} hint="Up to 20 addresses, separated by commas or new lines.">
          ${(a) => html`<textarea ...${a} rows="2" spellcheck=${false} value=${form.notify_email} onInput=${set("notify_email")}
            placeholder="ops@example.com"></textarea>`}
        <//>
        <${Field} id="job-notify_webhook" label="Alert webhook URL" error=${errors.notify_webhook} hint="An http(s) URL (without a password in it) that receives a JSON POST.">
          ${(a) => html`<input ...${a} type="url" value=${form.notify_webhook} onInput=${set("notify_webhook")} autocomplete="off"
            spellcheck=${false} placeholder="https://hooks.example.com/texium" />`}
        <//>
      </div>
      <div class=${`field events ${errors.notify_events ? "has-error" : ""}`} id="job-notify_events" role="group" aria-labelledby="job-notify_events-label"
          aria-describedby=${errors.notify_events ? "job-notify_events-error" : undefined}>
        <span class="group-label" id="job-notify_events-label">Alert on</span>
        <div class="checks">${EVENTS.map(([key, label, hint]) => html`<span class="check" key=${key}>
          <input id=${`job-notify-event-${key}`} type="checkbox" title=${hint} checked=${form.notify_events.includes(key)} onChange=${toggleEvent(key)} />
          <label for=${`job-notify-event-${key}`} title=${hint}>${label}</label></span>`)}</div>
        ${errors.notify_events ? html`<p class="field-error" id="job-notify_events-error" role="alert">${errors.notify_events}</p>` : null}
      </div>
      <${NotifyChannels} channels=${data.channels} users=${data.users} owner=${form.user_id} entries=${form.notify_channels} events=${EVENTS} defaultEvents=${DEFAULT_EVENTS}
        error=${errors.notify_channels} onChange=${(entries) => {
          setForm((f) => ({ ...f, notify_channels: entries }));
          setErrors((errs) => ({ ...errs, notify_channels: undefined, notify: undefined }));
        }} />
      <${AlertRuleInputs} form=${form} errors=${errors} set=${set} choose=${choose} calendars=${data.calendars} users=${data.users} zones=${ZONES} />
    </fieldset>

    <div class="form-actions">
      <button type="submit" class="primary" disabled=${saving}>Save</button>
      <button type="button" onClick=${() => (history.length > 1 ? history.back() : navigate("/jobs"))}>Cancel</button>
    </div>
  </form>`;
}

/** The jitter the preview shows: the field's value while it is a valid one, else none. */
function jitterOf(text) {
  const value = Number(text);
  return Number.isInteger(value) && value >= 0 && value <= 3600 ? value : 0;
}

function ClassNotes({ jobClass, onExample }) {
  const meta = jobClass.meta_info || {};
  const example = meta.example_arguments || { pub_args: [], pub_kwargs: {} };
  return html`<div class="class-notes" aria-live="polite">
    <p><strong>${jobClass.name}</strong>: ${meta.description || jobClass.description}</p>
    ${meta.arguments && meta.arguments.length ? html`<ul class="args">${meta.arguments.map((a) => html`<li key=${a.name}>
      <code>${a.name}</code> <span class="muted">${a.type}${a.required ? ", required" : ""}</span> — ${a.description}</li>`)}</ul>` : null}
    ${meta.notes ? html`<p class="muted">${meta.notes}</p>` : null}
    <p>Example: <code>pub_args ${JSON.stringify(example.pub_args)}</code> <code>pub_kwargs ${JSON.stringify(example.pub_kwargs)}</code>
      <button type="button" class="small" onClick=${onExample}>Use example arguments</button></p>
  </div>`;
}

function CronPreview({ form, jobId, jitter, setFieldError }) {
  // H and jitter take the job's own values once it has an id (a new job: an example's, said below).
  const fields = Object.fromEntries([...CRON.map(([key]) => [key, form[key]]), ["timezone", form.timezone],
    ...(jobId ? [["job_id", jobId]] : []), ...(jitter ? [["jitter_seconds", jitter]] : [])]);
  const wanted = useDebounced(fields, 200);
  const [preview, setPreview] = useState({ loading: true });
  useEffect(() => {
    let current = true;
    setPreview((p) => ({ ...p, loading: true }));
    api.get("/api/scheduler/cron/preview", { ...wanted, count: 5 }, { quiet: true }).then(
      (result) => {
        if (!current) return;
        setPreview({ result, fields: wanted });
        for (const [key] of CRON) setFieldError(key, undefined);
        setFieldError("timezone", undefined);
      },
      (error) => {
        if (!current) return;
        setPreview({ error });
        const field = fieldOf(error.detail);
        if (field) setFieldError(field, error.detail);
      },
    );
    return () => {
      current = false;
    };
  }, [JSON.stringify(wanted)]);
  if (preview.error) {
    return html`<div class="preview bad" aria-live="polite" data-testid="cron-preview"><p class="preview-text">This schedule is not valid: ${preview.error.detail}</p></div>`;
  }
  if (!preview.result) return html`<div class="preview" data-testid="cron-preview"><${Loading} label="Reading the schedule…" /></div>`;
  const { description, timezone, next_run_times: times } = preview.result;
  return html`<div class=${`preview ${preview.loading ? "stale" : ""}`} aria-live="polite" data-testid="cron-preview">
    <p class="preview-text"><strong data-testid="cron-description">${description}</strong></p>
    <p class="muted small">Next runs, in ${timezone}:</p>
    ${preview.result.hash_seed === "example" && Object.keys(preview.result.hashed).length
      ? html`<p class="muted small" data-testid="cron-hash-note">H is shown with an example's values; the job gets its own when it is saved.</p>` : null}
    ${times.length
      ? html`<ol class="next-runs" aria-label="Next 5 runs" data-testid="cron-next-runs">${times.map((t) => html`<li key=${t} title=${`${formatLocal(t)} in your time zone · ${utcText(t)}`}>${formatInZone(t, timezone)}</li>`)}</ol>`
      : html`<p class="warn">This schedule never fires again.</p>`}
  </div>`;
}
