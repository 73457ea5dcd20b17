// emunet ui: draws /api/map as SVG, lists /api/flows and the live /api/events stream, and
// draws a trace (/api/trace) as a path. Plain DOM, no libraries, no build step.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const MAX_FLOWS = 200;  // flows kept (and shown when paused)
// Rows in the page while live: the table's height on a 1080p screen (two at 1280x800). Every
// row in the table is laid out and painted again when a batch shifts them (measured: 200 rows
// cost the renderer twice what 50 do), and rows that move every second are read by pausing,
// which shows the last MAX_FLOWS. (server.py's LIVE_OTHERS: how many a batch brings.)
const LIVE_ROWS = 30;
const DROP_SHOW_MS = 15000;
const W = 1000;

const ui = {
  map: null, pos: new Map(), known: null, drops: [], flows: [], seen: new Set(),
  source: null, paused: false, trace: null, params: new URLSearchParams(), skipped: 0,
  mapText: "", dropsDrawn: null, queued: false,
};

function el(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function h(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  if (text !== undefined) e.textContent = text;
  return e;
}
function cut(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }

// ---- the map ------------------------------------------------------------------------------

function layoutPods(n, width) {
  // roomy boxes while they fit, then compact ones (200 pods stay on screen)
  const roomy = n <= 12;
  const cw = roomy ? 150 : 62, ch = roomy ? 50 : 18, gap = roomy ? 10 : 4;
  const cols = Math.max(1, Math.floor((width - 20 + gap) / (cw + gap)));
  return { roomy, cw, ch, gap, cols, rows: Math.ceil(n / cols) };
}

function renderMap(m) {
  const svg = document.getElementById("map");
  const focused = document.activeElement && document.activeElement.closest &&
    document.activeElement.closest("#map g.pod");
  const refocus = focused ? focused.dataset.ref : null;
  svg.replaceChildren();
  ui.pos.clear();
  ui.dropsDrawn = null;  // a new, empty #drops
  const defs = el("defs");
  const mk = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  mk.append(el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#6a3fb5" }));
  defs.append(mk);
  svg.append(defs);
  const previous = ui.known;
  ui.known = new Set(m.pods.map(p => p.ref));

  // Services along the top
  const svcs = m.services.filter(s => s.cluster_ip && s.cluster_ip !== "None");
  const sw = 178, sh = 34, sg = 8, perRow = Math.floor((W - 20 + sg) / (sw + sg));
  const svcG = el("g", { id: "services" });
  svcs.forEach((s, i) => {
    const x = 10 + (i % perRow) * (sw + sg), y = 8 + Math.floor(i / perRow) * (sh + sg);
    const g = el("g", { class: "svc", "data-ref": s.ref, "data-ip": s.cluster_ip });
    const ports = s.ports.map(p => `${p.port}/${p.protocol}`).join(",");
    g.append(el("title", {}, `Service ${s.ref} ${s.type} ${s.cluster_ip} ports ${ports}; ` +
      `endpoints: ${s.endpoints.map(e => `${e.ip}:${e.port}${e.ready ? "" : " (not ready)"}`)
        .join(", ") || "none"}`));
    g.append(el("rect", { x, y, width: sw, height: sh }));
    g.append(el("text", { class: "name", x: x + 8, y: y + 14 }, cut(`⇄ ${s.name}`, 26)));
    g.append(el("text", { class: "ip", x: x + 8, y: y + 28 }, cut(`${s.cluster_ip} ${ports}`, 30)));
    svcG.append(g);
    ui.pos.set("svc:" + s.ref, { x, y, w: sw, h: sh, ip: s.cluster_ip });
  });
  const svcRows = Math.ceil(svcs.length / perRow);
  const top = 8 + svcRows * (sh + sg) + 46;

  // nodes side by side, pods inside
  const n = Math.max(1, m.nodes.length), ng = 16;
  const nw = (W - 20 - ng * (n - 1)) / n;
  let bottom = top;
  const nodesG = el("g", { id: "nodes" });
  const byNode = new Map(m.nodes.map(nd => [nd.name, []]));
  for (const p of m.pods) (byNode.get(p.node) || []).push(p);
  const lay = layoutPods(Math.max(...[...byNode.values()].map(a => a.length), 1), nw);
  const nh = 46 + lay.rows * (lay.ch + lay.gap) + 12;
  m.nodes.forEach((nd, i) => {
    const x = 10 + i * (nw + ng);
    const g = el("g", { class: "node" + (nd.stopped ? " stopped" : ""), "data-name": nd.name,
      "data-underlay-ip": nd.underlay_ip, "data-pod-cidr": nd.pod_cidr });
    g.append(el("title", {}, `node ${nd.name}: underlay ${nd.underlay_ip}, pods ` +
      `${nd.pod_cidr}, gateway ${nd.gateway_ip}${nd.stopped ? " (STOPPED)" : ""}`));
    g.append(el("rect", { class: "box", x, y: top, width: nw, height: nh, rx: 8 }));
    g.append(el("text", { class: "title", x: x + 10, y: top + 18 },
      nd.name + (nd.stopped ? "  ■ stopped" : "")));
    g.append(el("text", { class: "sub", x: x + 10, y: top + 34 },
      `eth0 ${nd.underlay_ip} · pods ${nd.pod_cidr} · agent`));
    (byNode.get(nd.name) || []).forEach((p, j) => {
      const px = x + 10 + (j % lay.cols) * (lay.cw + lay.gap);
      const py = top + 44 + Math.floor(j / lay.cols) * (lay.ch + lay.gap);
      g.append(podBox(p, px, py, lay, previous));
    });
    nodesG.append(g);
    ui.pos.set("node:" + nd.name, { x, y: top, w: nw, h: nh });
  });
  bottom = top + nh;

  // the underlay: a wire under the nodes, each node's eth0 on it
  const uy = bottom + 34;
  const under = el("g", { id: "underlay" });
  under.append(el("line", { class: "underlay", x1: 10, y1: uy, x2: W - 10, y2: uy }));
  m.nodes.forEach(nd => {
    const p = ui.pos.get("node:" + nd.name);
    const cx = p.x + p.w / 2;
    under.append(el("line", { class: "underlay", x1: cx, y1: bottom, x2: cx, y2: uy }));
  });
  under.append(el("text", { class: "underlay-label", x: 12, y: uy + 16 },
    `underlay ${m.cluster.underlay_cidr} · VXLAN VNI ${m.cluster.vxlan_vni} on UDP ` +
    `${m.cluster.vxlan_port}`));
  ui.underlayY = uy;

  // Service -> endpoint arrows (behind the boxes' text, above the node fill)
  const edges = el("g", { id: "svc-edges" });
  for (const s of svcs) {
    const sp = ui.pos.get("svc:" + s.ref);
    for (const e of s.endpoints) {
      const pp = e.pod && ui.pos.get(e.pod);
      if (!sp || !pp) continue;
      edges.append(el("path", { class: "svc-edge" + (e.ready ? "" : " notready"),
        d: `M${sp.x + sp.w / 2},${sp.y + sp.h} L${pp.x + pp.w / 2},${pp.y}`,
        "marker-end": "url(#arrow)", "data-service": s.ref, "data-pod": e.pod }));
    }
  }
  svg.append(svcG, nodesG, under, edges, el("g", { id: "drops" }), el("g", { id: "path" }));
  svg.setAttribute("viewBox", `0 0 ${W} ${uy + 28}`);
  document.getElementById("map-meta").textContent =
    `${m.nodes.length} nodes · ${m.pods.length} pods · ${svcs.length} Services · ` +
    `${m.policies.length} policies · generation ${m.generation}`;
  renderDrops();
  if (ui.trace) drawPath(ui.trace);
  fillSources(m);
  if (refocus) {  // a redraw must not throw a keyboard user out of the map
    const again = svg.querySelector(`g.pod[data-ref="${CSS.escape(refocus)}"]`);
    if (again) again.focus();
  }
}

function podBox(p, x, y, lay, previous) {
  const cls = ["pod"];
  if (!p.ready) cls.push("notready");
  if (previous && !previous.has(p.ref)) cls.push("new");
  const labels = Object.entries(p.labels).map(([k, v]) => `${k}=${v}`).join(", ");
  const g = el("g", { class: cls.join(" "), tabindex: 0, role: "button",
    "data-ref": p.ref, "data-ip": p.ip, "data-node": p.node,
    "aria-label": `pod ${p.ref}, IP ${p.ip}, on ${p.node}, ${p.status}; labels ${labels}` +
      (p.policies.length ? `; selected by ${p.policies.join(", ")}` : "") +
      ". Enter: trace from this pod" });
  g.append(el("title", {}, `${p.ref}\nIP ${p.ip} on ${p.node} (${p.status})\nlabels: ` +
    `${labels || "none"}${p.policies.length ? "\npolicies: " + p.policies.join(", ") : ""}`));
  g.append(el("rect", { x, y, width: lay.cw, height: lay.ch }));
  if (lay.roomy) {
    g.append(el("text", { class: "name", x: x + 6, y: y + 15 }, cut(p.name, 22)));
    g.append(el("text", { class: "ip", x: x + 6, y: y + 29 },
      p.ip + (p.ready ? "" : " ◌ " + p.status)));
    if (p.policies.length) {
      g.append(el("text", { class: "pol", x: x + 6, y: y + 43 },
        cut("◈ " + p.policies.map(r => r.split("/")[1]).join(", "), 24)));
    }
  } else {
    g.append(el("text", { class: "ip", x: x + 3, y: y + 13 },
      (p.policies.length ? "◈" : "") + p.ip.split(".").slice(2).join(".")));
  }
  g.addEventListener("keydown", ev => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); traceFrom(p.ref); }
  });
  g.addEventListener("click", () => traceFrom(p.ref));
  ui.pos.set(p.ref, { x, y, w: lay.cw, h: lay.ch, node: p.node, ip: p.ip });
  return g;
}

