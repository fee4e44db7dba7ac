// The dashboard's shell: navigation, hash routes (deep links, back and forward), toasts.
import { html, render, useEffect, useState } from "../vendor/htm/standalone.module.js";
import { currentSession, onApiError, signIn, signOut } from "./api.js";
import { Dialogs, Toasts, toast } from "./ui.js";
import { parseHash } from "./util.js";
import { OverviewPage } from "./pages/overview.js";
import { JobsPage } from "./pages/jobs.js";
import { JobFormPage } from "./pages/jobform.js";
import { JobDetailPage } from "./pages/jobdetail.js";
import { ExecutionsPage, ExecutionPage } from "./pages/executions.js";
import { UsersPage, UserFormPage } from "./pages/users.js";
import { ServersPage, ServerFormPage } from "./pages/servers.js";
import { AuditPage } from "./pages/audit.js";
import { ChainsPage } from "./pages/chains.js";
import { CalendarFormPage, CalendarsPage } from "./pages/calendars.js";
import { channelRoute } from "./pages/channels.js";
import { monitorRoute } from "./pages/monitors.js";
import { MaintenanceBanner } from "./maintenance.js";

const NAV = [
  ["Overview", "/", (s) => s.length === 0],
  ["Jobs", "/jobs", (s) => s[0] === "jobs"],
  ["Chains", "/chains", (s) => s[0] === "chains"],
  ["Monitors", "/monitors", (s) => s[0] === "monitors"],
  ["Executions", "/executions", (s) => s[0] === "executions"],
  ["Users", "/users", (s) => s[0] === "users"],
  ["Servers", "/servers", (s) => s[0] === "servers"],
  ["Calendars", "/calendars", (s) => s[0] === "calendars"],
  ["Channels", "/channels", (s) => s[0] === "channels"],
  ["Audit log", "/audit", (s) => s[0] === "audit"],
];

function resolve(route) {
  const [section, id, action] = route.segments;
  switch (section) {
    case undefined:
      return [OverviewPage, "Overview"];
    case "jobs":
      if (id === "new") return [JobFormPage, "New job"];
      if (id && action === "edit") return [JobFormPage, "Edit job"];
      if (id) return [JobDetailPage, "Job"];
      return [JobsPage, "Jobs"];
    case "chains":
      return [ChainsPage, "Chains"];
    case "monitors":
      return monitorRoute(id, action);
    case "executions":
      return id ? [ExecutionPage, "Execution"] : [ExecutionsPage, "Executions"];
    case "users":
      if (id === "new" || action === "edit") return [UserFormPage, id === "new" ? "New user" : "Edit user"];
      return [UsersPage, "Users"];
    case "servers":
      if (id === "new" || action === "edit") return [ServerFormPage, id === "new" ? "New server" : "Edit server"];
      return [ServersPage, "Servers"];
    case "calendars":
      if (id === "new" || action === "edit") return [CalendarFormPage, id === "new" ? "New calendar" : "Edit calendar"];
      return [CalendarsPage, "Calendars"];
    case "channels":
      return channelRoute(id, action);
    case "audit":
      return [AuditPage, "Audit log"];
    default:
      return [NotFoundPage, "Not found"];
  }
}

function NotFoundPage() {
  return html`<section class="page"><h1>Page not found</h1><p>There is no such page. <a href="#/">Go to the overview</a>.</p></section>`;
}

function SignInPage({ onSignedIn }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState("");
  const submit = async (event) => {
    event.preventDefault();
    try {
      onSignedIn(await signIn(key.trim()));
    } catch (failure) {
      setError(failure.detail || String(failure));
    }
  };
  return html`<section class="page signin">
    <h1>Sign in</h1>
    <p>This server requires an API key. An admin creates one with <code>POST /api/users/{id}/api-keys</code>;
      the first admin key is printed when the server first starts and kept in <code>DATA_DIR/admin-api-key</code>.</p>
    <form onSubmit=${submit}>
      <label for="api-key">API key</label>
      <input id="api-key" type="password" autocomplete="off" value=${key} onInput=${(e) => setKey(e.target.value)} required />
      ${error && html`<p class="field-error" role="alert">${error}</p>`}
      <button type="submit">Sign in</button>
    </form>
  </section>`;
}

function App() {
  const [auth, setAuth] = useState({ state: "checking", user: null, required: false });
  useEffect(() => {
    const check = () =>
      currentSession()
        .then((session) => setAuth({ state: "in", user: session.user, required: session.auth_required }))
        .catch(() => setAuth({ state: "out", user: null, required: true }));
    check();
    const out = () => setAuth({ state: "out", user: null, required: true });
    window.addEventListener("texium:signin-required", out);
    return () => window.removeEventListener("texium:signin-required", out);
  }, []);
  if (auth.state === "checking") return html`<p class="loading">Loading…</p>`;
  if (auth.state === "out") {
    return html`<main id="main"><${SignInPage} onSignedIn=${(session) => setAuth({ state: "in", user: session.user, required: true })} /></main>`;
  }
  return html`<${Shell} auth=${auth} onSignOut=${async () => { await signOut(); setAuth({ state: "out", user: null, required: true }); }} />`;
}

function Shell({ auth, onSignOut }) {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const update = () => setRoute(parseHash());
    window.addEventListener("hashchange", update);
    window.addEventListener("popstate", update);
    window.addEventListener("texium:route", update);
    const off = onApiError((error) => toast(error.detail, "error"));
    return () => {
      window.removeEventListener("hashchange", update);
      window.removeEventListener("popstate", update);
      window.removeEventListener("texium:route", update);
      off();
    };
  }, []);
  const [Page, title] = resolve(route);
  useEffect(() => {
    document.title = `${title} · Texium`;
  }, [title]);
  // A new page (not a new filter) moves focus to its heading, for keyboard and screen readers.
  const pageKey = route.segments.join("/");
  useEffect(() => {
    const heading = document.querySelector("main h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus({ preventScroll: true });
    }
    window.scrollTo(0, 0);
  }, [pageKey]);
  return html`
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); document.getElementById("main").focus(); }}>Skip to content</a>
    <header class="topbar">
      <a class="brand" href="#/">Texium</a>
      <nav aria-label="Main">
        <ul>
          ${NAV.map(
            ([label, path, active]) => html`<li key=${path}><a href=${"#" + path} aria-current=${active(route.segments) ? "page" : undefined}>${label}</a></li>`,
          )}
        </ul>
      </nav>
      <a class="docs-link" href="/docs">API docs</a>
      ${auth.required && auth.user && html`<span class="signed-in">${auth.user.name}</span>
        <button type="button" class="link" onClick=${onSignOut}>Sign out</button>`}
    </header>
    <${MaintenanceBanner} />
    <main id="main" tabindex="-1"><${Page} key=${pageKey} route=${route} /></main>
    <${Toasts} />
    <${Dialogs} />
  `;
}

const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
