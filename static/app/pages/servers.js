// Servers: list, create, edit, delete, and "Check now" (a ServerHealthCheckJob run through the API).
import { html, useState } from "../../vendor/htm/standalone.module.js";
import { api, listAll } from "../api.js";
import { Badge, Empty, Field, Loaded, PageHeader, Time, confirmDialog, toast } from "../ui.js";
import { fieldOf, navigate, useResource } from "../util.js";

const CHECK_CLASS = "jobs.server.ServerHealthCheckJob";

export function ServersPage() {
  const [checking, setChecking] = useState({});
  const [state, reload] = useResource(async (background) => {
    const [servers, users] = await Promise.all([listAll("/api/servers/", {}, { quiet: background }), listAll("/api/users/", {}, { quiet: background })]);
    return { servers, users: new Map(users.map((u) => [u._id, u])) };
  }, []);

  const checkNow = async (server) => {
    setChecking((c) => ({ ...c, [server._id]: true }));
    try {
      const executionId = await runHealthCheck(server);
      const execution = await waitFor(executionId);
      if (execution.status === "completed") toast(`Checked “${server.name}”: ${execution.output.split("\n")[0] || "done"}`, "success");
      else toast(`Check of “${server.name}” ${execution.status}: ${(execution.error || "").split("\n")[0]}`, "error", { href: `#/executions/${executionId}`, label: "Details" });
    } catch {
      // shown by the API client
    } finally {
      setChecking((c) => ({ ...c, [server._id]: false }));
      reload(true);
    }
  };

  return html`<section class="page">
    <${PageHeader} title="Servers"><button type="button" class="primary" onClick=${() => navigate("/servers/new")}>New server</button><//>
    <${Loaded} state=${state} reload=${reload}>${(data) => data.servers.length === 0
      ? html`<${Empty}><p>No servers yet.</p>${data.users.size ? null : html`<p>A server belongs to a user: <a href="#/users/new">create a user</a> first.</p>`}<//>`
      : html`<div class="table-wrap"><table>
          <thead><tr><th scope="col">Name</th><th scope="col">Owner</th><th scope="col">Address</th><th scope="col">Status</th><th scope="col">Last check</th><th scope="col">Password</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
          <tbody>${data.servers.map((s) => html`<tr key=${s._id} data-server-id=${s._id}>
            <td class="strong">${s.name}${s.connection_name ? html`<div class="muted small">${s.connection_name}</div>` : null}</td>
            <td>${data.users.get(s.user_id)?.name || s.user_id}</td>
            <td>${s.hostname}${s.port ? `:${s.port}` : ""}${s.instance_url ? html`<div class="muted small">${s.instance_url}</div>` : null}</td>
            <td><${Badge} status=${s.status} /></td>
            <td>${s.last_checked_at ? html`<${Time} value=${s.last_checked_at} />${s.last_check ? html`<div class="muted small">${checkText(s.last_check)}</div>` : null}` : html`<span class="muted">never</span>`}</td>
            <td>${s.has_password ? "set" : "not set"}</td>
            <td><div class="row-actions">
              <button type="button" disabled=${!!checking[s._id]} onClick=${() => checkNow(s)}>${checking[s._id] ? "Checking…" : "Check now"}</button>
              <button type="button" onClick=${() => navigate(`/servers/${s._id}/edit`)}>Edit</button>
              <button type="button" class="danger" onClick=${() => deleteServer(s).then(() => reload())}>Delete</button>
            </div></td>
          </tr>`)}</tbody>
        </table></div>`}<//>
  </section>`;
}

function checkText(check) {
  const parts = [check.reachable ? "reachable" : "unreachable"];
  if (check.latency_ms !== null && check.latency_ms !== undefined) parts.push(`${check.latency_ms} ms`);
  if (check.http_status) parts.push(`HTTP ${check.http_status}`);
  if (check.error) parts.push(check.error);
  return parts.join(" · ");
}

/** Find (or create, disabled so it never fires on its own) this server's health-check job and run it. */
async function runHealthCheck(server) {
  const jobs = await listAll("/api/scheduler/jobs");
  let job = jobs.find((j) => j.job_class_string === CHECK_CLASS && j.pub_args && j.pub_args[0] === server._id);
  if (!job) {
    const created = await api.post("/api/scheduler/jobs", {
      user_id: server.user_id, job_class_string: CHECK_CLASS, name: `Health check: ${server.name}`.slice(0, 200),
      description: "Created by the dashboard's Check now; disabled, so it runs only when asked.",
      pub_args: [server._id], pub_kwargs: {}, is_enabled: false,
    });
    job = { _id: created.job_id };
  }
  return (await api.post(`/api/scheduler/jobs/${job._id}/run`, {})).execution_id;
}

async function waitFor(executionId) {
  for (let i = 0; i < 120; i++) {
    const execution = (await api.get(`/api/scheduler/executions/${executionId}`)).data;
    if (!["scheduled", "running"].includes(execution.status)) return execution;
    await new Promise((r) => setTimeout(r, 250));
  }
  return { status: "running", error: "still running after 30 s" };
}

async function deleteServer(server) {
  const choice = await confirmDialog({
    title: "Delete this server?",
    message: `“${server.name}” (${server.hostname}) will be removed.`,
    actions: [{ label: "Delete", value: "delete", danger: true }],
  });
  if (choice !== "delete") return;
  try {
    await api.del(`/api/servers/${server._id}`);
    toast(`Server “${server.name}” deleted`, "success");
  } catch {
    // shown by the API client
  }
}

export function ServerFormPage({ route }) {
  const id = route.segments[1];
  const editing = id !== "new";
  const [state, reload] = useResource(async () => {
    const [users, server] = await Promise.all([listAll("/api/users/"), editing ? api.get(`/api/servers/${id}`) : null]);
    return { users, server: server ? server.data : null };
  }, [id]);
  return html`<section class="page">
    <${PageHeader} title=${editing ? "Edit server" : "New server"} />
    <${Loaded} state=${state} reload=${reload}>${(data) => html`<${ServerForm} key=${id} data=${data} editing=${editing} />`}<//>
  </section>`;
}

const TEXT_FIELDS = [
  ["name", "Name"], ["hostname", "Hostname"], ["port", "Port"], ["connection_name", "Connection name"],
  ["instance_url", "Instance URL"], ["username", "Username"],
];

function ServerForm({ data, editing }) {
  const server = data.server;
  const [form, setForm] = useState(() => ({
    user_id: server ? server.user_id : data.users[0]?._id || "",
    name: server?.name || "", hostname: server?.hostname || "", port: server?.port ?? "",
    connection_name: server?.connection_name || "", instance_url: server?.instance_url || "",
    username: server?.username || "", status: server?.status || "unknown", password: "", clear_password: false,
  }));
  const [errors, setErrors] = useState({});
  const [formError, setFormError] = useState(null);
  const set = (key) => (e) => {
    const value = e.target.type === "checkbox" ? e.target.checked : e.target.value;
    setForm((f) => ({ ...f, [key]: value }));
    setErrors((errs) => ({ ...errs, [key]: undefined }));
  };
  if (!data.users.length) {
    return html`<div class="state empty"><p>A server belongs to a user, and there is none yet.</p>
      <p><button type="button" class="primary" onClick=${() => navigate("/users/new")}>New user</button></p></div>`;
  }
  const submit = async (e) => {
    e.preventDefault();
    setFormError(null);
    const port = String(form.port).trim();
    if (port && !/^\d+$/.test(port)) {
      setErrors({ port: "Port must be a whole number from 1 to 65535" });
      return;
    }
    const body = {
      user_id: form.user_id, name: form.name, hostname: form.hostname, port: port ? Number(port) : null,
      connection_name: form.connection_name, instance_url: form.instance_url, username: form.username, status: form.status,
    };
    if (form.password) body.password = form.password;
    else if (form.clear_password) body.password = null;
    try {
      if (editing) await api.put(`/api/servers/${server._id}`, body, { quiet: true });
      else await api.post("/api/servers/create", body, { quiet: true });
      toast(`Server “${form.name}” saved`, "success");
      navigate("/servers");
    } catch (error) {
      const field = fieldOf(error.detail);
      if (field && field in form) setErrors({ [field]: error.detail });
      else setFormError(error.detail);
      toast(error.detail, "error");
    }
  };
  return html`<form class="form narrow" onSubmit=${submit} novalidate>
    ${formError ? html`<p class="form-error" role="alert">${formError}</p>` : null}
    ${TEXT_FIELDS.slice(0, 1).map(([key, label]) => html`<${Field} key=${key} id=${`server-${key}`} label=${label} error=${errors[key]}>${(a) => html`<input ...${a} type="text" value=${form[key]} onInput=${set(key)} autocomplete="off" />`}<//>`)}
    <${Field} id="server-user_id" label="Owner" error=${errors.user_id}>${(a) => html`<select ...${a} value=${form.user_id} onChange=${set("user_id")}>
      ${data.users.map((u) => html`<option key=${u._id} value=${u._id}>${u.name} (${u.email})</option>`)}</select>`}<//>
    ${TEXT_FIELDS.slice(1).map(([key, label]) => html`<${Field} key=${key} id=${`server-${key}`} label=${label} error=${errors[key]}
        hint=${key === "instance_url" ? "An http(s) URL, or empty" : key === "port" ? "1-65535, or empty" : undefined}>
      ${(a) => html`<input ...${a} type=${key === "port" ? "text" : key === "instance_url" ? "url" : "text"} inputmode=${key === "port" ? "numeric" : undefined} value=${form[key]} onInput=${set(key)} autocomplete="off" />`}<//>`)}
    <${Field} id="server-password" label="Password" error=${errors.password}
        hint=${server && server.has_password ? "A password is set. Leave empty to keep it." : "Not set. It is encrypted at rest and never shown again."}>
      ${(a) => html`<input ...${a} type="password" value=${form.password} onInput=${set("password")} autocomplete="new-password" placeholder=${server && server.has_password ? "set" : "not set"} />`}<//>
    ${server && server.has_password ? html`<div class="field checkbox"><input id="server-clear_password" type="checkbox" checked=${form.clear_password} onChange=${set("clear_password")} /><label for="server-clear_password">Remove the stored password</label></div>` : null}
    <${Field} id="server-status" label="Status" error=${errors.status}>${(a) => html`<select ...${a} value=${form.status} onChange=${set("status")}>
      <option value="unknown">unknown</option><option value="running">running</option><option value="stopped">stopped</option></select>`}<//>
    <div class="form-actions">
      <button type="submit" class="primary">Save</button>
      <button type="button" onClick=${() => navigate("/servers")}>Cancel</button>
    </div>
  </form>`;
}
