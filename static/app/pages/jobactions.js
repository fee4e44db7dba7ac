// The row actions of a job, shared by the Jobs table and the job's page.
import { html, useState } from "../../vendor/htm/standalone.module.js";
import { api } from "../api.js";
import { RunDialog, runNeedsForm, runNow } from "../rundialog.js";
import { confirmDialog, formDialog, toast } from "../ui.js";
import { browserZone, localInputToIso, navigate } from "../util.js";

/** Ask why and until when (both optional): the body of a pause, {note, until}, or null for Cancel. */
export async function askPause({ title, message, submit }) {
  const values = await formDialog({
    title, message, submit,
    fields: [
      { key: "note", label: "Note (optional)", type: "textarea", hint: "Why: shown wherever the pause shows." },
      { key: "until", label: `Resume at (optional, ${browserZone()} time)`, type: "datetime-local",
        hint: "It resumes by itself then. Empty: until someone resumes it." },
    ],
  });
  if (!values) return null;
  return { note: values.note.trim() || null, until: localInputToIso(values.until) || null };
}

/** Pause (asking for a note and a resume time first) or resume; false when the pause was cancelled. */
export async function setPaused(job, paused) {
  if (paused) {
    const body = await askPause({ title: `Pause “${job.name}”?`, message: "It does not run on its schedule while paused; Run now still works.", submit: "Pause" });
    if (!body) return false;
    await api.patch(`/api/scheduler/jobs/${job._id}/pause`, { body });
  } else {
    await api.patch(`/api/scheduler/jobs/${job._id}/resume`);
  }
  toast(`“${job.name}” ${paused ? "paused" : "resumed"}`, "success");
  return true;
}

export async function deleteJob(job) {
  const choice = await confirmDialog({
    title: "Delete this job?",
    message: `“${job.name}” will no longer run. Its executions and audit entries are kept.`,
    actions: [{ label: "Delete", value: "delete", danger: true }],
  });
  if (choice !== "delete") return false;
  await api.del(`/api/scheduler/jobs/${job._id}`);
  toast(`Job “${job.name}” deleted`, "success");
  return true;
}

/** Run now (a form first for a job with parameters or chained jobs), Pause / Resume, Edit,
 * Delete; `changed()` refreshes the caller after each. */
export function JobActions({ job, changed, afterDelete }) {
  const [asking, setAsking] = useState(false);
  const act = (fn) => async () => {
    try {
      await fn();
    } catch {
      // the API client already showed the error
    }
    changed();
  };
  return html`<div class="row-actions">
    <button type="button" onClick=${runNeedsForm(job) ? () => setAsking(true) : act(() => runNow(job))}>Run now</button>
    ${asking ? html`<${RunDialog} job=${job} close=${(started) => { setAsking(false); if (started) changed(); }} />` : null}
    ${job.is_paused
      ? html`<button type="button" onClick=${act(() => setPaused(job, false))}>Resume</button>`
      : html`<button type="button" onClick=${act(() => setPaused(job, true))}>Pause</button>`}
    <button type="button" onClick=${() => navigate(`/jobs/${job._id}/edit`)}>Edit</button>
    <button type="button" class="danger" onClick=${async () => {
      try {
        if (await deleteJob(job)) {
          if (afterDelete) afterDelete();
          else changed();
        }
      } catch {
        changed();
      }
    }}>Delete</button>
  </div>`;
}

export function jobState(job) {
  if (!job.is_enabled) return "disabled";
  return job.is_paused ? "paused" : "enabled";
}
