// Formatting, the hash router and small hooks shared by every page.
import { useCallback, useEffect, useRef, useState } from "../vendor/htm/standalone.module.js";

export const STATUSES = [
  "scheduled", "running", "completed", "failed", "timeout", "cancelled", "retried", "skipped", "missed", "abandoned",
];
export const ACTIVE = new Set(["scheduled", "running"]);
/** Runs that ended without completing and were not followed by another attempt. */
export const ENDED_BADLY = new Set(["failed", "timeout", "cancelled", "abandoned"]);

// ---- time ------------------------------------------------------------------------------
const localFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const zoneFormats = new Map();

export function parseTime(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function formatLocal(value) {
  const date = parseTime(value);
  return date ? localFormat.format(date) : "—";
}

export function formatInZone(value, timeZone) {
  const date = parseTime(value);
  if (!date) return "—";
  let format = zoneFormats.get(timeZone);
  if (!format) {
    try {
      format = new Intl.DateTimeFormat(undefined, {
        weekday: "short", year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone, timeZoneName: "short",
      });
    } catch {
      return formatLocal(value);
    }
    zoneFormats.set(timeZone, format);
  }
  return format.format(date);
}

export function utcText(value) {
  const date = parseTime(value);
  return date ? date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC") : "";
}

export function relative(value, now = Date.now()) {
  const date = parseTime(value);
  if (!date) return "";
  const seconds = Math.round((date.getTime() - now) / 1000);
  const abs = Math.abs(seconds);
  const [n, unit] =
    abs < 60 ? [seconds, "second"] : abs < 3600 ? [Math.round(seconds / 60), "minute"]
      : abs < 86400 ? [Math.round(seconds / 3600), "hour"] : [Math.round(seconds / 86400), "day"];
  return new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }).format(n, unit);
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A number of seconds as "90 s (1 min 30 s)"; "—" for none. */
export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined || seconds === "") return "—";
  const n = Number(seconds);
  if (!Number.isFinite(n)) return String(seconds);
  return n < 60 ? `${n} s` : `${n} s (${formatDuration(Math.round(n * 1000))})`;
}

/** From a `<input type="datetime-local">` value (browser zone) to ISO UTC, or "" */
export function localInputToIso(text) {
  if (!text) return "";
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

export function isoToLocalInput(iso) {
  const date = parseTime(iso);
  if (!date) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

export function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

export function timeZones() {
  let zones = [];
  try {
    zones = Intl.supportedValuesOf("timeZone");
  } catch {
    zones = [];
  }
  const all = new Set(["UTC", ...zones, browserZone()]);
  return [...all].sort((a, b) => (a === "UTC" ? -1 : b === "UTC" ? 1 : a.localeCompare(b)));
}

export function shortClass(classString) {
  return (classString || "").split(".").pop();
}

export function firstLine(text) {
  const lines = (text || "").split("\n").map((l) => l.trim()).filter(Boolean);
  if (!lines.length) return "";
  return lines[0].startsWith("Traceback") ? lines[lines.length - 1] : lines[0];
}

// ---- router -----------------------------------------------------------------------------
export function parseHash(hash = location.hash) {
  const text = hash.replace(/^#/, "") || "/";
  const [pathPart, queryPart = ""] = text.split("?");
  const segments = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  return { path: "/" + segments.join("/"), segments, query: Object.fromEntries(new URLSearchParams(queryPart)) };
}

export function href(path, query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return `#${path}${text ? "?" + text : ""}`;
}

export function navigate(path, query = {}, { replace = false } = {}) {
  const target = href(path, query);
  if (replace) history.replaceState(history.state, "", target);
  else history.pushState(null, "", target);
  window.dispatchEvent(new Event("texium:route"));
}

/** The current route's query, and a setter that replaces it (filters do not stack history). */
export function useQuery(route) {
  const set = useCallback(
    (changes) => {
      const next = { ...route.query, ...changes };
      if (!("offset" in changes)) delete next.offset; // a new filter starts at page one
      navigate(route.path, next, { replace: true });
    },
    [route.path, JSON.stringify(route.query)],
  );
  return [route.query, set];
}

// ---- hooks -------------------------------------------------------------------------------
/** Load data with `loader()`; reload when `deps` change; `reload(true)` refreshes quietly. */
export function useResource(loader, deps) {
  const [state, setState] = useState({ loading: true, data: null, error: null });
  const generation = useRef(0);
  const reload = useCallback(async (background = false) => {
    const mine = ++generation.current;
    if (!background) setState((s) => ({ ...s, loading: true, error: null }));
    try {
      const data = await loader(background);
      if (mine === generation.current) setState({ loading: false, data, error: null });
    } catch (error) {
      if (mine === generation.current) {
        setState((s) => (background && s.data ? s : { loading: false, data: s.data, error }));
      }
    }
  }, deps);
  useEffect(() => {
    reload(false);
  }, [reload]);
  return [state, reload];
}

/** Call `callback` every `ms` milliseconds (null pauses); the latest callback is always used. */
export function useInterval(callback, ms) {
  const saved = useRef(callback);
  saved.current = callback;
  useEffect(() => {
    if (ms === null || ms === undefined) return undefined;
    const id = setInterval(() => saved.current(), ms);
    return () => clearInterval(id);
  }, [ms]);
}

export function useDebounced(value, ms) {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const id = setTimeout(() => setDebounced(value), ms);
    return () => clearTimeout(id);
  }, [JSON.stringify(value), ms]);
  return debounced;
}

/** The field a 400's detail names ("Invalid field port: ...", "Missing required field: name"). */
export function fieldOf(detail) {
  const match =
    /^(?:Invalid field|Missing required field:|Invalid cron field) ([a-z_]+)/.exec(detail || "") ||
    /^Unknown fields?: ([a-z_]+)/.exec(detail || "");
  if (match) return match[1];
  if (/^Invalid timezone/.test(detail || "")) return "timezone";
  if (/^Invalid cron schedule/.test(detail || "")) return "day_of_month";
  return null;
}