function podByIp(ip) {
  if (!ui.map) return null;
  return ui.map.pods.find(p => p.ip === ip) || null;
}
function anchorOf(ref, ip) {
  if (ref && ui.pos.get(ref)) return ui.pos.get(ref);
  const p = ip && podByIp(ip);
  if (p) return ui.pos.get(p.ref);
  const s = ui.map && ui.map.services.find(x => x.cluster_ip === ip);
  return s ? ui.pos.get("svc:" + s.ref) : null;
}
function center(a) { return [a.x + a.w / 2, a.y + a.h / 2]; }

// dropped flows: a broken red edge with a ✕ and the policy or reason
function noteDrop(row) {
  const src = anchorOf(row.source_pod, null), dst = anchorOf(row.destination_pod, null);
  if (!src || !dst) return;
  ui.drops.push({ at: Date.now(), src: row.source_pod, dst: row.destination_pod,
    why: row.policy.length ? row.policy.map(p => p.split("/").pop()).join(", ") : row.reason });
  ui.drops = ui.drops.slice(-20);
}
function renderDrops() {
  const g = document.getElementById("drops");
  if (!g) return;
  const now = Date.now();
  ui.drops = ui.drops.filter(d => now - d.at < DROP_SHOW_MS);
  const edges = new Map();  // one broken edge per pair of pods: its newest reason
  for (const d of ui.drops) edges.set(d.src + ">" + d.dst, d);
  // the map is redrawn only when what it shows changed: a repaint of 200 pods is not free
  const drawn = [...edges].map(([k, d]) => k + ":" + d.why).join("|");
  if (drawn === ui.dropsDrawn) return;
  ui.dropsDrawn = drawn;
  g.replaceChildren();
  for (const d of edges.values()) {
    const a = ui.pos.get(d.src), b = ui.pos.get(d.dst);
    if (!a || !b) continue;
    const [x1, y1] = center(a), [x2, y2] = center(b);
    const mx = (x1 + x2) / 2, my = Math.min(y1, y2) - 40;
    const q = el("g", { class: "drop", "data-src": d.src, "data-dst": d.dst });
    // two halves with a gap at the middle: the edge is broken where the packet died
    q.append(el("path", { class: "flow-drop", d: `M${x1},${y1} Q${(x1 + mx) / 2},${my} ${mx - 8},${my + 6}` }));
    q.append(el("path", { class: "flow-drop", d: `M${mx + 8},${my + 6} Q${(mx + x2) / 2},${my} ${x2},${y2}` }));
    q.append(el("text", { class: "flow-drop-mark", x: mx - 6, y: my + 10, "text-anchor": "start" },
      `✕ dropped${d.why ? ": " + d.why : ""}`));
    g.append(q);
  }
}
setInterval(renderDrops, 2000);

