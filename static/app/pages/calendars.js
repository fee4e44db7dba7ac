// Calendars: blackout periods jobs exclude. List (with the jobs that use each), create, edit
// (fixed periods and recurring rules), import an .ics file, delete (a 409 names the jobs).
import { html, useState } from "../../vendor/htm/standalone.module.js";
import { api, listAll } from "../api.js";
import { Empty, Field, Loaded, PageHeader, confirmDialog, toast } from "../ui.js";
import { browserZone, fieldOf, isoToLocalInput, localInputToIso, navigate, timeZones, useResource } from "../util.js";

const ZONES = timeZones();
const RULE_FIELDS = [["minute", "Minute"], ["hour", "Hour"], ["day_of_month", "Day of month"], ["month", "Month"], ["day_of_week", "Day of week"]];

export function CalendarsPage() {
  const [problem, setProblem] = useState(null); // a refused delete: the API's message
  const [state, reload] = useResource(async (background) => {
    const quiet = { quiet: background };
    const [calendars, jobs, users] = await Promise.all([
      listAll("/api/scheduler/calendars", {}, quiet), listAll("/api/scheduler/jobs", {}, quiet), listAll("/api/users/", {}, quiet),
    ]);
    return { calendars, jobs, users: new Map(users.map((u) => [u._id, u])) };
  }, []);
  const remove = async (calendar) => {
    setProblem(null);
    const choice = await confirmDialog({
      title: "Delete this calendar?",
      message: `“${calendar.name}” and its blackout periods will be removed.`,
      actions: [{ label: "Delete", value: "delete", danger: true }],
    });
    if (choice !== "delete") return;
    try {
      await api.del(`/api/scheduler/calendars/${calendar._id}`, null, { quiet: true });
      toast(`Calendar “${calendar.name}” deleted`, "success");
    } catch (error) {
      setProblem({ id: calendar._id, detail: error.detail });
    }
    reload(true);
  };
  return html`<section class="page">
    <${PageHeader} title="Calendars"><button type="button" class="primary" onClick=${() => navigate("/calendars/new")}>New calendar</button><//>
    <p class="muted">Blackout periods: a job that excludes a calendar does not run inside them (Edit a job: “Skip runs in”).</p>
    ${problem ? html`<div class="form-error" role="alert" data-testid="calendar-problem">${problem.detail}</div>` : null}
    <${Loaded} state=${state} reload=${reload}>${(data) => data.calendars.length === 0
      ? html`<${Empty}><p>No calendars yet.</p><//>`
      : html`<div class="table-wrap"><table class="calendars">
          <thead><tr><th scope="col">Name</th><th scope="col">Owner</th><th scope="col">Time zone</th><th scope="col">Blackouts</th><th scope="col">Used by</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
          <tbody>${data.calendars.map((c) => html`<${CalendarRow} key=${c._id} calendar=${c} data=${data} reload=${reload} remove=${remove} />`)}</tbody>
        </table></div>`}<//>
  </section>`;
}

function CalendarRow({ calendar: c, data, reload, remove }) {
  const users = data.jobs.filter((j) => (j.exclude_calendars || []).includes(c._id));
  const inputId = `ics-${c._id}`;
  const importIcs = async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try {
      const result = await api.post(`/api/scheduler/calendars/${c._id}/ics`, undefined, { text: await file.text(), contentType: "text/calendar" });
      toast(result.message || "Imported", "success");
    } catch {
      // the API client showed the error
    }
    e.target.value = "";
    reload(true);
  };
  return html`<tr data-calendar-id=${c._id}>
    <td class="strong">${c.name}</td>
    <td>${data.users.get(c.user_id)?.name || c.user_id}</td>
    <td>${c.timezone}</td>
    <td data-testid="calendar-counts">${counts(c)}</td>
    <td data-testid="calendar-used-by">${users.length
      ? users.map((j, i) => html`${i ? ", " : ""}<a key=${j._id} href=${`#/jobs/${j._id}`}>${j.name}</a>`)
      : html`<span class="muted">no job</span>`}</td>
    <td><div class="row-actions">
      <button type="button" onClick=${() => navigate(`/calendars/${c._id}/edit`)}>Edit</button>
      <input id=${inputId} class="visually-hidden file-picker" type="file" accept=".ics,text/calendar"
        aria-label=${`Import an iCalendar file into ${c.name}`} onChange=${importIcs} />
      <label class="button" for=${inputId}>Import .ics</label>
      <button type="button" class="danger" onClick=${() => remove(c)}>Delete</button>
    </div></td>
  </tr>`;
}

function counts(c) {
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  return [plural(c.periods.length, "period"), plural(c.recurring.length, "recurring rule"), plural((c.holidays || []).length, "holiday")].join(", ");
}

export function CalendarFormPage({ route }) {
  const id = route.segments[1];
  const editing = id !== "new";
  const [state, reload] = useResource(async () => {
    const [users, calendar] = await Promise.all([listAll("/api/users/"), editing ? api.get(`/api/scheduler/calendars/${id}`) : null]);
    return { users, calendar: calendar ? calendar.data : null };
  }, [id]);
  return html`<section class="page">
    <${PageHeader} title=${editing ? "Edit calendar" : "New calendar"} />
    <${Loaded} state=${state} reload=${reload}>${(data) => html`<${CalendarForm} key=${id} data=${data} />`}<//>
  </section>`;
}

const blankRule = () => ({ minute: "0", hour: "2", day_of_month: "*", month: "*", day_of_week: "sun", duration_seconds: "3600" });

function CalendarForm({ data }) {
  const calendar = data.calendar;
  const [form, setForm] = useState(() => ({
    name: calendar?.name || "", user_id: calendar?.user_id || data.users[0]?._id || "", timezone: calendar?.timezone || browserZone(),
    periods: (calendar?.periods || []).map((p) => ({ start: isoToLocalInput(p.start), end: isoToLocalInput(p.end) })),
    recurring: (calendar?.recurring || []).map((r) => ({ ...blankRule(), ...r, duration_seconds: String(r.duration_seconds) })),
  }));
  const [error, setError] = useState(null); // {field, detail}
  const set = (key) => (e) => setForm((f) => ({ ...f, [key]: e.target.value }));
  const setItem = (list, index, key) => (e) => setForm((f) => ({
    ...f, [list]: f[list].map((item, i) => (i === index ? { ...item, [key]: e.target.value } : item)),
  }));
  const drop = (list, index) => setForm((f) => ({ ...f, [list]: f[list].filter((_, i) => i !== index) }));
  const add = (list, item) => setForm((f) => ({ ...f, [list]: [...f[list], item] }));
  const errorOf = (field) => (error && error.field === field ? error.detail : undefined);

  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    const body = {
      name: form.name, user_id: form.user_id, timezone: form.timezone,
      periods: form.periods.map((p) => ({ start: localInputToIso(p.start) || p.start, end: localInputToIso(p.end) || p.end })),
      recurring: form.recurring.map((r) => {
        const duration = Number(r.duration_seconds);
        return { ...r, duration_seconds: Number.isInteger(duration) ? duration : r.duration_seconds };
      }),
    };
    try {
      if (calendar) await api.put(`/api/scheduler/calendars/${calendar._id}`, body, { quiet: true });
      else await api.post("/api/scheduler/calendars", body, { quiet: true });
      toast(`Calendar “${form.name}” saved`, "success");
      navigate("/calendars");
    } catch (failure) {
      // "Invalid field periods[1].end: ..." belongs to period 2; "recurring[0]: ..." to rule 1
      const item = /^Invalid field ((?:periods|recurring)\[\d+\])/.exec(failure.detail || "");
      setError({ field: item ? item[1] : fieldOf(failure.detail) || "form", detail: failure.detail });
    }
  };

  return html`<form class="form" onSubmit=${submit} novalidate>
    ${error && error.field === "form" ? html`<p class="form-error" role="alert">${error.detail}</p>` : null}
    <div class="two">
      <${Field} id="calendar-name" label="Name" error=${errorOf("name")}>${(a) => html`<input ...${a} type="text" value=${form.name} onInput=${set("name")} autocomplete="off" />`}<//>
      <${Field} id="calendar-user_id" label="Owner" error=${errorOf("user_id")} hint="Its jobs (or an admin's) may exclude it.">${(a) => html`<select ...${a} value=${form.user_id} onChange=${set("user_id")}>
        ${data.users.map((u) => html`<option key=${u._id} value=${u._id}>${u.name} (${u.email})</option>`)}</select>`}<//>
      <${Field} id="calendar-timezone" label="Time zone" error=${errorOf("timezone")} hint="Of recurring rules and of all-day holidays.">${(a) => html`<select ...${a} value=${form.timezone} onChange=${set("timezone")}>
        ${ZONES.includes(form.timezone) ? null : html`<option value=${form.timezone}>${form.timezone}</option>`}
        ${ZONES.map((z) => html`<option key=${z} value=${z}>${z}</option>`)}</select>`}<//>
    </div>

    <fieldset><legend>Periods</legend>
      <p class="hint">Fixed blackouts, from the start up to (not including) the end, in your time zone (${browserZone()}).</p>
      ${form.periods.map((p, i) => html`<div class="item-row" key=${`p${i}`} role="group" aria-label=${`Period ${i + 1}`}>
        <${Field} id=${`period-${i}-start`} label=${`Period ${i + 1} start`} error=${errorOf(`periods[${i}]`)}>${(a) => html`<input ...${a} type="datetime-local" value=${p.start} onInput=${setItem("periods", i, "start")} />`}<//>
        <${Field} id=${`period-${i}-end`} label=${`Period ${i + 1} end`}>${(a) => html`<input ...${a} type="datetime-local" value=${p.end} onInput=${setItem("periods", i, "end")} />`}<//>
        <button type="button" class="small" onClick=${() => drop("periods", i)}>Remove period ${i + 1}</button>
      </div>`)}
      <button type="button" onClick=${() => add("periods", { start: "", end: "" })}>Add period</button>
    </fieldset>

    <fieldset><legend>Recurring rules</legend>
      <p class="hint">A blackout from each time the cron fields match (in the calendar's time zone), lasting the duration.</p>
      ${form.recurring.map((r, i) => html`<div class="item-row" key=${`r${i}`} role="group" aria-label=${`Rule ${i + 1}`}>
        ${RULE_FIELDS.map(([key, label]) => html`<${Field} key=${key} id=${`rule-${i}-${key}`} label=${`Rule ${i + 1} ${label.toLowerCase()}`}>${(a) => html`<input ...${a} class="mono" type="text" value=${r[key]} onInput=${setItem("recurring", i, key)} />`}<//>`)}
        <${Field} id=${`rule-${i}-duration_seconds`} label=${`Rule ${i + 1} duration (seconds)`} error=${errorOf(`recurring[${i}]`)}>${(a) => html`<input ...${a} type="number" min="1" max="2678400" value=${r.duration_seconds} onInput=${setItem("recurring", i, "duration_seconds")} />`}<//>
        <button type="button" class="small" onClick=${() => drop("recurring", i)}>Remove rule ${i + 1}</button>
      </div>`)}
      <button type="button" onClick=${() => add("recurring", blankRule())}>Add rule</button>
    </fieldset>

    ${calendar && calendar.holidays && calendar.holidays.length ? html`<p class="muted">${calendar.holidays.length} holidays imported from an .ics file (import another on the Calendars page to replace them).</p>` : null}
    <div class="form-actions">
      <button type="submit" class="primary">Save</button>
      <button type="button" onClick=${() => navigate("/calendars")}>Cancel</button>
    </div>
  </form>`;
}
