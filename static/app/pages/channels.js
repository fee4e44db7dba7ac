// Alert channels: the list (destinations as the API masks them), create and edit with the fields
// each kind needs (secrets write-only), Send test with its delivery, the channel's deliveries,
// and delete (a 409 names the jobs that still use it).
import { html, useState } from "../../vendor/htm/standalone.module.js";
import { api, listAll } from "../api.js";
import { Empty, Field, Loaded, PageHeader, Pager, Time, confirmDialog, toast } from "../ui.js";
import { fieldOf, navigate, useResource } from "../util.js";

const MASK = "***";
const DELIVERIES_PER_PAGE = 20;

// What each kind needs, in the order the form asks (the API's FIELDS: texium/core/records/channels.py).
// `type`: text, list (commas or new lines), priority, url (`fallback`: the vendor's public one when
// empty), secret-url (Slack, Teams, Discord: the URL is the secret), secret-text (apprise: the
// whole URL is the secret, not necessarily http), secret (write-only).
const KINDS = {
  email: { label: "E-mail", fields: [
    { key: "recipients", type: "list", label: "Recipients", hint: "Up to 20 addresses, separated by commas or new lines. Empty on a new channel: the owner's address." }] },
  webhook: { label: "Webhook", fields: [
    { key: "url", type: "url", label: "Webhook URL", required: true, hint: "Gets a JSON POST for each alert." },
    { key: "secret", type: "secret", label: "Signing secret", hint: "Signs each POST (X-Texium-Signature). Empty: the server's ALERT_WEBHOOK_SECRET." }] },
  slack: { label: "Slack", fields: [{ key: "url", type: "secret-url", label: "Incoming webhook URL", required: true }] },
  teams: { label: "Microsoft Teams", fields: [{ key: "url", type: "secret-url", label: "Workflow webhook URL", required: true }] },
  discord: { label: "Discord", fields: [{ key: "url", type: "secret-url", label: "Webhook URL", required: true }] },
  pagerduty: { label: "PagerDuty", fields: [
    { key: "secret", type: "secret", label: "Routing key", required: true, hint: "The integration key of an Events API v2 service." },
    { key: "url", type: "url", label: "Events API URL", fallback: "https://events.pagerduty.com", hint: "Empty: https://events.pagerduty.com (EU: https://events.eu.pagerduty.com)." }] },
  opsgenie: { label: "Opsgenie", fields: [
    { key: "secret", type: "secret", label: "API key", required: true },
    { key: "url", type: "url", label: "API URL", fallback: "https://api.opsgenie.com", hint: "Empty: https://api.opsgenie.com (EU: https://api.eu.opsgenie.com)." }] },
  ntfy: { label: "ntfy", fields: [
    { key: "url", type: "url", label: "Server URL", fallback: "https://ntfy.sh", hint: "Empty: https://ntfy.sh; or your own server." },
    { key: "topic", type: "text", label: "Topic", required: true, hint: "Letters, digits, - and _." },
    { key: "priority", type: "priority", label: "Priority of failures" },
    { key: "tags", type: "list", label: "Tags", hint: "Up to 10, separated by commas." },
    { key: "secret", type: "secret", label: "Access token", hint: "For a protected topic; empty: none." }] },
  telegram: { label: "Telegram", fields: [
    { key: "secret", type: "secret", label: "Bot token", required: true },
    { key: "chat_id", type: "text", label: "Chat id", required: true, hint: "A number, or @channelname." },
    { key: "url", type: "url", label: "Bot API URL", fallback: "https://api.telegram.org", hint: "Empty: https://api.telegram.org." }] },
  apprise: { label: "Apprise (other services)", fields: [
    { key: "url", type: "secret-text", label: "Apprise URL", required: true,
      hint: "Any service apprise knows: mailto://, tgram://, gotify://, json:// … Needs the server's optional extra (texium[apprise]); without it the server says so." }] },
};

export function kindLabel(kind) {
  return KINDS[kind]?.label || kind;
}

/** The routes under #/channels: the list, a new one, an edit, one channel. */
export function channelRoute(id, action) {
  if (id === "new") return [ChannelFormPage, "New channel"];
  if (id && action === "edit") return [ChannelFormPage, "Edit channel"];
  if (id) return [ChannelPage, "Channel"];
  return [ChannelsPage, "Channels"];
}