// ---- flows --------------------------------------------------------------------------------

function timeOf(iso) {
  const d = new Date(iso);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
function flowKey(r) { return [r.time, r.node, r.source, r.destination, r.summary, r.verdict].join("|"); }

// Flows arrive in batches (the server sends one a second, at once when it holds a drop); they
// are kept newest first in ui.flows and drawn at the next animation frame (none while the tab
// is hidden), only the rows that are new.
function addFlows(rows, live) {
  const fresh = [];
  for (const r of rows) {
    const k = flowKey(r);
    if (ui.seen.has(k)) continue;
    ui.seen.add(k);
    r.key = k;
    fresh.push(r);
    if (live && r.verdict === "DROPPED") noteDrop(r);
  }
  if (!fresh.length) return;
  ui.flows = fresh.reverse().concat(ui.flows);
  for (const r of ui.flows.splice(MAX_FLOWS)) ui.seen.delete(r.key);
  if (!ui.queued) {
    ui.queued = true;
    requestAnimationFrame(renderFlows);
  }
}

function renderFlows() {
  ui.queued = false;
  const tbody = document.querySelector("#flows tbody");
  const n = Math.min(ui.paused ? MAX_FLOWS : LIVE_ROWS, ui.flows.length);
  // the table holds ui.flows[k, k + rows): k new flows went in front of it
  const first = tbody.firstElementChild;
  let k = first ? ui.flows.findIndex(r => r.key === first.dataset.key) : ui.flows.length;
  if (k < 0) k = ui.flows.length;
  if (k >= n) tbody.replaceChildren();
  const frag = document.createDocumentFragment();
  for (const r of ui.flows.slice(0, Math.min(k, n))) frag.append(flowRow(r));
  tbody.prepend(frag);
  while (tbody.rows.length > n) tbody.lastElementChild.remove();
  const more = document.createDocumentFragment();
  for (const r of ui.flows.slice(tbody.rows.length, n)) more.append(flowRow(r));
  tbody.append(more);  // grown: paused, the older flows kept
  renderDrops();
  const count = document.getElementById("flow-count");
  const text = `${n} shown` + (ui.skipped ? ` · ${ui.skipped} more not listed live ` +
    `(every drop is; pause shows the last ${MAX_FLOWS}; the JSON has all)` : "");
  if (count.textContent !== text) count.textContent = text;
}

function flowRow(r) {
  const dropped = r.verdict === "DROPPED";
  const tr = h("tr", { class: dropped ? "dropped" : "forwarded", "data-verdict": r.verdict });
  tr.dataset.key = r.key;
  tr.dataset.time = r.time;  // when the datapath saw it, and when it was shown: the latency
  tr.dataset.shown = String(r.shown || (r.shown = Date.now()));
  tr.append(h("td", {}, timeOf(r.time)));
  tr.append(h("td", { title: r.source }, r.source));
  tr.append(h("td", { title: r.destination }, r.destination));
  tr.append(h("td", { class: "verdict " + (dropped ? "dropped" : "forwarded") },
    dropped ? `✕ DROPPED${r.reason ? " (" + r.reason + ")" : ""}` : "✓ " + r.verdict));
  tr.append(h("td", { class: "policy" }, r.policy.join(", ")));
  tr.append(h("td", {}, r.backend ? `${r.service} → ${r.backend}` : ""));
  const sum = (r.reply ? "↩ " : "") + (r.traced ? "⌖ " : "") + (r.summary || "");
  tr.append(h("td", { title: sum }, sum));
  return tr;
}

async function loadFlows() {
  const err = document.getElementById("filter-error");
  err.textContent = "";
  const q = new URLSearchParams(ui.params);
  q.set("last", "200");
  const r = await fetch("/api/flows?" + q);
  const body = await r.json();
  if (!r.ok) { err.textContent = body.error; return false; }
  document.querySelector("#flows tbody").replaceChildren();
  ui.seen.clear();
  ui.flows = [];
  addFlows(body, false);
  renderFlows();
  document.body.dataset.flowsLoaded = "1";  // the history is in (bench/ui.py waits for it)
  return true;
}

function connect() {
  if (ui.source) ui.source.close();
  const conn = document.getElementById("conn");
  const es = new EventSource("/api/events?" + ui.params);
  ui.source = es;
  es.addEventListener("open", () => { conn.textContent = "live"; conn.className = "live"; });
  es.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "down"; });
  es.addEventListener("map", ev => {
    if (ev.data === ui.mapText) return;  // the same map (a reconnect): no redraw
    ui.mapText = ev.data;
    ui.map = JSON.parse(ev.data);
    renderMap(ui.map);
  });
  es.addEventListener("flows", ev => {
    const batch = JSON.parse(ev.data);
    ui.skipped += batch.skipped;
    if (!ui.paused) addFlows(batch.rows, true);
  });
}

