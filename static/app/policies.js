// A job's run policies in words ("queues one run when busy"), for the job page and the form.
// One rule per policy: a later policy (catch-up, daylight saving) adds one line to RULES.
import { formatLocal } from "./util.js";

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const given = (value) => value !== null && value !== undefined && value !== "";

function overlap(job) {
  const limit = job.max_instances;
  switch (job.overlap_policy || "skip") {
    case "queue_one":
      return "queues one run when busy";
    case "queue_all":
      return `queues up to ${plural(job.max_queued || 1, "run")} when busy`;
    case "replace":
      return "replaces the running run";
    case "allow":
      return given(limit) ? `allows ${limit} at once` : "allows as many at once as the server's JOB_MAX_INSTANCES";
    default:
      return given(limit) && limit > 1 ? `skips a run when ${limit} are running` : "skips a run when busy";
  }
}

function jitter(job) {
  return job.jitter_seconds ? `spreads starts by up to ${job.jitter_seconds} s` : null;
}

function oneOff(job) {
  return job.run_at ? `runs once, at ${formatLocal(job.run_at)}` : null;
}

function dateWindow(job) {
  const { start_at: start, end_at: end } = job;
  if (start && end) return `runs only from ${formatLocal(start)} to ${formatLocal(end)}`;
  if (start) return `runs only from ${formatLocal(start)}`;
  return end ? `runs only until ${formatLocal(end)}` : null;
}

function maxRuns(job) {
  if (!given(job.max_runs)) return null;
  const left = Math.max(0, job.max_runs - (job.run_count || 0));
  return `stops after ${plural(job.max_runs, "run")} (${left} left)`;
}

function calendars(job, { calendarNames = new Map() } = {}) {
  const ids = job.exclude_calendars || [];
  return ids.length ? `skips runs in: ${ids.map((id) => calendarNames.get(id) || id).join(", ")}` : null;
}

/** A span in words: 21600 -> "6 h", 5400 -> "1 h 30 min", 172800 -> "2 days". */
export function spanWords(seconds) {
  let rest = Math.round(Number(seconds));
  if (!Number.isFinite(rest) || rest <= 0) return null;
  const parts = [];
  for (const [size, unit] of [[86400, null], [3600, "h"], [60, "min"], [1, "s"]]) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n) parts.push(unit ? `${n} ${unit}` : plural(n, "day"));
  }
  return parts.join(" ");
}

function catchup(job) {
  const span = spanWords(job.catchup_window_seconds);
  switch (job.catchup_policy || "latest") {
    case "none":
      return "records missed runs, runs none";
    case "all":
      return `catches up every missed run for ${span || "the server's MISFIRE_GRACE_TIME"}`;
    default:
      return `runs only the latest missed run${span ? ` (up to ${span} late)` : ""}`;
  }
}

const SPRING_FORWARD = {
  shift: "shifts a run in a spring-forward gap by the gap",
  at_change: "runs a run in a spring-forward gap at the change",
  skip: "skips a run in a spring-forward gap",
};
const FALL_BACK = { once: "runs once in a fall-back hour", twice: "runs twice in a fall-back hour" };

/** Only the rules the job sets itself (the rest are the README's defaults of its kind). */
function daylightSaving(job) {
  const policy = job.dst_policy || {};
  const words = [SPRING_FORWARD[policy.spring_forward], FALL_BACK[policy.fall_back]].filter(Boolean);
  return words.length ? words.join(", ") : null;
}

function pauseAfterFailures(job) {
  const n = job.pause_after_failures;
  return given(n) ? `pauses itself after ${plural(n, "failure")} in a row` : null;
}

/** [name, rule]: a rule gives the words for its policy, or null when the job does not set it. */
const RULES = [
  ["overlap", overlap],
  ["catchup", catchup],
  ["dst", daylightSaving],
  ["jitter", jitter],
  ["one-off", oneOff],
  ["window", dateWindow],
  ["max-runs", maxRuns],
  ["calendars", calendars],
  ["pause-after-failures", pauseAfterFailures],
];

/** The job's policies in words: [{name, text}], in a fixed order. `context.calendarNames`
 * maps calendar ids to names (an id shows where the name is unknown). */
export function policyWords(job, context = {}) {
  return RULES.map(([name, rule]) => ({ name, text: rule(job, context) })).filter((p) => p.text);
}

/** A paused job's pause in words: who, the note and when it resumes by itself (null if not paused). */
export function pauseWords(job) {
  if (!job.is_paused) return null;
  return {
    note: job.pause_note || null,
    by: job.paused_by || null,
    resumes: job.paused_until ? `resumes at ${formatLocal(job.paused_until)}` : null,
  };
}

/** Why a queued occurrence waits (its job's overlap policy), while it still waits; "" otherwise. */
export function waitingText(execution) {
  return execution.status === "scheduled" && execution.waiting ? `Waits: ${execution.waiting}` : "";
}
