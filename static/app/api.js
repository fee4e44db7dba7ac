// The one way the dashboard talks to the server: JSON in, JSON out, {"detail"} errors raised
// as ApiError and announced (a toast) unless the caller asks for quiet.

const extraHeaders = {};

/** Where authentication will go: e.g. setHeader("Authorization", "Bearer ..."). */
export function setHeader(name, value) {
  if (value === null || value === undefined) delete extraHeaders[name];
  else extraHeaders[name] = value;
}

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.body = body;
  }
}

const errorListeners = new Set();
export function onApiError(listener) {
  errorListeners.add(listener);
  return () => errorListeners.delete(listener);
}

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

// The session's CSRF token: requests that change state send it (the cookie alone is not enough).
let csrfToken = null;
let signedIn = null; // the last session answer: who may see admin-only controls

/** Whether the admin-only controls apply: an admin is signed in, or the server needs no key. */
export function isAdmin() {
  return !!signedIn && (!signedIn.auth_required || (signedIn.user && signedIn.user.role === "admin"));
}
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** Who is signed in: {auth_required, user, csrf_token}; throws ApiError 401 when nobody is. */
export async function currentSession() {
  const session = await request("GET", "/api/auth/session", { quiet: true });
  csrfToken = session.csrf_token || null;
  signedIn = session;
  return session;
}

export async function signIn(key) {
  const session = await request("POST", "/api/auth/session", { body: { key }, quiet: true });
  csrfToken = session.csrf_token || null;
  signedIn = session;
  return session;
}

export async function signOut() {
  await request("DELETE", "/api/auth/session", { quiet: true });
  csrfToken = null;
  signedIn = null;
}

/** `body` is sent as JSON; `text` as it is, with `contentType` (an iCalendar file). */
export async function request(method, path, { query, body, text: rawText, contentType, quiet = false } = {}) {
  const headers = { Accept: "application/json", ...extraHeaders };
  if (csrfToken && UNSAFE.has(method)) headers["X-CSRF-Token"] = csrfToken;
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  } else if (rawText !== undefined) {
    headers["Content-Type"] = contentType;
    init.body = rawText;
  }
  let response;
  try {
    response = await fetch(withQuery(path, query), init);
  } catch (error) {
    return fail(new ApiError(0, `Cannot reach the server (${error.message})`, null), method, path, quiet);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.status === 401 && path !== "/api/auth/session") {
    window.dispatchEvent(new CustomEvent("texium:signin-required"));
  }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : `${response.status} ${response.statusText}`;
    return fail(new ApiError(response.status, detail, data), method, path, quiet);
  }
  return data;
}

function fail(error, method, path, quiet) {
  if (!quiet) for (const listener of errorListeners) listener(error, method, path);
  throw error;
}

export const api = {
  get: (path, query, options = {}) => request("GET", path, { query, ...options }),
  post: (path, body, options = {}) => request("POST", path, { body, ...options }),
  put: (path, body, options = {}) => request("PUT", path, { body, ...options }),
  patch: (path, options = {}) => request("PATCH", path, options),
  del: (path, query, options = {}) => request("DELETE", path, { query, ...options }),
};

/** Every entry of a list endpoint (pages of 1000), for users, servers and jobs. */
export async function listAll(path, query = {}, options = {}) {
  const items = [];
  for (let offset = 0; ; offset += 1000) {
    const page = await api.get(path, { ...query, limit: 1000, offset }, options);
    items.push(...page.data);
    if (items.length >= page.total || page.data.length === 0) return items;
  }
}
