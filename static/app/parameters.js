// Typed run parameters in the dashboard: the job form's declaration editor (one row per
// parameter) and the inputs a run's form is made of (a select for a choice, a password field for
// a secret, a checkbox for a boolean, number inputs for numbers), with their values as the API
// wants them. A value that is not what its type needs is sent as typed, so the API's 400 names it.
import { html } from "../vendor/htm/standalone.module.js";
import { Field } from "./ui.js";

export const TYPES = [
  ["string", "Text"],
  ["integer", "Whole number"],
  ["number", "Number"],
  ["boolean", "Yes / no"],
  ["choice", "Choice"],
  ["secret", "Secret"],
];

const NUMERIC = new Set(["integer", "number"]);

/** A value the way an input shows it ("" for none). */
const textOf = (value) => (value === null || value === undefined ? "" : String(value));

/** A text typed for `type` as the API wants it: a number for numbers (the text when it is not
 * one), a boolean for "true"/"false"; `choices` give a choice's own value back (1, not "1"). */
function typed(type, text, choices = []) {
  if (NUMERIC.has(type)) {
    const number = Number(text);
    return text.trim() !== "" && Number.isFinite(number) ? number : text;
  }
  if (type === "boolean") return text === true || text === "true";
  if (type === "choice") return choices.find((c) => String(c) === text) ?? text;
  return text;
}

// ---- the declaration (job form) ----------------------------------------------------------------
/** The form's rows for a job's `parameters`. */
export function declarationRows(declaration) {
  return (declaration || []).map((p) => ({
    name: p.name || "", type: p.type || "string", choices: (p.choices || []).join(", "),
    default: p.type === "secret" ? "" : textOf(p.default), required: !!p.required, description: p.description || "",
  }));
}

/** The rows as the API's `parameters`: choices only for a choice, no default for a secret or
 * when empty, description only when given. */
export function declarationOf(rows) {
  return rows.map((row) => {
    const choices = row.type === "choice" ? row.choices.split(",").map((c) => c.trim()).filter(Boolean) : [];
    const p = { name: row.name.trim(), type: row.type, required: !!row.required };
    if (row.type === "choice") p.choices = choices;
    if (row.type !== "secret" && row.default !== "") p.default = typed(row.type, row.default, choices);
    if (row.description.trim()) p.description = row.description.trim();
    return p;
  });
}

const BLANK_ROW = { name: "", type: "string", choices: "", default: "", required: false, description: "" };

/** Rows of name, type, choices (for a choice), default, required and description; add and remove. */
export function DeclarationEditor({ rows, onChange, error }) {
  const change = (i, key) => (e) => {
    const value = e.target.type === "checkbox" ? e.target.checked : e.target.value;
    onChange(rows.map((row, j) => (j === i ? { ...row, [key]: value } : row)));
  };
  return html`<div class=${`field parameters-editor ${error ? "has-error" : ""}`} id="job-parameters" role="group"
      aria-labelledby="job-parameters-label" aria-describedby=${error ? "job-parameters-error" : "job-parameters-hint"}>
    <span class="group-label" id="job-parameters-label">Run parameters</span>
    <p class="hint" id="job-parameters-hint">Values asked for by Run now, and given by chained and trigger-URL runs. Python jobs get them
      as the keyword argument <code>params</code>, scripts as <code>TEXIUM_PARAM_NAME</code>; a secret is stored encrypted and shown as ***.</p>
    ${rows.length ? html`<ol class="parameter-rows">${rows.map((row, i) => {
      const n = i + 1;
      const which = html`<span class="visually-hidden"> (parameter ${n})</span>`;
      return html`<li key=${i} class="parameter-row" data-parameter=${n}>
        <div class="field"><label for=${`param-${i}-name`}>Name${which}</label>
          <input id=${`param-${i}-name`} class="mono" value=${row.name} spellcheck=${false} autocomplete="off" onInput=${change(i, "name")} /></div>
        <div class="field"><label for=${`param-${i}-type`}>Type${which}</label>
          <select id=${`param-${i}-type`} value=${row.type} onChange=${change(i, "type")}>
            ${TYPES.map(([value, text]) => html`<option key=${value} value=${value}>${text}</option>`)}</select></div>
        ${row.type === "choice" ? html`<div class="field"><label for=${`param-${i}-choices`}>Choices${which}</label>
          <input id=${`param-${i}-choices`} value=${row.choices} placeholder="eu, us" onInput=${change(i, "choices")} /></div>` : null}
        ${row.type === "secret" ? null : row.type === "boolean"
          ? html`<div class="field"><label for=${`param-${i}-default`}>Default${which}</label>
              <select id=${`param-${i}-default`} value=${row.default} onChange=${change(i, "default")}>
                <option value="">none</option><option value="true">yes</option><option value="false">no</option></select></div>`
          : html`<div class="field"><label for=${`param-${i}-default`}>Default${which}</label>
              <input id=${`param-${i}-default`} value=${row.default} inputmode=${NUMERIC.has(row.type) ? "decimal" : undefined}
                onInput=${change(i, "default")} /></div>`}
        <div class="field checkbox"><input id=${`param-${i}-required`} type="checkbox" checked=${row.required} onChange=${change(i, "required")} />
          <label for=${`param-${i}-required`}>Required${which}</label></div>
        <div class="field wide"><label for=${`param-${i}-description`}>Description${which}</label>
          <input id=${`param-${i}-description`} value=${row.description} onInput=${change(i, "description")} /></div>
        <button type="button" class="small danger" aria-label=${`Remove parameter ${n}${row.name ? ` (${row.name})` : ""}`}
          onClick=${() => onChange(rows.filter((_, j) => j !== i))}>Remove</button>
      </li>`;
    })}</ol>` : html`<p class="muted small">No parameters: runs take none.</p>`}
    <button type="button" class="small" onClick=${() => onChange([...rows, { ...BLANK_ROW }])}>Add parameter</button>
    ${error ? html`<p class="field-error" id="job-parameters-error" role="alert">${error}</p>` : null}
  </div>`;
}