document.getElementById("filters").addEventListener("submit", async ev => {
  ev.preventDefault();
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(ev.target)) if (v) q.append(k, v);
  const before = ui.params;
  ui.params = q;
  if (await loadFlows()) {
    connect();
    const dl = new URLSearchParams(q); dl.set("download", "1"); dl.set("last", "0");
    document.getElementById("dl-flows").href = "/api/flows?" + dl;
  } else {
    ui.params = before;
  }
});
document.getElementById("pause").addEventListener("click", ev => {
  ui.paused = !ui.paused;
  ev.target.setAttribute("aria-pressed", String(ui.paused));
  ev.target.textContent = ui.paused ? "resume" : "pause";
  renderFlows();  // paused: the last 200 flows; live again: the newest few
});
// A hidden tab neither draws nor keeps a stream open (the server then reads no flows); shown
// again it loads the flows it missed (the last 200, as on a first load) and goes live.
document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    if (ui.source) ui.source.close();
    ui.source = null;
  } else if (!ui.source) {
    loadFlows().then(ok => { if (ok) connect(); });
  }
});

// ---- the journey --------------------------------------------------------------------------

function fillSources(m) {
  const sel = document.getElementById("trace-from");
  const keep = sel.value;
  sel.replaceChildren();
  for (const p of m.pods) sel.append(h("option", { value: p.ref }, `${p.ref} (${p.ip})`));
  const want = keep || (m.pods.find(p => p.name === "frontend-client") || m.pods[0] || {}).ref;
  if (want) sel.value = want;
}

