// Create and edit a job: class notes, owner, cron fields with presets and a live preview, time
// zone, JSON arguments validated as you type, and a 400 shown next to the field it names.
import { html, useEffect, useState } from "../../vendor/htm/standalone.module.js";
import { ApiError, api, listAll } from "../api.js";
import { ErrorBox, Field, Loaded, Loading, PageHeader, toast } from "../ui.js";
import { browserZone, fieldOf, formatInZone, formatLocal, navigate, timeZones, useDebounced, useResource, utcText } from "../util.js";

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
const EVENTS = [
  ["failure", "Failure", "a run fails or ends badly after it had been succeeding"],
  ["recovery", "Recovery", "the first success after failures"],
  ["timeout", "Timeout", "a run passes its time limit"],
  ["missed", "Missed", "an occurrence could not run in time"],
];
const RUN_DEFAULTS = { timeout_seconds: "", retries: "0", retry_delay_seconds: "60", retry_backoff: "exponential" };
const NOTIFY_DEFAULTS = { notify_email: "", notify_webhook: "", notify_events: EVENTS.map(([key]) => key) };

function blank(users) {
  return {
    name: "", description: "", job_class_string: "jobs.echo.EchoJob", user_id: users[0]?._id || "",
    ...PRESETS[2][1], timezone: browserZone(), pub_args: "[]", pub_kwargs: "{}", is_enabled: true,
    ...RUN_DEFAULTS, ...NOTIFY_DEFAULTS,
  };
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

/** notify for the API: null when there is neither an email nor a webhook. */
function notifyOf(form) {
  const email = emailsOf(form.notify_email);
  const webhook = form.notify_webhook.trim();
  if (!email.length && !webhook) return null;
  return { email, webhook: webhook || null, events: EVENTS.map(([key]) => key).filter((key) => form.notify_events.includes(key)) };
}

/** The form field a 400 names: `notify["webhook"]` is the webhook field, `notify` the alerts. */
function errorField(detail) {
  const nested = /^Invalid field ([a-z_]+)\["([a-z_]+)"\]/.exec(detail || "");
  const candidates = nested ? [`${nested[1]}_${nested[2]}`, nested[1]] : [];
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
    const [users, classes, job] = await Promise.all([
      listAll("/api/users/"),
      api.get("/api/scheduler/available-jobs"),
      editing ? api.get(`/api/scheduler/jobs/${id}`) : Promise.resolve(null),
    ]);
    return { users, classes: classes.jobs, job: job ? job.data : null };
  }, [id]);
  return html`<section class="page">
    <${PageHeader} title=${editing ? "Edit job" : "New job"} />
    <${Loaded} state=${state} reload=${reload}>${(data) => html`<${JobForm} key=${id} data=${data} editing=${editing} />`}<//>
  </section>`;
}

function JobForm({ data, editing }) {
  const [form, setForm] = useState(() => (editing ? fromJob(data.job) : blank(data.users)));
  const [errors, setErrors] = useState({});
  const [formError, setFormError] = useState(null);
  const [saving, setSaving] = useState(false);
  const set = (key) => (e) => {
    const value = e.target.type === "checkbox" ? e.target.checked : e.target.value;
    setForm((f) => ({ ...f, [key]: value }));
    setErrors((errs) => ({ ...errs, [key]: undefined, ...(key.startsWith("notify") ? { notify: undefined } : {}) }));
  };
  const toggleEvent = (event) => (e) => {
    const on = e.target.checked;
    setForm((f) => ({ ...f, notify_events: on ? [...new Set([...f.notify_events, event])] : f.notify_events.filter((x) => x !== event) }));
    setErrors((errs) => ({ ...errs, notify_events: undefined, notify: undefined }));
  };
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
    if (args.error || kwargs.error || (notify && !notify.events.length)) {
      setErrors((errs) => ({
        ...errs, pub_args: args.error, pub_kwargs: kwargs.error,
        notify_events: notify && !notify.events.length ? "Choose at least one event, or clear the emails and the webhook to send no alerts." : undefined,
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
    };
    for (const [key] of CRON) body[key] = form[key];
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
      <div class="presets" role="group" aria-label="Presets">
        ${PRESETS.map(([label, fields]) => html`<button type="button" key=${label} onClick=${() => { setForm((f) => ({ ...f, ...fields })); setErrors({}); }}>${label}</button>`)}
      </div>
      <div class="cron-grid">
        ${CRON.map(([key, label]) => input(key, label, { attrs: { spellcheck: false, class: "mono" } }))}
      </div>
      <${Field} id="job-timezone" label="Time zone" error=${errors.timezone}>
        ${(a) => html`<select ...${a} value=${form.timezone} onChange=${set("timezone")}>
          ${ZONES.includes(form.timezone) ? null : html`<option value=${form.timezone}>${form.timezone}</option>`}
          ${ZONES.map((z) => html`<option key=${z} value=${z}>${z}</option>`)}
        </select>`}
      <//>
      <${CronPreview} form=${form} jobId=${editing ? data.job._id : null} jitter=${editing ? data.job.jitter_seconds || 0 : 0} setFieldError=${(field, message) => setErrors((errs) => ({ ...errs, [field]: message }))} />
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
      <p class="hint">Sent when the job's state changes: its first failure, its first success after failures, a timeout,
        a missed run. Leave the emails and the webhook empty to send none.</p>
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
          <input id=${`job-notify-event-${key}`} type="checkbox" checked=${form.notify_events.includes(key)} onChange=${toggleEvent(key)} />
          <label for=${`job-notify-event-${key}`} title=${hint}>${label}</label></span>`)}</div>
        ${errors.notify_events ? html`<p class="field-error" id="job-notify_events-error" role="alert">${errors.notify_events}</p>` : null}
      </div>
    </fieldset>

    <div class="form-actions">
      <button type="submit" class="primary" disabled=${saving}>Save</button>
      <button type="button" onClick=${() => (history.length > 1 ? history.back() : navigate("/jobs"))}>Cancel</button>
    </div>
  </form>`;
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
