// Users: list, create, edit, delete (a user who owns servers or jobs: the 409, then the cascade).
import { html, useState } from "../../vendor/htm/standalone.module.js";
import { ApiError, api, listAll } from "../api.js";
import { Empty, Field, Loaded, PageHeader, Time, confirmDialog, toast } from "../ui.js";
import { fieldOf, navigate, useResource } from "../util.js";

export function UsersPage() {
  const [state, reload] = useResource(async () => {
    const [users, jobs, servers] = await Promise.all([listAll("/api/users/"), listAll("/api/scheduler/jobs"), listAll("/api/servers/")]);
    const count = (items) => items.reduce((m, i) => m.set(i.user_id, (m.get(i.user_id) || 0) + 1), new Map());
    return { users, jobs: count(jobs), servers: count(servers) };
  }, []);
  return html`<section class="page">
    <${PageHeader} title="Users"><button type="button" class="primary" onClick=${() => navigate("/users/new")}>New user</button><//>
    <${Loaded} state=${state} reload=${reload}>${(data) => data.users.length === 0
      ? html`<${Empty}><p>No users yet. Jobs and servers belong to users: create one first.</p><//>`
      : html`<div class="table-wrap"><table>
          <thead><tr><th scope="col">Name</th><th scope="col">Email</th><th scope="col">Role</th><th scope="col">Jobs</th><th scope="col">Servers</th><th scope="col">Created</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
          <tbody>${data.users.map((u) => html`<tr key=${u._id} data-user-id=${u._id}>
            <td class="strong">${u.name}</td><td>${u.email}</td><td>${u.role}</td>
            <td><a href=${`#/jobs?user=${u._id}`}>${data.jobs.get(u._id) || 0}</a></td>
            <td>${data.servers.get(u._id) || 0}</td>
            <td><${Time} value=${u.created_at} /></td>
            <td><div class="row-actions">
              <button type="button" onClick=${() => navigate(`/users/${u._id}/edit`)}>Edit</button>
              <button type="button" class="danger" onClick=${() => deleteUser(u).then(() => reload())}>Delete</button>
            </div></td>
          </tr>`)}</tbody>
        </table></div>`}<//>
  </section>`;
}

async function deleteUser(user) {
  const choice = await confirmDialog({
    title: "Delete this user?",
    message: `“${user.name}” (${user.email}) will be removed.`,
    actions: [{ label: "Delete", value: "delete", danger: true }],
  });
  if (choice !== "delete") return;
  try {
    await api.del(`/api/users/${user._id}`, null, { quiet: true });
    toast(`User “${user.name}” deleted`, "success");
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 409) {
      toast(error.detail || String(error), "error");
      return;
    }
    const cascade = await confirmDialog({
      title: "This user still owns things",
      message: `${error.detail}. Delete the user together with their servers and jobs? Executions are kept.`,
      actions: [{ label: "Delete user, servers and jobs", value: "cascade", danger: true }],
    });
    if (cascade !== "cascade") return;
    try {
      await api.del(`/api/users/${user._id}`, { cascade: "true" });
      toast(`User “${user.name}” and everything they owned deleted`, "success");
    } catch {
      // shown by the API client
    }
  }
}

export function UserFormPage({ route }) {
  const id = route.segments[1];
  const editing = id !== "new";
  const [state, reload] = useResource(async () => (editing ? (await api.get(`/api/users/${id}`)).data : { name: "", email: "", role: "user" }), [id]);
  return html`<section class="page">
    <${PageHeader} title=${editing ? "Edit user" : "New user"} />
    <${Loaded} state=${state} reload=${reload}>${(user) => html`<${UserForm} key=${id} user=${user} editing=${editing} />`}<//>
  </section>`;
}

function UserForm({ user, editing }) {
  const [form, setForm] = useState({ name: user.name, email: user.email, role: user.role });
  const [errors, setErrors] = useState({});
  const [formError, setFormError] = useState(null);
  const set = (key) => (e) => {
    setForm((f) => ({ ...f, [key]: e.target.value }));
    setErrors((errs) => ({ ...errs, [key]: undefined }));
  };
  const submit = async (e) => {
    e.preventDefault();
    setFormError(null);
    try {
      if (editing) await api.put(`/api/users/${user._id}`, form, { quiet: true });
      else await api.post("/api/users/", form, { quiet: true });
      toast(`User “${form.name}” saved`, "success");
      navigate("/users");
    } catch (error) {
      const field = fieldOf(error.detail) || (error.status === 409 ? "email" : null);
      if (field && field in form) setErrors({ [field]: error.detail });
      else setFormError(error.detail);
      toast(error.detail, "error");
    }
  };
  return html`<form class="form narrow" onSubmit=${submit} novalidate>
    ${formError ? html`<p class="form-error" role="alert">${formError}</p>` : null}
    <${Field} id="user-name" label="Name" error=${errors.name}>${(a) => html`<input ...${a} type="text" value=${form.name} onInput=${set("name")} autocomplete="name" />`}<//>
    <${Field} id="user-email" label="Email" error=${errors.email}>${(a) => html`<input ...${a} type="email" value=${form.email} onInput=${set("email")} autocomplete="email" />`}<//>
    <${Field} id="user-role" label="Role" error=${errors.role}>${(a) => html`<select ...${a} value=${form.role} onChange=${set("role")}><option value="user">user</option><option value="admin">admin</option></select>`}<//>
    <div class="form-actions">
      <button type="submit" class="primary">Save</button>
      <button type="button" onClick=${() => navigate("/users")}>Cancel</button>
    </div>
  </form>`;
}
