// Pick jobs by name without loading every job: the jobs list is read a page at a time, only
// when a picker is used, and searched as far as it has been read ("Search more jobs" reads on).
import { html, useCallback, useEffect, useRef, useState } from "../vendor/htm/standalone.module.js";
import { api } from "./api.js";

const PAGE = 200;
const SHOWN = 8; // matches offered at once: type more to narrow

/** The jobs read so far, shared by a form's pickers, and the names of the jobs it names. */
export function useJobDirectory(knownIds) {
  const [state, setState] = useState({ jobs: [], total: null, loading: false, error: null });
  const [names, setNames] = useState(() => new Map());
  const busy = useRef(false);
  const loadMore = useCallback(async () => {
    if (busy.current) return;
    busy.current = true;
    setState((s) => ({ ...s, loading: true, error: null }));
    try {
      const offset = state.jobs.length;
      const page = await api.get("/api/scheduler/jobs", { limit: PAGE, offset }, { quiet: true });
      setState((s) => ({ jobs: [...s.jobs, ...page.data.map(({ _id, name }) => ({ _id, name }))], total: page.total, loading: false, error: null }));
      setNames((m) => new Map([...m, ...page.data.map((j) => [j._id, j.name])]));
    } catch (error) {
      setState((s) => ({ ...s, loading: false, error }));
    } finally {
      busy.current = false;
    }
  }, [state.jobs.length]);
  // The jobs already named (an edit): their names, one request each (a deleted one shows its id).
  const wanted = [...new Set(knownIds)].join(",");
  useEffect(() => {
    let current = true;
    for (const id of wanted ? wanted.split(",") : []) {
      api.get(`/api/scheduler/jobs/${encodeURIComponent(id)}`, null, { quiet: true }).then(
        (r) => current && setNames((m) => new Map(m).set(id, r.data.name)),
        () => null,
      );
    }
    return () => {
      current = false;
    };
  }, [wanted]);
  const remember = (job) => setNames((m) => new Map(m).set(job._id, job.name));
  const more = state.total === null || state.jobs.length < state.total;
  return { ...state, more, loadMore, nameOf: (id) => names.get(id), remember };
}

/** Several jobs chosen by name: the chosen ones as removable chips, a search box and the
 * matching jobs as buttons ("Add …"). `exclude`: ids not offered (the job itself). */
export function JobPicker({ id, label, hint, error, value, onChange, directory, exclude = [] }) {
  const [text, setText] = useState("");
  const [open, setOpen] = useState(false);
  const start = () => {
    setOpen(true);
    if (directory.total === null && !directory.loading) directory.loadMore();
  };
  const needle = text.trim().toLowerCase();
  const matches = open
    ? directory.jobs.filter((j) => !value.includes(j._id) && !exclude.includes(j._id) && (!needle || j.name.toLowerCase().includes(needle)))
    : [];
  const add = (job) => {
    directory.remember(job);
    onChange([...value, job._id]);
    setText("");
  };
  const described = [hint ? `${id}-hint` : null, error ? `${id}-error` : null].filter(Boolean).join(" ") || undefined;
  return html`<div class=${`field job-picker ${error ? "has-error" : ""}`}>
    <label for=${id}>${label}</label>
    ${value.length ? html`<ul class="chips" aria-label=${`${label}: chosen`}>${value.map((jobId) => {
      const name = directory.nameOf(jobId) || jobId;
      return html`<li key=${jobId} class="chip" data-job-id=${jobId}><span>${name}</span>
        <button type="button" class="link" aria-label=${`Remove ${name} from ${label.toLowerCase()}`}
          onClick=${() => onChange(value.filter((x) => x !== jobId))}>×</button></li>`;
    })}</ul>` : null}
    <input id=${id} type="search" autocomplete="off" placeholder="Type a job's name" value=${text} aria-describedby=${described}
      aria-invalid=${error ? "true" : undefined} onFocus=${start} onInput=${(e) => { setText(e.target.value); start(); }} />
    ${open ? html`<div class="picker-results" aria-live="polite">
      ${matches.length ? html`<ul class="picker-matches">${matches.slice(0, SHOWN).map((j) => html`<li key=${j._id}>
        <button type="button" class="small" aria-label=${`Add ${j.name} to ${label.toLowerCase()}`} onClick=${() => add(j)}>${j.name}</button></li>`)}</ul>`
        : directory.loading ? html`<p class="muted small">Searching…</p>` : html`<p class="muted small">No job matches${directory.more ? " among those searched" : ""}.</p>`}
      ${matches.length > SHOWN ? html`<p class="muted small">${matches.length - SHOWN} more match: type more of the name.</p>` : null}
      ${directory.more && directory.total !== null ? html`<button type="button" class="small" onClick=${directory.loadMore} disabled=${directory.loading}>
        Search more jobs (${directory.jobs.length} of ${directory.total} searched)</button>` : null}
      ${directory.error ? html`<p class="field-error">${directory.error.detail || String(directory.error)}</p>` : null}
    </div>` : null}
    ${hint ? html`<p class="hint" id=${`${id}-hint`}>${hint}</p>` : null}
    ${error ? html`<p class="field-error" id=${`${id}-error`} role="alert">${error}</p>` : null}
  </div>`;
}
