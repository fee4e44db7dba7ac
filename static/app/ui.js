// Small shared components: times, badges, states, pagination, toasts and the confirm dialog.
import { html, useEffect, useRef, useState } from "../vendor/htm/standalone.module.js";
import { formatDuration, formatLocal, relative, utcText } from "./util.js";

export function Time({ value, showRelative = false }) {
  if (!value) return html`<span class="muted">—</span>`;
  return html`<time datetime=${value} title=${utcText(value)}>${formatLocal(value)}${
    showRelative ? html` <span class="muted">(${relative(value)})</span>` : null
  }</time>`;
}

export function Badge({ status }) {
  return html`<span class=${`badge s-${status}`}>${status}</span>`;
}

export function Duration({ ms }) {
  return html`<span class="num">${formatDuration(ms)}</span>`;
}

export function Loading({ label = "Loading…" }) {
  return html`<p class="state loading" role="status"><span class="spinner" aria-hidden="true"></span>${label}</p>`;
}

export function Empty({ children }) {
  return html`<div class="state empty">${children}</div>`;
}

export function ErrorBox({ error, retry }) {
  return html`<div class="state error" role="alert">
    <p><strong>Could not load this.</strong> ${error ? error.detail || error.message : ""}</p>
    ${retry ? html`<button type="button" onClick=${() => retry()}>Try again</button>` : null}
  </div>`;
}

/** Loading / error / content for a useResource() state. */
export function Loaded({ state, reload, children }) {
  if (state.error && !state.data) return html`<${ErrorBox} error=${state.error} retry=${reload} />`;
  if (!state.data) return html`<${Loading} />`;
  return children(state.data);
}

export function Pager({ total, limit, offset, onOffset }) {
  if (total <= limit && offset === 0) return html`<p class="pager muted">${total} in all</p>`;
  const first = total ? offset + 1 : 0;
  const last = Math.min(offset + limit, total);
  return html`<nav class="pager" aria-label="Pages">
    <button type="button" disabled=${offset <= 0} onClick=${() => onOffset(Math.max(0, offset - limit))}>Previous</button>
    <span>${first}–${last} of ${total}</span>
    <button type="button" disabled=${offset + limit >= total} onClick=${() => onOffset(offset + limit)}>Next</button>
  </nav>`;
}

export function PageHeader({ title, children }) {
  return html`<header class="page-header"><h1>${title}</h1><div class="actions">${children}</div></header>`;
}

/** A labelled control with its error underneath (`aria-describedby`). */
export function Field({ id, label, error, hint, children, className = "" }) {
  const described = [hint ? `${id}-hint` : null, error ? `${id}-error` : null].filter(Boolean).join(" ");
  return html`<div class=${`field ${className} ${error ? "has-error" : ""}`}>
    <label for=${id}>${label}</label>
    ${children({ id, "aria-describedby": described || undefined, "aria-invalid": error ? "true" : undefined })}
    ${hint ? html`<p class="hint" id=${`${id}-hint`}>${hint}</p>` : null}
    ${error ? html`<p class="field-error" id=${`${id}-error`} role="alert">${error}</p>` : null}
  </div>`;
}

// ---- toasts ---------------------------------------------------------------------------------
let toasts = [];
let toastId = 0;
const toastListeners = new Set();

export function toast(message, kind = "info", link = null) {
  const id = ++toastId;
  toasts = [...toasts, { id, message, kind, link }];
  toastListeners.forEach((l) => l(toasts));
  setTimeout(() => dismiss(id), kind === "error" ? 9000 : 5000);
}

function dismiss(id) {
  toasts = toasts.filter((t) => t.id !== id);
  toastListeners.forEach((l) => l(toasts));
}

export function Toasts() {
  const [items, setItems] = useState(toasts);
  useEffect(() => {
    toastListeners.add(setItems);
    return () => toastListeners.delete(setItems);
  }, []);
  return html`<div class="toasts" aria-live="polite">
    ${items.map(
      (t) => html`<div key=${t.id} class=${`toast ${t.kind}`} role=${t.kind === "error" ? "alert" : "status"}>
        <span>${t.message}</span>
        ${t.link ? html`<a href=${t.link.href}>${t.link.label}</a>` : null}
        <button type="button" class="link" aria-label="Dismiss" onClick=${() => dismiss(t.id)}>×</button>
      </div>`,
    )}
  </div>`;
}

