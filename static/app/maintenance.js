// The maintenance switch (pause-all): one shared poll of health for every page, the banner
// shown while it is on, and the admin's Pause all / Resume all.
import { html, useEffect, useState } from "../vendor/htm/standalone.module.js";
import { api, isAdmin } from "./api.js";
import { askPause } from "./pages/jobactions.js";
import { Time, toast } from "./ui.js";

const POLL_MS = 10_000;
let current = { on: false };
const listeners = new Set();
let timer = null;

/** The switch from a health answer (its `maintenance`, given to every caller). */
function fromHealth(body) {
  if (!body || body.maintenance === undefined) return current;
  const m = body.maintenance;
  return m ? { on: true, note: m.pause_note, since: m.paused_at, until: m.paused_until, by: m.paused_by } : { on: false };
}

function publish(next) {
  current = next;
  listeners.forEach((l) => l(current));
}

/** Read the switch now (after a change, and every POLL_MS while a page shows it). */
export async function refreshMaintenance() {
  let body;
  try {
    body = await api.get("/api/scheduler/health", null, { quiet: true });
  } catch (error) {
    body = error.body; // 503: unhealthy, and still the same answer
  }
  publish(fromHealth(body));
}

export function useMaintenance() {
  const [state, setState] = useState(current);
  useEffect(() => {
    listeners.add(setState);
    if (listeners.size === 1) {
      refreshMaintenance();
      timer = setInterval(refreshMaintenance, POLL_MS);
    }
    return () => {
      listeners.delete(setState);
      if (!listeners.size) clearInterval(timer);
    };
  }, []);
  return state;
}

export async function pauseAll() {
  const body = await askPause({
    title: "Pause every job?",
    message: "Maintenance: nothing fires on any node until it is resumed; runs already going finish.",
    submit: "Pause all",
  });
  if (!body) return;
  try {
    await api.post("/api/scheduler/pause-all", body);
    toast("All jobs paused", "success");
  } catch {
    // the API client showed the error
  }
  await refreshMaintenance();
}

export async function resumeAll() {
  try {
    await api.post("/api/scheduler/resume-all", {});
    toast("All jobs resumed", "success");
  } catch {
    // the API client showed the error
  }
  await refreshMaintenance();
}

/** The admin's switch: Pause all when it is off, Resume all when it is on. */
export function MaintenanceButton() {
  const state = useMaintenance();
  if (!isAdmin()) return null;
  return state.on
    ? html`<button type="button" onClick=${resumeAll}>Resume all</button>`
    : html`<button type="button" onClick=${pauseAll}>Pause all…</button>`;
}

/** Shown on every page while maintenance is on. */
export function MaintenanceBanner() {
  const state = useMaintenance();
  if (!state.on) return null;
  const details = html`every job paused since <${Time} value=${state.since} />${state.by ? ` by ${state.by}` : ""}${
      state.until ? html`, until <${Time} value=${state.until} />` : ""}${state.note ? html`: <q>${state.note}</q>` : ""}`;
  return html`<div class="maintenance-banner" role="status" data-testid="maintenance-banner">
    <strong>Maintenance:</strong> <span>${details}. Nothing fires meanwhile.</span>
    ${isAdmin() ? html`<button type="button" class="small" onClick=${resumeAll}>Resume all</button>` : null}
  </div>`;
}