/** Where a channel sends, as the API shows it (a secret URL reads https://host/***). */
function destination(c) {
  const fallback = KINDS[c.kind]?.fields.find((f) => f.key === "url")?.fallback;
  const base = c.url || fallback || "";
  switch (c.kind) {
    case "email":
      return (c.recipients || []).join(", ");
    case "ntfy":
      return `${base.replace(/\/$/, "")}/${c.topic || ""}`;
    case "telegram":
      return `chat ${c.chat_id} via ${base}`;
    default:
      return base;
  }
}

// ---- list --------------------------------------------------------------------------------
export function ChannelsPage() {
  const [problem, setProblem] = useState(null); // a refused delete: the API's message
  const [state, reload] = useResource(async (background) => {
    const quiet = { quiet: background };
    const [channels, users] = await Promise.all([listAll("/api/scheduler/channels", {}, quiet), listAll("/api/users/", {}, quiet)]);
    return { channels, users: new Map(users.map((u) => [u._id, u])) };
  }, []);
  const remove = async (channel) => {
    setProblem(null);
    const choice = await confirmDialog({
      title: "Delete this channel?",
      message: `“${channel.name}” (${kindLabel(channel.kind)}) will be removed with its delivery history.`,
      actions: [{ label: "Delete", value: "delete", danger: true }],
    });
    if (choice !== "delete") return;
    try {
      await api.del(`/api/scheduler/channels/${channel._id}`, null, { quiet: true });
      toast(`Channel “${channel.name}” deleted`, "success");
    } catch (error) {
      setProblem(error.detail);
    }
    reload(true);
  };
  return html`<section class="page">
    <${PageHeader} title="Channels"><button type="button" class="primary" onClick=${() => navigate("/channels/new")}>New channel</button><//>
    <p class="muted">Where alerts go: defined once, named by jobs (Edit a job: “Alerts”), each with the events it receives.</p>
    ${problem ? html`<div class="form-error" role="alert" data-testid="channel-problem">${problem}</div>` : null}
    <${Loaded} state=${state} reload=${reload}>${(data) => data.channels.length === 0
      ? html`<${Empty}><p>No channels yet.</p><//>`
      : html`<div class="table-wrap"><table class="channels">
          <thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">Owner</th><th scope="col">Destination</th><th scope="col">Secret</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
          <tbody>${data.channels.map((c) => html`<tr key=${c._id} data-channel-id=${c._id}>
            <td class="strong"><a href=${`#/channels/${c._id}`}>${c.name}</a></td>
            <td>${kindLabel(c.kind)}</td>
            <td>${data.users.get(c.user_id)?.name || c.user_id}</td>
            <td class="wrap" data-testid="channel-destination">${destination(c)}</td>
            <td>${c.has_secret ? MASK : html`<span class="muted">none</span>`}</td>
            <td><div class="row-actions">
              <${SendTest} channel=${c} />
              <button type="button" onClick=${() => navigate(`/channels/${c._id}/edit`)}>Edit</button>
              <button type="button" class="danger" onClick=${() => remove(c)}>Delete</button>
            </div></td>
          </tr>`)}</tbody>
        </table></div>`}<//>
  </section>`;
}

// ---- send test -------------------------------------------------------------------------
/** "delivered · HTTP 202" or "not delivered · HTTP 500 · 3 attempts · the error". */
function DeliveryResult({ delivery }) {
  const parts = [];
  if (delivery.status_code !== null && delivery.status_code !== undefined) parts.push(`HTTP ${delivery.status_code}`);
  if (delivery.attempt > 1) parts.push(`${delivery.attempt} attempts`);
  if (delivery.error) parts.push(delivery.error);
  return html`${delivery.ok ? html`<span class="ok-text">delivered</span>` : html`<span class="bad-text">not delivered</span>`}${
    parts.length ? html` <span class="wrap">· ${parts.join(" · ")}</span>` : null}`;
}

/** The Send test button and what came of it (the delivery, or the API's refusal, e.g. a 429). */
function SendTest({ channel, onSent }) {
  const [sending, setSending] = useState(false);
  const [result, setResult] = useState(null);
  const send = async () => {
    setSending(true);
    setResult(null);
    try {
      const answer = await api.post(`/api/scheduler/channels/${channel._id}/test`, undefined, { quiet: true });
      setResult({ delivery: answer.delivery });
    } catch (error) {
      setResult({ error: error.detail || String(error) });
    } finally {
      setSending(false);
      if (onSent) onSent();
    }
  };
  return html`<span class="send-test">
    <button type="button" disabled=${sending} onClick=${send} aria-label=${`Send a test message to ${channel.name}`}>${sending ? "Sending…" : "Send test"}</button>
    <span role="status" class="small" data-testid="channel-test-result">${result
      ? result.delivery ? html`<${DeliveryResult} delivery=${result.delivery} />` : html`<span class="bad-text">${result.error}</span>`
      : null}</span>
  </span>`;
}

// ---- one channel: facts, Send test, deliveries ------------------------------------------------
function ChannelPage({ route }) {
  const id = route.segments[1];
  const [offset, setOffset] = useState(0);
  const [state, reload] = useResource(async (background) => {
    const quiet = { quiet: background };
    const [channel, deliveries, jobs, users] = await Promise.all([
      api.get(`/api/scheduler/channels/${id}`, null, quiet),
      api.get(`/api/scheduler/channels/${id}/deliveries`, { limit: DELIVERIES_PER_PAGE, offset }, quiet),
      listAll("/api/scheduler/jobs", {}, quiet),
      listAll("/api/users/", {}, quiet),
    ]);
    return { channel: channel.data, deliveries, jobs: new Map(jobs.map((j) => [j._id, j])), users: new Map(users.map((u) => [u._id, u])) };
  }, [id, offset]);
  return html`<section class="page">
    <${Loaded} state=${state} reload=${reload}>${(data) => {
      const c = data.channel;
      const usedBy = [...data.jobs.values()].filter((j) => ((j.notify && j.notify.channels) || []).some((e) => e.id === c._id));
      return html`
        <${PageHeader} title=${c.name}>
          <${SendTest} channel=${c} onSent=${() => (offset ? setOffset(0) : reload(true))} />
          <button type="button" onClick=${() => navigate(`/channels/${c._id}/edit`)}>Edit</button>
        <//>
        <p class="muted"><a href="#/channels">← Channels</a></p>
        <section class="panel">
          <dl class="facts">
            <dt>Kind</dt><dd>${kindLabel(c.kind)}</dd>
            <dt>Owner</dt><dd>${data.users.get(c.user_id)?.name || c.user_id}</dd>
            <dt>Destination</dt><dd data-testid="channel-destination">${destination(c)}</dd>
            <dt>Secret</dt><dd>${c.has_secret ? MASK : html`<span class="muted">none</span>`}</dd>
            ${c.kind === "ntfy" && (c.priority || (c.tags && c.tags.length))
              ? html`<dt>ntfy</dt><dd>${c.priority ? `priority ${c.priority}` : ""}${c.priority && c.tags && c.tags.length ? " · " : ""}${(c.tags || []).join(", ")}</dd>` : null}
            <dt>Used by</dt><dd data-testid="channel-used-by">${usedBy.length
              ? usedBy.map((j, i) => html`${i ? ", " : ""}<a key=${j._id} href=${`#/jobs/${j._id}`}>${j.name}</a>`)
              : html`<span class="muted">no job</span>`}</dd>
          </dl>
        </section>
        <${Deliveries} page=${data.deliveries} jobs=${data.jobs} offset=${offset} onOffset=${setOffset} />`;
    }}<//>
  </section>`;
}

function Deliveries({ page, jobs, offset, onOffset }) {
  return html`<section class="panel" aria-labelledby="deliveries-title">
    <h2 id="deliveries-title">Deliveries</h2>
    ${page.data.length === 0 ? html`<p class="muted">Nothing sent yet.</p>` : html`<div class="table-wrap"><table class="deliveries" data-testid="channel-deliveries">
      <thead><tr><th scope="col">When</th><th scope="col">Event</th><th scope="col">Job</th><th scope="col">Result</th><th scope="col">Status code</th><th scope="col">Attempts</th><th scope="col">Error</th></tr></thead>
      <tbody>${page.data.map((d) => html`<tr key=${d._id}>
        <td><${Time} value=${d.created_at} /></td>
        <td>${d.event === "digest" ? html`digest <span class="muted small">(${d.items ?? "?"} held ${d.items === 1 ? "alert" : "alerts"})</span>` : d.event}</td>
        <td>${d.job_id
          ? html`<a href=${`#/jobs/${d.job_id}`}>${jobs.get(d.job_id)?.name || d.job_id}</a>${d.execution_id ? html` · <a href=${`#/executions/${d.execution_id}`}>run</a>` : null}`
          : html`<span class="muted">—</span>`}</td>
        <td data-testid="delivery-result"><${DeliveryStatus} delivery=${d} /></td>
        <td class="num">${d.status_code ?? "—"}</td>
        <td class="num">${d.attempt}</td>
        <td class="wrap">${d.error}</td>
      </tr>`)}</tbody>
    </table></div>`}
    <${Pager} total=${page.total} limit=${DELIVERIES_PER_PAGE} offset=${offset} onOffset=${onOffset} />
  </section>`;
}

/** A delivery's result in words: a held message waits for its channel's digest, a digested one went out in it. */
function DeliveryStatus({ delivery: d }) {
  if (d.status === "held") return html`<span class="muted" title="Grouped: many jobs alerted at once; sent in the channel's digest when its window ends">held for the digest</span>`;
  if (d.status === "digested") return html`<span class="ok-text" title="Sent together with the other held alerts of its window">sent in a digest</span>`;
  return d.ok ? html`<span class="ok-text">delivered</span>` : html`<span class="bad-text">failed</span>`;
}

// ---- create and edit -----------------------------------------------------------------------
function ChannelFormPage({ route }) {
  const id = route.segments[1];
  const editing = id !== "new";
  const [state, reload] = useResource(async () => {
    const [users, channel] = await Promise.all([listAll("/api/users/"), editing ? api.get(`/api/scheduler/channels/${id}`) : null]);
    return { users, channel: channel ? channel.data : null };
  }, [id]);
  return html`<section class="page">
    <${PageHeader} title=${editing ? "Edit channel" : "New channel"} />
    <${Loaded} state=${state} reload=${reload}>${(data) => html`<${ChannelForm} key=${id} data=${data} />`}<//>
  </section>`;
}

function formOf(channel, users) {
  return {
    user_id: channel ? channel.user_id : users[0]?._id || "",
    name: channel?.name || "",
    kind: channel?.kind || "slack",
    url: channel?.url || "", // a secret URL reads https://host/***: sent back as it is, it is kept
    secret: "", // write-only: empty keeps a stored one
    clear_secret: false,
    recipients: (channel?.recipients || []).join("\n"),
    topic: channel?.topic || "",
    chat_id: channel?.chat_id || "",
    priority: channel?.priority ? String(channel.priority) : "",
    tags: (channel?.tags || []).join(", "),
  };
}

const listOf = (text) => String(text || "").split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);

/** The body the API wants: a new channel sends what is filled in; an edit sends each of the
 * kind's fields (empty: null), and the secret only when a new one was typed or it is removed. */
function bodyOf(form, channel) {
  const body = { user_id: form.user_id, name: form.name };
  if (!channel) body.kind = form.kind;
  for (const field of KINDS[form.kind].fields) {
    if (field.type === "secret") {
      if (form.secret) body.secret = form.secret;
      else if (channel && channel.has_secret && form.clear_secret) body.secret = null;
      continue;
    }
    const text = String(form[field.key] ?? "").trim();
    let value = text || null;
    if (field.type === "list") value = listOf(text).length ? listOf(text) : null;
    if (field.type === "priority") value = text ? Number(text) : null;
    if (value !== null || channel) body[field.key] = value;
  }
  return body;
}

function ChannelForm({ data }) {
  const channel = data.channel;
  const [form, setForm] = useState(() => formOf(channel, data.users));
  const [errors, setErrors] = useState({});
  const [formError, setFormError] = useState(null);
  const [saving, setSaving] = useState(false);
  const set = (key) => (e) => {
    const value = e.target.type === "checkbox" ? e.target.checked : e.target.value;
    setForm((f) => ({ ...f, [key]: value }));
    setErrors((errs) => ({ ...errs, [key]: undefined }));
  };
  if (!data.users.length) {
    return html`<div class="state empty"><p>A channel belongs to a user, and there is none yet.</p>
      <p><button type="button" class="primary" onClick=${() => navigate("/users/new")}>New user</button></p></div>`;
  }
  const submit = async (e) => {
    e.preventDefault();
    setFormError(null);
    setSaving(true);
    try {
      const body = bodyOf(form, channel);
      if (channel) await api.put(`/api/scheduler/channels/${channel._id}`, body, { quiet: true });
      else await api.post("/api/scheduler/channels", body, { quiet: true });
      toast(`Channel “${form.name}” saved`, "success");
      navigate("/channels");
    } catch (error) {
      const field = fieldOf(error.detail);
      if (field && document.getElementById(`channel-${field}`)) setErrors({ [field]: error.detail });
      else setFormError(error.detail || String(error));
      toast(error.detail || String(error), "error");
    } finally {
      setSaving(false);
    }
  };
  const stored = channel && channel.kind === form.kind && channel.has_secret;
  const input = (field) => {
    const common = { value: form[field.key], onInput: set(field.key), autocomplete: "off", spellcheck: false };
    switch (field.type) {
      case "list":
        return (a) => html`<textarea ...${a} ...${common} rows="2"></textarea>`;
      case "priority":
        return (a) => html`<select ...${a} value=${form.priority} onChange=${set("priority")}>
          <option value="">default (3)</option>${[1, 2, 3, 4, 5].map((n) => html`<option key=${n} value=${String(n)}>${n}${n === 5 ? " (max)" : n === 1 ? " (min)" : ""}</option>`)}</select>`;
      case "secret":
        return (a) => html`<input ...${a} ...${common} type="password" autocomplete="new-password" placeholder=${stored ? MASK : ""} />`;
      case "url":
        return (a) => html`<input ...${a} ...${common} type="url" placeholder=${field.fallback || "https://"} />`;
      default:
        return (a) => html`<input ...${a} ...${common} type="text" />`;
    }
  };
  const hintOf = (field) => {
    if (field.type === "secret" && stored) return `Stored, shown as ${MASK}: leave as is to keep it, or type a new one. ${field.hint || ""}`;
    if (field.type === "secret") return `Write-only: never shown again. ${field.hint || ""}`;
    const secretUrl = field.type === "secret-url" || field.type === "secret-text";
    if (secretUrl && channel) return `The URL is the secret, shown as ${channel.url}: leave as is to keep it, or enter the whole new URL. ${field.hint || ""}`;
    if (field.type === "secret-url") return "The URL is the secret: stored encrypted, shown as its host only.";
    if (secretUrl) return `The URL is the secret: stored encrypted, shown as its scheme only. ${field.hint || ""}`;
    return field.hint;
  };
  const optionalSecret = KINDS[form.kind].fields.some((f) => f.type === "secret" && !f.required);
  return html`<form class="form narrow" onSubmit=${submit} novalidate>
    ${formError ? html`<p class="form-error" role="alert">${formError}</p>` : null}
    <${Field} id="channel-name" label="Name" error=${errors.name}>${(a) => html`<input ...${a} type="text" value=${form.name} onInput=${set("name")} autocomplete="off" />`}<//>
    <${Field} id="channel-user_id" label="Owner" error=${errors.user_id} hint="Jobs of this user (and an admin's) may name the channel.">${(a) => html`<select ...${a} value=${form.user_id} onChange=${set("user_id")}>
      ${data.users.map((u) => html`<option key=${u._id} value=${u._id}>${u.name} (${u.email})</option>`)}</select>`}<//>
    <${Field} id="channel-kind" label="Kind" error=${errors.kind} hint=${channel ? "A channel keeps its kind." : undefined}>${(a) => html`<select ...${a} value=${form.kind} disabled=${!!channel} onChange=${set("kind")}>
      ${Object.entries(KINDS).map(([kind, k]) => html`<option key=${kind} value=${kind}>${k.label}</option>`)}</select>`}<//>
    ${KINDS[form.kind].fields.map((field) => html`<${Field} key=${`${form.kind}-${field.key}`} id=${`channel-${field.key}`}
        label=${`${field.label}${field.required ? "" : " (optional)"}`} error=${errors[field.key]} hint=${hintOf(field)}>${input(field)}<//>`)}
    ${stored && optionalSecret ? html`<div class="field checkbox"><input id="channel-clear_secret" type="checkbox" checked=${form.clear_secret} onChange=${set("clear_secret")} />
      <label for="channel-clear_secret">Remove the stored secret</label></div>` : null}
    <div class="form-actions">
      <button type="submit" class="primary" disabled=${saving}>Save</button>
      <button type="button" onClick=${() => navigate("/channels")}>Cancel</button>
    </div>
  </form>`;
}
