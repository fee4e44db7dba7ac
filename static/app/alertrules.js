// A job's alert rules (issue 22): the events a destination may receive, the job form's rows for
// noise control, mutes, duration alerts and the deadline, and the rules in words for the job page.
// The form's other alert inputs (e-mails, webhook, channels) stay in pages/jobform.js.
import { html } from "../vendor/htm/standalone.module.js";
import { Field } from "./ui.js";
import { browserZone, formatInZone, formatLocal, isoToLocalInput, localInputToIso } from "./util.js";
import { spanWords } from "./policies.js";

/** [key, label, hint]: the events a job's e-mail, webhook and channels may receive (the API's enum). */
export const ALERT_EVENTS = [
  ["failure", "Failure", "a run fails or ends badly after it had been succeeding"],
  ["recovery", "Recovery", "the first success after failures"],
  ["timeout", "Timeout", "a run passes its time limit"],
  ["missed", "Missed", "an occurrence could not run in time"],
  ["still_failing", "Still failing", "again while the job keeps failing (see “Alert again every”)"],
  ["flapping", "Flapping", "the state keeps changing; failures and recoveries are then held until it is stable"],
  ["skipped", "Skipped", "the overlap policy skipped an occurrence (the previous run was still going)"],
  ["long_running", "Long running", "a run is still running past its limit or far beyond its usual length"],
  ["too_short", "Too short", "a run succeeded in less than the minimum duration"],
  ["deadline_missed", "Deadline missed", "the deadline passed without a successful run"],
  ["adherence_low", "Adherence low", "the share of the last 7 days' occurrences that started on time fell below the target"],
];
/** What a newly named destination receives until the user ticks more: the changes of state. */
export const DEFAULT_EVENTS = ["failure", "recovery", "timeout", "missed"];

// The number rows: `min`/`max` as the API checks them, `step` "any" for a factor.
const NUMBERS = [
  { key: "alert_after_failures", label: "Alert after failures in a row", min: 1, max: 1000,
    hint: "1–1000: a failure is sent once this many runs in a row failed; a shorter streak sends nothing. Empty: 1." },
  { key: "realert_every_seconds", label: "Alert again every (seconds) while failing", min: 0,
    hint: (v) => `Sends “still failing” at this interval${spanWords(v) ? ` (now ${spanWords(v)})` : ""}. 0 or empty: never.` },
  { key: "flap_threshold", label: "Flapping after this many changes", min: 0, max: 100,
    hint: "0–100: more changes than this within the window send one “flapping” alert, then hold until stable. 0 or empty: off." },
  { key: "flap_window_seconds", label: "Flapping window (seconds)", min: 1,
    hint: (v) => `${spanWords(v) ? `Now ${spanWords(v)}. ` : ""}Empty: 3600 (1 h).` },
  { key: "max_duration_seconds", label: "Alert while running longer than (seconds)", min: 1, max: 604800,
    hint: "1 s to 7 days: “long running” is sent while the run still runs (it is not stopped). Empty: no limit." },
  { key: "duration_anomaly_factor", label: "Alert when longer than this × the usual p95", min: 1, max: 100, step: "any",
    hint: "1–100, against the p95 of the last 50 successful runs (once 5 exist). Empty: off." },
  { key: "min_duration_seconds", label: "Alert when a success took less than (seconds)", min: 1, max: 604800,
    hint: "1 s to 7 days: “too short” (a backup that “succeeded” in 2 s). Empty: off." },
  { key: "adherence_seconds", label: "On time within (seconds)", min: 1, max: 86400,
    hint: "1 s to 1 day: an occurrence that started this close to its time is on time (schedule adherence). Empty: 60." },
  { key: "adherence_target", label: "Adherence target (0–1)", min: 0, max: 1, step: "any",
    hint: "“adherence low” when less than this share of the last 7 days' occurrences were on time, e.g. 0.95. Empty: no alert." },
];
const DEADLINE_DAYS = [["day_of_week", "Deadline days of week"], ["day_of_month", "Deadline days of month"], ["month", "Deadline months"]];
const text = (value) => (value === null || value === undefined ? "" : String(value));

/** The form's texts for a job's alert rules (a new job: all empty). */
export function alertFormOf(job = {}) {
  const deadline = job.deadline || {};
  const form = Object.fromEntries(NUMBERS.map(({ key }) => [key, text(job[key])]));
  form.mute_until = isoToLocalInput(job.mute_until);
  form.mute_calendars = [...(job.mute_calendars || [])];
  form.deadline_time = text(deadline.time);
  form.deadline_timezone = text(deadline.timezone);
  for (const [key] of DEADLINE_DAYS) form[`deadline_${key}`] = deadline.time ? text(deadline[key] ?? "*") : "*";
  return form;
}