function traceFrom(ref) {
  document.getElementById("trace-from").value = ref;
  document.getElementById("trace-dest").focus();
}

document.getElementById("trace-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const [namespace, pod] = String(f.get("from")).split("/");
  const status = document.getElementById("trace-status");
  const go = document.getElementById("trace-go");
  status.textContent = `tracing ${f.get("from")} → ${f.get("dest")}…`;
  go.disabled = true;
  try {
    const r = await fetch("/api/trace", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ namespace, pod, dest: f.get("dest"), protocol: f.get("protocol") || null }) });
    const body = await r.json();
    if (!r.ok) { status.textContent = "✕ " + body.error; return; }
    ui.trace = body;
    renderJourney(body);
    drawPath(body);
  } catch (e) {
    status.textContent = "✕ the server did not answer: " + e;
  } finally {
    go.disabled = false;
  }
});

function renderJourney(t) {
  const status = document.getElementById("trace-status");
  status.replaceChildren();
  const res = t.result || {};
  status.append(h("span", { class: t.failed ? "error" : "" },
    `${t.failed ? "✕" : "✓"} ${t.pod} → ${t.dest}: ${res.result}` +
    (res.ms !== undefined ? ` in ${res.ms} ms` : "")));
  const a = h("a", { href: `/api/trace/${t.id}.pcap`, download: "" }, "⤓ pcap of this flow");
  status.append(a);
  const j = document.getElementById("journey");
  j.replaceChildren();
  for (const q of t.dns) {
    j.append(h("div", { class: "dns" }, `[L7 DNS] ${q.name} → ${q.ips.join(", ") || q.rcode}` +
      ` (asked ${q.server}${q.ms !== undefined ? ", " + q.ms + " ms" : ""})`));
  }
  if (t.dns_note) j.append(h("div", { class: "dns" }, "[state] " + t.dns_note));
  for (const p of t.paths) {
    j.append(h("h3", {}, p.reply ? "↩ the reply" : "→ the request" +
      (p.dropped ? " (✕ dropped)" : "")));
    const ol = h("ol", { class: p.reply ? "reply" : "request" });
    let node = null;
    for (const hop of p.hops) {
      const li = h("li", { class: node !== null && hop.node !== node ? "nodechange" : "" });
      node = hop.node;
      const b = h("button", { type: "button", class: "hop step-" + hop.step, "data-step": hop.step,
        "data-n": hop.n, "aria-pressed": "false",
        "aria-label": `hop ${hop.n}, ${hop.layer}, ${hop.node}: ${hop.text}. Enter: its headers` });
      b.append(h("span", { class: "layer" }, hop.layer));
      b.append(h("span", { class: "node" }, `${hop.n}. ${hop.node}`));
      b.append(document.createTextNode((hop.step === "drop" ? "✕ " : "") + hop.text));
      b.addEventListener("click", () => showHop(t.id, hop.n, b));
      li.append(b);
      ol.append(li);
    }
    j.append(ol);
  }
  if (!t.paths.length) j.append(h("p", {}, "no datapath records of the probe (is the node agent running?)"));
  if (t.more_packets) j.append(h("p", { class: "dns" }, `… and ${t.more_packets} more packets of this flow (in the pcap)`));
  document.getElementById("hop-detail").replaceChildren();
}