// ---- the values (a run's form) ----------------------------------------------------------------
/** The inputs' first texts: `given` values (a run repeated; a secret's *** is left empty), else
 * the defaults. */
export function initialValues(declaration, given = null) {
  const values = {};
  for (const p of declaration || []) {
    const value = given && p.name in given && !(p.type === "secret") ? given[p.name] : p.default;
    values[p.name] = p.type === "boolean" ? value === true : p.type === "secret" ? "" : textOf(value);
  }
  return values;
}

/** The run's `parameters` for the API: empty inputs are left out (the default applies, or the
 * 400 says the parameter is required); a boolean is always sent. */
export function valuesOf(declaration, texts) {
  const values = {};
  for (const p of declaration || []) {
    const text = texts[p.name];
    if (p.type === "boolean") values[p.name] = !!text;
    else if (text !== "" && text !== undefined) values[p.name] = typed(p.type, text, p.choices || []);
  }
  return values;
}

/** One input per declared parameter, labelled with its name (and "required"). */
export function ParameterInputs({ declaration, values, onChange, idPrefix = "run-param" }) {
  const set = (name, value) => onChange({ ...values, [name]: value });
  return (declaration || []).map((p) => {
    const id = `${idPrefix}-${p.name}`;
    const label = `${p.name}${p.required ? " (required)" : ""}`;
    if (p.type === "boolean") {
      return html`<div class="field checkbox" key=${p.name}>
        <input id=${id} type="checkbox" checked=${!!values[p.name]} onChange=${(e) => set(p.name, e.target.checked)}
          aria-describedby=${p.description ? `${id}-hint` : undefined} />
        <label for=${id}>${label}</label>
        ${p.description ? html`<p class="hint" id=${`${id}-hint`}>${p.description}</p>` : null}</div>`;
    }
    return html`<${Field} key=${p.name} id=${id} label=${label} hint=${p.description || undefined}>${(a) => p.type === "choice"
      ? html`<select ...${a} value=${values[p.name]} required=${!!p.required} onChange=${(e) => set(p.name, e.target.value)}>
          ${p.required && values[p.name] !== "" ? null : html`<option value="">${p.required ? "choose…" : "none"}</option>`}
          ${(p.choices || []).map((c) => html`<option key=${String(c)} value=${String(c)}>${String(c)}</option>`)}</select>`
      : html`<input ...${a} type=${p.type === "secret" ? "password" : NUMERIC.has(p.type) ? "number" : "text"}
          step=${p.type === "integer" ? 1 : p.type === "number" ? "any" : undefined} required=${!!p.required}
          autocomplete=${p.type === "secret" ? "new-password" : "off"} value=${values[p.name]} onInput=${(e) => set(p.name, e.target.value)} />`}<//>`;
  });
}
