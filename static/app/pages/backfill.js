// Backfill from the job page: a dialog that lists a span's occurrences (the API's dry run), starts
// the backfill and follows its progress (GET backfills/{id}, polled) until it ends or is cancelled.
import { html, useEffect, useRef, useState } from "../../vendor/htm/standalone.module.js";
import { api } from "../api.js";
import { Field, toast } from "../ui.js";
import { browserZone, formatInZone, localInputToIso, useInterval } from "../util.js";

const LISTED = 10; // occurrences shown from a dry run
const POLL_MS = 1000;

/** The "Backfill…" action and, while open, its dialog. */
export function BackfillButton({ job, changed }) {
  const [open, setOpen] = useState(false);
  return html`<button type="button" onClick=${() => setOpen(true)}>Backfill…</button>
    ${open ? html`<${BackfillDialog} job=${job} close=${() => { setOpen(false); changed(); }} />` : null}`;
}

/** The request body for the dialog's fields (times in the browser's zone; the API's 400 names a bad one). */
function backfillBody(fields, dryRun) {
  const maxRuns = String(fields.max_runs).trim();
  return {
    from: localInputToIso(fields.from) || fields.from,
    to: localInputToIso(fields.to) || fields.to,
    dry_run: dryRun,
    max_runs: maxRuns === "" ? null : Number.isFinite(Number(maxRuns)) ? Number(maxRuns) : maxRuns,
  };
}

function BackfillDialog({ job, close }) {
  const ref = useRef(null);
  const [fields, setFields] = useState({ from: "", to: "", max_runs: "" });
  const [dryRun, setDryRun] = useState(null);
  const [progress, setProgress] = useState(null);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const base = `/api/scheduler/jobs/${job._id}`;
  useEffect(() => {
    ref.current.showModal();
  }, []);

  const act = async (fn) => {
    setBusy(true);
    setError(null);
    try {
      await fn();
    } catch (e) {
      setError(e.detail || String(e));
    } finally {
      setBusy(false);
    }
  };
  const preview = () => act(async () => setDryRun(await api.post(`${base}/backfill`, backfillBody(fields, true), { quiet: true })));
  const start = () => act(async () => {
    const { backfill_id: id } = await api.post(`${base}/backfill`, backfillBody(fields, false), { quiet: true });
    toast(`Backfill of “${job.name}” started`, "success");
    setProgress((await api.get(`${base}/backfills/${id}`, null, { quiet: true })).data);
  });
  const cancel = () => act(async () => setProgress((await api.del(`${base}/backfills/${progress.backfill_id}`, null, { quiet: true })).data));
  const running = progress && progress.status === "running";
  useInterval(async () => {
    try {
      setProgress((await api.get(`${base}/backfills/${progress.backfill_id}`, null, { quiet: true })).data);
    } catch (e) {
      setError(e.detail || String(e));
    }
  }, running ? POLL_MS : null);

  const set = (key) => (e) => {
    setFields((f) => ({ ...f, [key]: e.target.value }));
    setDryRun(null);
  };
  const zone = browserZone();
  return html`<dialog ref=${ref} class="dialog backfill" aria-labelledby="backfill-title" onCancel=${(e) => { e.preventDefault(); close(); }}>
    <h2 id="backfill-title">Backfill “${job.name}”</h2>
    <p class="small">Runs the job's own occurrences between two times (both included), oldest first, at most
      its runs-at-once limit together. An occurrence that already has a run is never run again.</p>
    ${error ? html`<p class="form-error" role="alert" data-testid="backfill-error">${error}</p>` : null}
    ${progress ? html`<${Progress} progress=${progress} />` : html`
      <${Field} id="backfill-from" label=${`From (${zone} time)`}>
        ${(a) => html`<input ...${a} type="datetime-local" step="1" value=${fields.from} onInput=${set("from")} />`}<//>
      <${Field} id="backfill-to" label=${`To (${zone} time)`}>
        ${(a) => html`<input ...${a} type="datetime-local" step="1" value=${fields.to} onInput=${set("to")} />`}<//>
      <${Field} id="backfill-max_runs" label="At most this many runs" hint="1–10,000, the oldest. Empty: every occurrence (at most 10,000).">
        ${(a) => html`<input ...${a} type="number" min="1" max="10000" step="1" value=${fields.max_runs} onInput=${set("max_runs")} />`}<//>
      ${dryRun ? html`<${DryRun} result=${dryRun} timezone=${job.timezone} />` : null}`}
    <div class="dialog-actions">
      ${progress ? (running ? html`<button type="button" class="danger" disabled=${busy} onClick=${cancel}>Cancel backfill</button>` : null)
        : html`<button type="button" disabled=${busy} onClick=${preview}>Preview</button>
          <button type="button" class="primary" disabled=${busy} onClick=${start}>Start</button>`}
      <button type="button" onClick=${close}>Close</button>
    </div>
  </dialog>`;
}

function DryRun({ result, timezone }) {
  const shown = result.occurrences.slice(0, LISTED);
  const again = result.occurrences.filter((o) => o.has_record).length;
  return html`<div class="backfill-preview" data-testid="backfill-preview" aria-live="polite">
    <p><strong>${result.count} occurrence${result.count === 1 ? "" : "s"}</strong>${again ? html`, ${again} of them already ${again === 1 ? "has a run" : "have a run"} (not run again)` : null}.</p>
    ${shown.length ? html`<ol class="next-runs small">${shown.map((o) => html`<li key=${o.scheduled_at} class=${o.has_record ? "not-run" : ""}>
      ${formatInZone(o.scheduled_at, timezone)}${o.has_record ? html` <span class="muted">already has a run</span>` : null}</li>`)}</ol>` : null}
    ${result.count > shown.length ? html`<p class="muted small">and ${result.count - shown.length} more</p>` : null}
  </div>`;
}

function Progress({ progress }) {
  const { status, done, total } = progress;
  return html`<div class="backfill-progress" data-testid="backfill-progress" aria-live="polite">
    <p>Backfill <strong data-testid="backfill-status">${status}</strong>: <span data-testid="backfill-done">${done} of ${total}</span> done.</p>
    <progress max=${Math.max(total, 1)} value=${done}></progress>
  </div>`;
}
