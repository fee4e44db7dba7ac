// The forecast's peak hours and the H schedules it suggests for their jobs, each applied by
// editing the job (after a confirm), then the forecast is read again.
import { html } from "../../vendor/htm/standalone.module.js";
import { api } from "../api.js";
import { confirmDialog, toast } from "../ui.js";

const LISTED_PEAKS = 6;
const hourFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
const FIELDS = ["second", "minute", "hour", "day_of_month", "month", "day_of_week", "week"];

/** One suggestion per job over every peak (a job crowding many hours is offered once). */
export function suggestionsOf(peaks) {
  const byJob = new Map();
  for (const peak of peaks) {
    for (const s of peak.suggestions) {
      const seen = byJob.get(s.job_id);
      if (seen) seen.peaks += 1;
      else byJob.set(s.job_id, { ...s, peaks: 1 });
    }
  }
  return [...byJob.values()];
}

const cronText = (fields) => FIELDS.map((f) => fields[f]).join(" ");

async function apply(suggestion, changed) {
  const choice = await confirmDialog({
    title: `Spread “${suggestion.name}”?`,
    message: `Its schedule becomes “${cronText(suggestion.suggested)}” (was “${cronText(suggestion.schedule)}”): `
      + "H is a minute of its own, derived from the job's id, so it no longer starts with the crowd.",
    actions: [{ label: "Apply", value: "apply" }],
  });
  if (choice !== "apply") return;
  try {
    await api.put(`/api/scheduler/jobs/${suggestion.job_id}`, suggestion.suggested);
    toast(`“${suggestion.name}” now runs at minute ${suggestion.suggested.minute}`, "success");
  } catch {
    // the API client showed the error
  }
  changed();
}

/** The peaks of a forecast answer and their suggestions; `changed()` reloads the forecast. */
export function ForecastPeaks({ forecast, changed }) {
  const { peaks } = forecast;
  if (!peaks.length) return null;
  const suggestions = suggestionsOf(peaks);
  return html`<div class="peaks" data-testid="forecast-peaks">
    <h3>Peak hours: ${peaks.length}</h3>
    <ul class="plain">${peaks.slice(0, LISTED_PEAKS).map((p) => html`<li key=${p.start}>
      ${hourFormat.format(new Date(p.start))}: ${p.starts} starts at ${hourFormat.format(new Date(p.minute))}, ${p.jobs} job${p.jobs === 1 ? "" : "s"}</li>`)}</ul>
    ${peaks.length > LISTED_PEAKS ? html`<p class="muted small">and ${peaks.length - LISTED_PEAKS} more</p>` : null}
    ${suggestions.length ? html`<p>Spread them: give each job a minute of its own (<code>H</code>).</p>
      <div class="table-wrap"><table>
        <thead><tr><th scope="col">Job</th><th scope="col">Schedule</th><th scope="col">Suggested</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
        <tbody>${suggestions.map((s) => html`<tr key=${s.job_id} data-job-id=${s.job_id}>
          <td><a href=${`#/jobs/${s.job_id}`}>${s.name}</a> <span class="muted small">${s.peaks} peak hour${s.peaks === 1 ? "" : "s"}</span></td>
          <td><code>${cronText(s.schedule)}</code></td>
          <td><code data-testid="suggested-schedule">${cronText(s.suggested)}</code></td>
          <td><button type="button" class="small" aria-label=${`Apply the suggested schedule to ${s.name}`} onClick=${() => apply(s, changed)}>Apply</button></td>
        </tr>`)}</tbody>
      </table></div>` : html`<p class="muted">No job in these peaks has a minute with an <code>H</code> form.</p>`}
  </div>`;
}