async function showHop(id, n, button) {
  for (const b of document.querySelectorAll(".hop[aria-pressed=true]")) b.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-pressed", "true");
  const box = document.getElementById("hop-detail");
  box.textContent = "decoding…";
  const r = await fetch(`/api/hop/${id}/${n}`);
  const body = await r.json();
  box.replaceChildren();
  if (!r.ok) { box.textContent = "✕ " + body.error; return; }
  box.append(h("div", {}, `hop ${n} (${body.hop.layer}, ${body.hop.node}): headers at this point`));
  const table = h("table", {});
  for (const layer of body.layers) {
    const tr = h("tr", {}); tr.append(h("th", { class: "layer", colspan: 2 }, layer.layer)); table.append(tr);
    for (const [k, v] of Object.entries(layer.fields)) {
      const row = h("tr", {});
      row.append(h("td", {}, k)); row.append(h("td", {}, String(v)));
      table.append(row);
    }
  }
  box.append(table);
  const det = h("details", {}); det.append(h("summary", {}, "Scapy show()"));
  det.append(h("pre", {}, body.show)); box.append(det);
  box.append(h("p", { class: "note" }, body.note));
}

function drawPath(t) {
  const g = document.getElementById("path");
  if (!g || !ui.map) return;
  g.replaceChildren();
  for (const e of document.querySelectorAll(".pod.onpath")) e.classList.remove("onpath");
  const req = t.paths.find(p => !p.reply);
  if (!req) return;
  const dnat = req.hops.find(x => x.step === "dnat");
  const dstIp = dnat && dnat.backend ? dnat.backend.split(":")[0] : (t.probe || {}).dst;
  const src = ui.pos.get(t.pod);
  const dstPod = podByIp(dstIp);
  const dst = dstPod ? ui.pos.get(dstPod.ref) : anchorOf(null, dstIp);
  if (!src) return;
  const nodes = [...new Set(req.hops.map(x => x.node))];
  const pts = [center(src)];
  const encap = req.hops.find(x => x.step === "encap");
  nodes.forEach((nd, i) => {  // into each node's agent; between nodes, over the underlay
    const np = ui.pos.get("node:" + nd);
    if (!np) return;
    const cx = np.x + np.w / 2;
    if (i > 0) pts.push([cx, ui.underlayY]);
    pts.push([cx, np.y + np.h - 4]);
    if (i < nodes.length - 1) pts.push([cx, ui.underlayY]);
  });
  if (!req.dropped && dst) pts.push(center(dst));
  g.append(el("polyline", { class: "path-line", points: pts.map(p => p.join(",")).join(" "),
    "data-nodes": nodes.join(" ") }));
  if (encap && encap.outer) {
    g.append(el("text", { class: "path-label", x: 20, y: ui.underlayY - 6 },
      `VXLAN ${encap.outer.src} → ${encap.outer.dst} UDP ${encap.outer.dport} VNI ${encap.outer.vni}`));
  }
  if (req.dropped) {
    const last = pts[pts.length - 1];
    g.append(el("text", { class: "flow-drop-mark", x: last[0] + 6, y: last[1] - 6 }, "✕ dropped here"));
  }
  if (dnat) {
    const [x, y] = dst ? center(dst) : pts[pts.length - 1];
    g.append(el("text", { class: "path-label", x: x - 50, y: y + 40 }, `DNAT → ${dnat.backend}`));
  }
  for (const ref of [t.pod, dstPod && dstPod.ref]) {
    const e = ref && document.querySelector(`.pod[data-ref="${CSS.escape(ref)}"]`);
    if (e) e.classList.add("onpath");
  }
}

// ---- start --------------------------------------------------------------------------------
connect();
loadFlows();
