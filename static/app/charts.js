// Charts drawn as SVG and CSS grid: stacked bars by status, the forecast heatmap and a bar chart
// of durations. Colours come from CSS classes (fill-<status>), so they follow light and dark.
import { html, useEffect, useRef, useState } from "../vendor/htm/standalone.module.js";
import { STATUSES, formatDuration, formatLocal } from "./util.js";

const H = 200;

/** The width its box has on screen, so SVG text keeps its size from 390 px to 1400 px. */
function useWidth() {
  const ref = useRef(null);
  const [width, setWidth] = useState(720);
  useEffect(() => {
    const box = ref.current;
    if (!box) return undefined;
    const observer = new ResizeObserver(() => setWidth(Math.max(240, Math.round(box.clientWidth))));
    observer.observe(box);
    return () => observer.disconnect();
  }, []);
  return [ref, width];
}
const PAD = { left: 36, right: 8, top: 8, bottom: 22 };

function niceMax(value) {
  if (value <= 5) return 5;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 2.5, 5, 10].find((s) => s * power >= value / 1) * power;
  return Math.ceil(value / step) * step;
}

/** Stacked bars: buckets = [{start, counts: {status: n}, total}], labelled by `label(bucket)`. */
export function StackedBars({ buckets, label, title, tickEvery = 6 }) {
  const [ref, W] = useWidth();
  const every = W < 500 ? tickEvery * 2 : tickEvery;
  const max = niceMax(Math.max(1, ...buckets.map((b) => b.total)));
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const slot = innerW / buckets.length;
  const barW = Math.max(2, slot * 0.75);
  const y = (v) => PAD.top + innerH - (v / max) * innerH;
  const present = STATUSES.filter((s) => buckets.some((b) => b.counts[s]));
  return html`<figure class="chart" ref=${ref}>
    <svg viewBox=${`0 0 ${W} ${H}`} role="img" aria-label=${title}>
      ${[0, max / 2, max].map(
        (v) => html`<g key=${v}><line class="grid" x1=${PAD.left} x2=${W - PAD.right} y1=${y(v)} y2=${y(v)} />
          <text class="axis" x=${PAD.left - 4} y=${y(v) + 4} text-anchor="end">${v}</text></g>`,
      )}
      ${buckets.map((b, i) => {
        let base = 0;
        const x = PAD.left + i * slot + (slot - barW) / 2;
        const tip = `${label(b, true)}: ${b.total} execution${b.total === 1 ? "" : "s"}` +
          STATUSES.filter((s) => b.counts[s]).map((s) => `\n${s}: ${b.counts[s]}`).join("");
        return html`<g key=${b.start}>
          <rect class="hit" x=${PAD.left + i * slot} y=${PAD.top} width=${slot} height=${innerH}><title>${tip}</title></rect>
          ${STATUSES.filter((s) => b.counts[s]).map((s) => {
            const top = y(base + b.counts[s]);
            const rect = html`<rect class=${`fill-${s}`} x=${x} y=${top} width=${barW} height=${Math.max(1, y(base) - top)}><title>${tip}</title></rect>`;
            base += b.counts[s];
            return rect;
          })}
          ${i % every === 0 ? html`<text class="axis" x=${x + barW / 2} y=${H - 6} text-anchor="middle">${label(b, false)}</text>` : null}
        </g>`;
      })}
    </svg>
    <figcaption class="legend">
      ${present.length ? present.map((s) => html`<span key=${s}><i class=${`swatch bg-${s}`}></i>${s}</span>`) : html`<span class="muted">No executions in this period.</span>`}
    </figcaption>
  </figure>`;
}

/** Durations of runs, oldest first, coloured by status. */
export function DurationBars({ runs }) {
  const [ref, W] = useWidth();
  const timed = runs.filter((r) => r.duration_ms !== null && r.duration_ms !== undefined).slice().reverse();
  if (!timed.length) return html`<figure class="chart" ref=${ref}><p class="muted">No finished runs to chart yet.</p></figure>`;
  const max = Math.max(1, ...timed.map((r) => r.duration_ms));
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const slot = innerW / Math.max(timed.length, 10);
  const barW = Math.max(2, slot * 0.7);
  return html`<figure class="chart" ref=${ref}>
    <svg viewBox=${`0 0 ${W} ${H}`} role="img" aria-label="Run durations, oldest first">
      <line class="grid" x1=${PAD.left} x2=${W - PAD.right} y1=${PAD.top} y2=${PAD.top} />
      <text class="axis" x=${PAD.left - 4} y=${PAD.top + 8} text-anchor="end">${formatDuration(max)}</text>
      <line class="grid" x1=${PAD.left} x2=${W - PAD.right} y1=${PAD.top + innerH} y2=${PAD.top + innerH} />
      ${timed.map((r, i) => {
        const h = Math.max(1, (r.duration_ms / max) * innerH);
        return html`<rect key=${r._id} class=${`fill-${r.status}`} x=${PAD.left + i * slot} y=${PAD.top + innerH - h} width=${barW} height=${h}>
          <title>${`${formatLocal(r.started_at || r.created_at)}: ${r.status}, ${formatDuration(r.duration_ms)}`}</title></rect>`;
      })}
    </svg>
    <figcaption class="muted">Duration of the latest ${timed.length} finished runs, oldest on the left.</figcaption>
  </figure>`;
}

