// The channel picker of the job and monitor forms: which alert channels a notify names, and the
// events each receives (notify.channels: [{id, events}]).
import { html } from "../vendor/htm/standalone.module.js";
import { kindLabel } from "./pages/channels.js";

/** The form's entries for a stored notify: [{id, events}]. */
export function channelEntriesOf(notify) {
  return ((notify && notify.channels) || []).map((entry) => ({ id: entry.id, events: [...entry.events] }));
}

/** The first entry without events, for the form's own check (the API wants at least one). */
export function entryWithoutEvents(entries) {
  return entries.find((entry) => !entry.events.length) || null;
}

/** `defaultEvents`: the events a newly ticked channel gets (default: all). `channels`: the visible ones; `owner`: the job's owner (an admin's job may name any channel,
 * another user's only their own); `entries` and `onChange(entries)`: the choice; `events`:
 * [key, label, hint] of the events the API lists; `prefix`: of the element ids (`job`, or
 * `monitor` in the monitor form). */
export function NotifyChannels({ channels, users, owner, entries, onChange, events, defaultEvents = events.map(([key]) => key), error, prefix = "job" }) {
  const admin = users.find((u) => u._id === owner)?.role === "admin";
  const usable = channels.filter((c) => admin || c.user_id === owner || entries.some((e) => e.id === c._id));
  const missing = entries.filter((e) => !channels.some((c) => c._id === e.id));
  const entryOf = (id) => entries.find((e) => e.id === id);
  const toggle = (id) => (e) => {
    const on = e.target.checked;
    onChange(on ? [...entries, { id, events: [...defaultEvents] }] : entries.filter((x) => x.id !== id));
  };
  const toggleEvent = (id, event) => (e) => {
    const on = e.target.checked;
    onChange(entries.map((x) => (x.id !== id ? x : { ...x, events: on ? [...new Set([...x.events, event])] : x.events.filter((v) => v !== event) })));
  };
  const ownerName = (c) => (c.user_id === owner ? "" : ` · ${users.find((u) => u._id === c.user_id)?.name || "another user"}'s`);
  return html`<div class=${`field channels ${error ? "has-error" : ""}`} id=${`${prefix}-notify_channels`} role="group" aria-labelledby=${`${prefix}-notify_channels-label`}
      aria-describedby=${`${prefix}-notify_channels-${error ? "error" : "hint"}`}>
    <span class="group-label" id=${`${prefix}-notify_channels-label`}>Channels</span>
    <p class="hint" id=${`${prefix}-notify_channels-hint`}>${usable.length
      ? "Each chosen channel gets the events ticked for it. None chosen: every event goes to the server's ALERT_CHANNELS, if set."
      : html`No channels${channels.length ? ` of this ${prefix}'s owner` : ""} yet: create them on the <a href="#/channels">Channels</a> page.`}</p>
    <ul class="channel-choices">${usable.map((c) => {
      const entry = entryOf(c._id);
      const box = `${prefix}-notify-channel-${c._id}`;
      return html`<li key=${c._id} data-channel-id=${c._id}>
        <span class="check"><input id=${box} type="checkbox" checked=${!!entry} onChange=${toggle(c._id)} />
          <label for=${box}>${c.name} <span class="muted">(${kindLabel(c.kind)}${ownerName(c)})</span></label></span>
        ${entry ? html`<span class="checks" role="group" aria-label=${`Events sent to ${c.name}`}>${events.map(([key, label, hint]) => html`<span class="check" key=${key}>
          <input id=${`${box}-${key}`} type="checkbox" title=${hint} checked=${entry.events.includes(key)} onChange=${toggleEvent(c._id, key)} />
          <label for=${`${box}-${key}`} title=${hint}>${label}</label></span>`)}</span>` : null}
      </li>`;
    })}
    ${missing.map((e) => html`<li key=${e.id}><span class="check"><input id=${`${prefix}-notify-channel-${e.id}`} type="checkbox" checked onChange=${toggle(e.id)} />
      <label for=${`${prefix}-notify-channel-${e.id}`}>${e.id} <span class="muted">(not visible to you; ${e.events.join(", ")})</span></label></span></li>`)}</ul>
    ${error ? html`<p class="field-error" id=${`${prefix}-notify_channels-error`} role="alert">${error}</p>` : null}
  </div>`;
}
