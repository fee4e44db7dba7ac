// Run now with a form: the job's declared parameters (defaults filled in, or a former run's
// values for "Run again") and, for a job that starts others, "this job only". A 400 stays in the
// dialog; a started run is announced with a link to it.
import { html, useEffect, useRef, useState } from "../vendor/htm/standalone.module.js";
import { api } from "./api.js";
import { ParameterInputs, initialValues, valuesOf } from "./parameters.js";
import { toast } from "./ui.js";

/** The jobs a run of `job` starts when it ends (its on_* lists). */
export function chainTargets(job) {
  return [...(job.on_success || []), ...(job.on_failure || []), ...(job.on_finish || [])];
}

/** Whether Run now asks first: the job takes parameters or starts other jobs. */
export function runNeedsForm(job) {
  return (job.parameters || []).length > 0 || chainTargets(job).length > 0;
}

/** Start a run without asking (no parameters, no chain); the execution's id. */
export async function runNow(job) {
  const result = await api.post(`/api/scheduler/jobs/${job._id}/run`, {});
  announce(job, result.execution_id);
  return result.execution_id;
}

function announce(job, executionId) {
  toast(`Run of “${job.name}” started`, "success", { href: `#/executions/${executionId}`, label: "View execution" });
}

/** `given`: a former run's `parameters` (Run again); `close(executionId | null)`. */
export function RunDialog({ job, given = null, close }) {
  const ref = useRef(null);
  const declaration = job.parameters || [];
  const [values, setValues] = useState(() => initialValues(declaration, given));
  const [thisOnly, setThisOnly] = useState(false);
  const [error, setError] = useState(null);
  const [sending, setSending] = useState(false);
  const secrets = declaration.filter((p) => p.type === "secret");
  const starts = chainTargets(job).length > 0;
  useEffect(() => {
    ref.current.showModal();
    const first = ref.current.querySelector("input, select");
    if (first) first.focus();
  }, []);
  const submit = async (e) => {
    e.preventDefault();
    setSending(true);
    setError(null);
    const body = { parameters: valuesOf(declaration, values) };
    if (starts && thisOnly) body.chain = false;
    try {
      const result = await api.post(`/api/scheduler/jobs/${job._id}/run`, body, { quiet: true });
      announce(job, result.execution_id);
      close(result.execution_id);
    } catch (failure) {
      setError(failure.detail || String(failure));
      setSending(false);
    }
  };
  return html`<dialog ref=${ref} class="dialog run-dialog" aria-labelledby="run-dialog-title"
      onCancel=${(e) => { e.preventDefault(); close(null); }}>
    <form onSubmit=${submit} novalidate>
      <h2 id="run-dialog-title">${given ? "Run again" : "Run"} “${job.name}”</h2>
      ${given && secrets.length ? html`<p class="warn" data-testid="secrets-again">Secrets are not shown again: type ${
        secrets.map((p) => p.name).join(", ")} again.</p>` : null}
      ${declaration.length ? html`<fieldset><legend>Parameters</legend>
        <${ParameterInputs} declaration=${declaration} values=${values} onChange=${setValues} /></fieldset>` : null}
      ${starts ? html`<div class="field checkbox">
        <input id="run-this-only" type="checkbox" checked=${thisOnly} onChange=${(e) => setThisOnly(e.target.checked)} aria-describedby="run-this-only-hint" />
        <label for="run-this-only">This job only (do not start chained jobs)</label>
        <p class="hint" id="run-this-only-hint">Otherwise its end starts its ${chainTargets(job).length} chained job(s), as a scheduled run's does.</p>
      </div>` : null}
      ${error ? html`<p class="form-error" role="alert" data-testid="run-error">${error}</p>` : null}
      <div class="dialog-actions">
        <button type="submit" class="primary" disabled=${sending}>Start run</button>
        <button type="button" onClick=${() => close(null)}>Cancel</button>
      </div>
    </form>
  </dialog>`;
}