const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric" });
const minuteFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

/** The forecast as days (rows, the browser's zone) x hours (columns). */
export function Heatmap({ forecast }) {
  const cells = new Map();
  const days = [];
  for (const bucket of forecast.buckets) {
    const start = new Date(bucket.start);
    const day = new Date(start.getFullYear(), start.getMonth(), start.getDate()).getTime();
    if (!days.includes(day)) days.push(day);
    const key = `${day}:${start.getHours()}`;
    const cell = cells.get(key) || { runs: 0, jobs: 0, excluded: 0, peak: null, start };
    cell.runs += bucket.runs;
    cell.jobs = Math.max(cell.jobs, bucket.jobs);
    cell.excluded += bucket.excluded || 0;
    if (bucket.peak && (!cell.peak || bucket.busiest_minute.starts > cell.peak.starts)) cell.peak = bucket.busiest_minute;
    cells.set(key, cell);
  }
  // Colour by comparison with a typical hour (the median of hours with runs), so a pile-up
  // stands out even when small jobs run every few minutes all day.
  const counts = [...cells.values()].map((c) => c.runs);
  const max = Math.max(0, ...counts);
  const busy = counts.filter((n) => n > 0).sort((a, b) => a - b);
  const typical = busy.length ? busy[Math.floor((busy.length - 1) / 2)] : 0;
  const level = (runs) => {
    if (runs === 0) return 0;
    if (runs >= 2 * typical && runs > typical + 2) return 5;
    if (runs > 1.5 * typical) return 4;
    if (runs > 1.2 * typical) return 3;
    return runs > typical ? 2 : 1;
  };
  const hours = Array.from({ length: 24 }, (_, h) => h);
  return html`<div class="heatmap-wrap">
    <div class="heatmap" role="table" aria-label="Scheduled runs per hour, next 7 days">
      <div class="hm-row" role="row">
        <span class="hm-day" role="columnheader"></span>
        ${hours.map((h) => html`<span key=${h} class="hm-hour" role="columnheader">${h % 3 === 0 ? String(h).padStart(2, "0") : ""}</span>`)}
      </div>
      ${days.map(
        (day) => html`<div key=${day} class="hm-row" role="row">
          <span class="hm-day" role="rowheader">${dayFormat.format(new Date(day))}</span>
          ${hours.map((h) => {
            const cell = cells.get(`${day}:${h}`);
            if (!cell) return html`<span key=${h} class="hm-cell out" role="cell"></span>`;
            const tip = `${dayFormat.format(new Date(day))} ${String(h).padStart(2, "0")}:00 — ${cell.runs} run${cell.runs === 1 ? "" : "s"} of ${cell.jobs} job${cell.jobs === 1 ? "" : "s"}` +
              (cell.excluded ? `, ${cell.excluded} excluded by calendars` : "") +
              (cell.peak ? `; peak: ${cell.peak.starts} starts at ${minuteFormat.format(new Date(cell.peak.at))}` : "");
            return html`<span key=${h} class=${`hm-cell l${level(cell.runs)}${cell.peak ? " peak" : ""}`} role="cell" title=${tip} aria-label=${tip}
              data-peak=${cell.peak ? "true" : undefined}>${cell.peak ? "!" : level(cell.runs) === 5 ? "▲" : ""}</span>`;
          })}
        </div>`,
      )}
    </div>
    <p class="legend">
      <span><i class="swatch hm-cell l0"></i>no runs</span>
      <span><i class="swatch hm-cell l1"></i>typical hour (${typical} run${typical === 1 ? "" : "s"})</span>
      <span><i class="swatch hm-cell l3"></i>busier</span>
      <span><i class="swatch hm-cell l5"></i>pile-up: twice a typical hour or more (▲); the busiest hour has ${max}</span>
      <span><i class="swatch hm-cell l1 peak"></i>peak (!): a minute with more than ${forecast.peak_threshold} starts</span>
      ${forecast.total_excluded ? html`<span data-testid="forecast-excluded">${forecast.total_excluded} run${forecast.total_excluded === 1 ? "" : "s"} excluded by calendars (hover an hour for its count)</span>` : null}
      ${forecast.capped_jobs ? html`<span class="warn">${forecast.capped_jobs} job(s) fire more than ${forecast.per_job_limit} times; their counts are lower bounds.</span>` : null}
    </p>
  </div>`;
}