/** A number's text as the API wants it: null when empty, the text itself when it is no number (the 400 names the field). */
function numberOf(value) {
  const trimmed = value.trim();
  if (trimmed === "") return null;
  return Number.isFinite(Number(trimmed)) ? Number(trimmed) : trimmed;
}

/** The deadline for the API: null without a time; the timezone only when chosen (else the job's). */
function deadlineOf(form, stored) {
  if (!form.deadline_time.trim()) return null;
  const deadline = { time: form.deadline_time.trim() };
  if (form.deadline_timezone) deadline.timezone = form.deadline_timezone;
  for (const [key] of DEADLINE_DAYS) deadline[key] = form[`deadline_${key}`].trim() || "*";
  if (stored && stored.week) deadline.week = stored.week; // not in the form: kept
  return deadline;
}

/** The alert fields of a job's body: those the user changed from `initial` (the form as it was
 * loaded), so an edit keeps every value it did not touch; a new job sends what is filled in. */
export function alertBodyOf(form, initial, stored = {}) {
  const body = {};
  const changed = (key) => JSON.stringify(form[key]) !== JSON.stringify(initial[key]);
  for (const { key } of NUMBERS) if (changed(key)) body[key] = numberOf(form[key]);
  if (changed("mute_until")) body.mute_until = form.mute_until ? localInputToIso(form.mute_until) || form.mute_until : null;
  if (changed("mute_calendars")) body.mute_calendars = form.mute_calendars;
  if (Object.keys(form).some((key) => key.startsWith("deadline_") && changed(key))) body.deadline = deadlineOf(form, stored.deadline);
  return body;
}

/** The alert rule rows of the job form. `set(key)` makes an input's handler; `choose(key, value)`
 * sets a value (the calendars' select); `zones`: the time zones to offer. */