// ---- confirm dialog ---------------------------------------------------------------------------
let dialogState = null;
const dialogListeners = new Set();

/** Ask before doing something; resolves to the chosen action's value (or null for Cancel,
 * whose label `dismiss` may change, e.g. when the action itself is a cancellation). */
export function confirmDialog({ title, message, actions, dismiss = "Cancel" }) {
  return new Promise((resolve) => {
    dialogState = { title, message, actions, dismiss, resolve };
    dialogListeners.forEach((l) => l(dialogState));
  });
}

/** Ask for a few values (a note, a time): resolves to {key: text} on `submit`, or null for
 * Cancel. `fields`: [{key, label, type ("text", "textarea", "datetime-local"), hint}]. */
export function formDialog({ title, message, fields, submit }) {
  return new Promise((resolve) => {
    dialogState = { title, message, fields, submit, actions: [], resolve };
    dialogListeners.forEach((l) => l(dialogState));
  });
}

function closeDialog(value) {
  const state = dialogState;
  dialogState = null;
  dialogListeners.forEach((l) => l(null));
  if (state) state.resolve(value);
}

export function Dialogs() {
  const [state, setState] = useState(dialogState);
  const ref = useRef(null);
  useEffect(() => {
    dialogListeners.add(setState);
    return () => dialogListeners.delete(setState);
  }, []);
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (state && !dialog.open) dialog.showModal();
    if (!state && dialog.open) dialog.close();
  }, [state]);
  return html`<dialog ref=${ref} class="dialog" aria-labelledby="dialog-title"
      onCancel=${(e) => { e.preventDefault(); closeDialog(null); }}>
    ${state && state.fields ? html`<${DialogForm} key=${state.title} state=${state} />` : null}
    ${state && !state.fields
      ? html`<h2 id="dialog-title">${state.title}</h2>
          <p>${state.message}</p>
          <div class="dialog-actions">
            ${state.actions.map(
              (a) => html`<button type="button" class=${a.danger ? "danger" : "primary"} onClick=${() => closeDialog(a.value)}>${a.label}</button>`,
            )}
            <button type="button" onClick=${() => closeDialog(null)}>${state.dismiss || "Cancel"}</button>
          </div>`
      : null}
  </dialog>`;
}

function DialogForm({ state }) {
  const [values, setValues] = useState(() => Object.fromEntries(state.fields.map((f) => [f.key, f.value || ""])));
  const set = (key) => (e) => setValues((v) => ({ ...v, [key]: e.target.value }));
  return html`<form method="dialog" onSubmit=${(e) => { e.preventDefault(); closeDialog(values); }}>
    <h2 id="dialog-title">${state.title}</h2>
    ${state.message ? html`<p>${state.message}</p>` : null}
    ${state.fields.map((f) => html`<${Field} key=${f.key} id=${`dialog-${f.key}`} label=${f.label} hint=${f.hint}>
      ${(a) => f.type === "textarea"
        ? html`<textarea ...${a} rows="2" value=${values[f.key]} onInput=${set(f.key)}></textarea>`
        : html`<input ...${a} type=${f.type || "text"} value=${values[f.key]} onInput=${set(f.key)} />`}
    <//>`)}
    <div class="dialog-actions">
      <button type="submit" class="primary">${state.submit}</button>
      <button type="button" onClick=${() => closeDialog(null)}>Cancel</button>
    </div>
  </form>`;
}

/** A read-only, labelled line of text with its Copy button. */
export function CopyLine({ id, label, text }) {
  return html`<${Field} id=${id} label=${label}>${(a) => html`<div class="copy-line">
    <input ...${a} type="text" class="mono" readonly value=${text} onFocus=${(e) => e.target.select()} />
    <button type="button" aria-label=${`Copy ${label.toLowerCase()}`} onClick=${() => copyText(text)}>Copy</button></div>`}<//>`;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied to the clipboard", "success");
  } catch {
    toast("The browser did not allow copying; select the text instead", "error");
  }
}
