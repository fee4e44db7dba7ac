// Chains: the jobs that start jobs (GET /api/scheduler/chains), laid out by dagre and drawn as
// SVG: a box per job with its last outcome (colour and word) and next run, an arrow per link
// labelled with its kind; a box opens its job. "Run chain" runs a job that starts others.
import { html, useState } from "../../vendor/htm/standalone.module.js";
import dagre from "../../vendor/dagre/dagre.esm.js";
import { api } from "../api.js";
import { RunDialog } from "../rundialog.js";
import { Empty, Loaded, PageHeader, Time } from "../ui.js";
import { browserZone, formatInZone, useInterval, useResource, utcText } from "../util.js";

const NODE = { width: 300, height: 70 };
const KIND_WORDS = { on_success: "success", on_failure: "failure", on_finish: "finish", depends_on: "fan-in" };

/** Node and edge positions from dagre (left to right; one edge per pair and kind). */
export function layout(graph) {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "LR", nodesep: 30, ranksep: 90, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of graph.nodes) g.setNode(node._id, { ...NODE });
  for (const edge of graph.edges) {
    if (g.hasNode(edge.from) && g.hasNode(edge.to)) {
      g.setEdge(edge.from, edge.to, { width: 56, height: 18, labelpos: "c", kind: edge.kind }, edge.kind);
    }
  }
  dagre.layout(g);
  const box = g.graph();
  return {
    width: Math.ceil(box.width || NODE.width), height: Math.ceil(box.height || NODE.height),
    nodes: graph.nodes.map((n) => ({ ...n, ...g.node(n._id) })),
    edges: g.edges().map((e) => ({ from: e.v, to: e.w, ...g.edge(e) })),
  };
}

const statusWord = (node) => node.last_status || "no runs yet";
const nextWords = (node) => (node.next_run_time ? `next ${formatInZone(node.next_run_time, browserZone())}` : node.is_paused ? "paused" : "no next run");
const clip = (text, length) => (text.length > length ? `${text.slice(0, length - 1)}…` : text);

function Graph({ drawn }) {
  const path = (points) => points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
  return html`<div class="chain-graph"><svg role="group" aria-label="Chain graph" data-testid="chain-graph"
      viewBox=${`0 0 ${drawn.width} ${drawn.height}`} width=${drawn.width} height=${drawn.height}>
    <defs><marker id="chain-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
      <path d="M0,0 L10,5 L0,10 z" class="chain-arrowhead" /></marker></defs>
    ${drawn.edges.map((e) => html`<g key=${`${e.from}-${e.to}-${e.kind}`} class=${`chain-edge kind-${e.kind}`} data-from=${e.from} data-to=${e.to} data-kind=${e.kind}>
      <path d=${path(e.points)} marker-end="url(#chain-arrow)" />
      <text x=${e.x} y=${e.y + 4} text-anchor="middle">${KIND_WORDS[e.kind] || e.kind}</text></g>`)}
    ${drawn.nodes.map((n) => {
      const x = n.x - NODE.width / 2;
      const y = n.y - NODE.height / 2;
      const status = n.last_status || "none";
      return html`<a key=${n._id} href=${`#/jobs/${n._id}`} class=${`chain-node s-node-${status}`} data-job-id=${n._id}
          aria-label=${`${n.name}: last run ${statusWord(n)}, ${nextWords(n)}`}>
        <title>${n.next_run_time ? `${n.name} · next run ${utcText(n.next_run_time)}` : n.name}</title>
        <rect x=${x} y=${y} width=${NODE.width} height=${NODE.height} rx="8" />
        <rect x=${x} y=${y} width="8" height=${NODE.height} rx="3" class=${`fill-${status} chain-stripe`} />
        <text x=${x + 18} y=${y + 22} class="chain-name">${clip(n.name, 32)}</text>
        <text x=${x + 18} y=${y + 42} class="chain-status">${statusWord(n)}${n.is_paused ? " · paused" : ""}</text>
        <text x=${x + 18} y=${y + 60} class="chain-next">${clip(nextWords(n), 42)}</text>
      </a>`;
    })}
  </svg></div>`;
}

export function ChainsPage() {
  const [state, reload] = useResource((background) => api.get("/api/scheduler/chains", null, { quiet: background }), []);
  useInterval(() => reload(true), 5000);
  const [running, setRunning] = useState(null); // the job whose Run dialog is open
  const runChain = async (id) => {
    try {
      setRunning((await api.get(`/api/scheduler/jobs/${id}`)).data);
    } catch {
      // the API client already showed the error
    }
  };
  return html`<section class="page">
    <${PageHeader} title="Chains" />
    <${Loaded} state=${state} reload=${reload}>${(graph) => {
      if (!graph.nodes.length) {
        return html`<${Empty}><p>No job starts another yet.</p>
          <p>Choose “On success, start” (or failure, finish, fan-in) in a job's form to chain jobs; they show here.</p><//>`;
      }
      const drawn = layout(graph);
      const starters = new Set(graph.edges.filter((e) => e.kind !== "depends_on").map((e) => e.from));
      return html`<${Graph} drawn=${drawn} />
        <p class="muted small">Arrows go from a job to the jobs its runs start; “fan-in” arrows point at a job that waits for all of them.
          Times in ${browserZone()}.</p>
        <section class="panel" aria-labelledby="chain-jobs-title">
          <h2 id="chain-jobs-title">Jobs in chains</h2>
          <div class="table-wrap"><table data-testid="chain-jobs">
            <thead><tr><th scope="col">Job</th><th scope="col">Last run</th><th scope="col">Next run</th><th scope="col">Starts</th>
              <th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
            <tbody>${graph.nodes.map((n) => html`<tr key=${n._id}>
              <td><a href=${`#/jobs/${n._id}`}>${n.name}</a></td>
              <td>${n.last_execution_id ? html`<a href=${`#/executions/${n.last_execution_id}`}>${statusWord(n)}</a>` : statusWord(n)}</td>
              <td><${Time} value=${n.next_run_time} /></td>
              <td>${graph.edges.filter((e) => e.from === n._id).map((e) => `${graph.nodes.find((m) => m._id === e.to)?.name || e.to} (${KIND_WORDS[e.kind] || e.kind})`).join(", ") || html`<span class="muted">—</span>`}</td>
              <td>${starters.has(n._id) ? html`<button type="button" class="small" aria-label=${`Run chain from ${n.name}`} onClick=${() => runChain(n._id)}>Run chain</button>` : null}</td>
            </tr>`)}</tbody>
          </table></div>
        </section>`;
    }}<//>
    ${running ? html`<${RunDialog} job=${running} close=${() => { setRunning(null); reload(true); }} />` : null}
  </section>`;
}