export function AlertRuleInputs({ form, errors, set, choose, calendars, users, zones }) {
  const number = (n) => {
    const hint = typeof n.hint === "function" ? n.hint(form[n.key]) : n.hint;
    return html`<${Field} key=${n.key} id=${`job-${n.key}`} label=${n.label} error=${errors[n.key]} hint=${hint}>
      ${(a) => html`<input ...${a} name=${n.key} type="number" inputmode="decimal" min=${n.min} max=${n.max} step=${n.step || 1}
        value=${form[n.key]} onInput=${set(n.key)} />`}
    <//>`;
  };
  const missing = form.mute_calendars.filter((id) => !calendars.some((c) => c._id === id));
  return html`<div class="alert-rules" role="group" aria-label="Alert rules">
    <h3 class="group-label">When to alert</h3>
    <div class="two">${NUMBERS.slice(0, 4).map(number)}</div>
    <h3 class="group-label">Mutes</h3>
    <div class="two">
      <${Field} id="job-mute_until" label=${`Muted until (${browserZone()} time)`} error=${errors.mute_until}
          hint="Until then alerts are recorded, not sent. Empty: not muted.">
        ${(a) => html`<input ...${a} name="mute_until" type="datetime-local" value=${form.mute_until} onInput=${set("mute_until")} />`}
      <//>
      <${Field} id="job-mute_calendars" label="Muted during (calendars)" error=${errors.mute_calendars}
          hint=${calendars.length ? "Maintenance windows: while one of these calendars' periods covers now, alerts are recorded, not sent. Ctrl/Cmd-click to choose several." : "No calendars yet: create them on the Calendars page."}>
        ${(a) => html`<select ...${a} multiple size=${Math.min(5, Math.max(2, calendars.length))}
            onChange=${(e) => choose("mute_calendars", [...e.target.selectedOptions].map((o) => o.value))}>
          ${calendars.map((c) => html`<option key=${c._id} value=${c._id} selected=${form.mute_calendars.includes(c._id)}>${c.name}${
            c.user_id === form.user_id ? "" : ` (${users.find((u) => u._id === c.user_id)?.name || "another user"}'s)`}</option>`)}
          ${missing.map((id) => html`<option key=${id} value=${id} selected>${id} (not visible)</option>`)}
        </select>`}
      <//>
    </div>
    <h3 class="group-label">Duration</h3>
    <div class="two">${NUMBERS.slice(4).map(number)}</div>
    <h3 class="group-label">Deadline</h3>
    <div class="two">
      <${Field} id="job-deadline_time" label="Must have succeeded by (HH:MM)" error=${errors.deadline_time}
          hint="A wall time; “deadline missed” is sent when it passes without a success since the previous one. Empty: no deadline.">
        ${(a) => html`<input ...${a} name="deadline_time" type="text" class="mono" placeholder="06:00" value=${form.deadline_time}
          onInput=${set("deadline_time")} autocomplete="off" spellcheck=${false} />`}
      <//>
      <${Field} id="job-deadline_timezone" label="Deadline zone" error=${errors.deadline_timezone}>
        ${(a) => html`<select ...${a} value=${form.deadline_timezone} onChange=${set("deadline_timezone")}>
          <option value="">The job's (${form.timezone})</option>
          ${form.deadline_timezone && !zones.includes(form.deadline_timezone) ? html`<option value=${form.deadline_timezone}>${form.deadline_timezone}</option>` : null}
          ${zones.map((z) => html`<option key=${z} value=${z}>${z}</option>`)}
        </select>`}
      <//>
      ${DEADLINE_DAYS.map(([key, label]) => html`<${Field} key=${key} id=${`job-deadline_${key}`} label=${label} error=${errors[`deadline_${key}`]}
          hint=${key === "day_of_week" ? "Cron fields, e.g. mon-fri; * for every." : undefined}>
        ${(a) => html`<input ...${a} type="text" class="mono" value=${form[`deadline_${key}`]} onInput=${set(`deadline_${key}`)} autocomplete="off" spellcheck=${false} />`}
      <//>`)}
    </div>
  </div>`;
}

// ---- the rules in words, for the job page -------------------------------------------------------
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function deadlineWords(job) {
  const d = job.deadline;
  if (!d) return null;
  const days = [d.day_of_week !== "*" && d.day_of_week ? d.day_of_week : null, d.day_of_month && d.day_of_month !== "*" ? `day ${d.day_of_month}` : null,
    d.month && d.month !== "*" ? `month ${d.month}` : null, d.week && d.week !== "*" ? `week ${d.week}` : null].filter(Boolean);
  const next = job.deadline_due_at ? `, next judged at ${formatInZone(job.deadline_due_at, d.timezone)}` : "";
  return `deadline ${d.time} ${d.timezone}${days.length ? ` ${days.join(", ")}` : " every day"}${next}`;
}

/** The job's alert rules in words: [{name, text}], only those it sets ("alerts after 3 failures in a row"). */
export function alertWords(job, { calendarNames = new Map() } = {}) {
  const rules = [
    ["after", job.alert_after_failures > 1 ? `alerts after ${plural(job.alert_after_failures, "failure")} in a row` : null],
    ["realert", job.realert_every_seconds > 0 ? `again every ${spanWords(job.realert_every_seconds)} while failing` : null],
    ["flapping", job.flap_threshold > 0
      ? `flapping after more than ${plural(job.flap_threshold, "change")} of state in ${spanWords(job.flap_window_seconds || 3600)}` : null],
    ["muted", job.mute_until && new Date(job.mute_until) > new Date() ? `muted until ${formatLocal(job.mute_until)}` : null],
    ["mute-calendars", (job.mute_calendars || []).length
      ? `muted during: ${job.mute_calendars.map((id) => calendarNames.get(id) || id).join(", ")}` : null],
    ["max-duration", job.max_duration_seconds ? `alerts while a run takes longer than ${spanWords(job.max_duration_seconds)}` : null],
    ["anomaly", job.duration_anomaly_factor ? `alerts when a run takes longer than ${job.duration_anomaly_factor} × its p95${
      job.duration_p95_ms ? ` (now ${spanWords(job.duration_p95_ms / 1000) || `${job.duration_p95_ms} ms`})` : ""}` : null],
    ["min-duration", job.min_duration_seconds ? `alerts when a success takes less than ${spanWords(job.min_duration_seconds)}` : null],
    ["deadline", deadlineWords(job)],
    ["adherence", job.adherence_target !== null && job.adherence_target !== undefined
      ? `alerts when under ${Math.round(job.adherence_target * 1000) / 10} % of a week's runs start within ${spanWords(job.adherence_seconds || 60)} of their time` : null],
  ];
  return rules.filter(([, words]) => words).map(([name, words]) => ({ name, text: words }));
}

/** The alert state's streak and flapping in words ("3 failures in a row since …, flapping"). */
export function alertStateWords(job) {
  const parts = [];
  if (job.alert_streak > 0) {
    parts.push(`${plural(job.alert_streak, "failure")} in a row${job.alert_streak_started_at ? ` since ${formatLocal(job.alert_streak_started_at)}` : ""}`);
  }
  if (job.alert_flapping) parts.push("flapping: failures and recoveries are held until it is stable");
  return parts.join("; ");
}
