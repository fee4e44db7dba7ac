// The row actions of a job, shared by the Jobs table and the job's page.
import { html } from "../../vendor/htm/standalone.module.js";
import { api } from "../api.js";
import { confirmDialog, toast } from "../ui.js";
import { navigate } from "../util.js";

export async function runNow(job) {
  const result = await api.post(`/api/scheduler/jobs/${job._id}/run`, {});
  toast(`Run of “${job.name}” started`, "success", { href: `#/executions/${result.execution_id}`, label: "View execution" });
  return result.execution_id;
}

export async function setPaused(job, paused) {
  await api.patch(`/api/scheduler/jobs/${job._id}/${paused ? "pause" : "resume"}`);
  toast(`“${job.name}” ${paused ? "paused" : "resumed"}`, "success");
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

/** Run now, Pause / Resume, Edit, Delete; `changed()` refreshes the caller after each. */
export function JobActions({ job, changed, afterDelete }) {
  const act = (fn) => async () => {
    try {
      await fn();
    } catch {
      // the API client already showed the error
    }
    changed();
  };
  return html`<div class="row-actions">
    <button type="button" onClick=${act(() => runNow(job))}>Run now</button>
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
