// pipemesh lineage web view: plain JavaScript and SVG, no dependencies.
// It polls /api/v1/lineage, lays the graph out in layers from left to
// right (producers, topics, consumer groups and jobs, datasets), and keeps
// the user's pan, zoom, selection and filters across refreshes and in the
// URL, so a link shows the same view.
'use strict';

const REFRESH_MS = 3000;
const NODE_W = 200, NODE_H = 46, LAYER_GAP = 350, ROW_GAP = 40;
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
const svg = $('graph'), viewport = $('viewport'), edgesG = $('edges'), nodesG = $('nodes');
const panel = $('panel'), panelBody = $('panel-body'), statusEl = $('status');

// View state, mirrored in the URL.
const state = { since: '5m', depth: '', node: '', q: '', x: null, y: null, k: 1 };
let graph = { nodes: [], edges: [] };
let positions = new Map();
let fitted = false;

function readURL() {
  const p = new URLSearchParams(location.search);
  if (p.has('since')) state.since = p.get('since');
  state.depth = p.get('depth') || '';
  state.node = p.get('node') || '';
  state.q = p.get('q') || '';
  for (const f of ['x', 'y', 'k']) {
    const v = parseFloat(p.get(f));
    if (Number.isFinite(v)) state[f] = v;
  }
  fitted = state.x !== null && state.y !== null;
  if (state.x === null) { state.x = 0; state.y = 0; }
  $('since').value = state.since;
  $('depth').value = state.depth;
  $('search').value = state.q;
  // A linked selection opens the panel at once, so the first fit leaves
  // room for it.
  if (state.node) panel.classList.add('open');
}

let urlTimer = null;
function writeURL() {
  clearTimeout(urlTimer);
  urlTimer = setTimeout(() => {
    const p = new URLSearchParams();
    p.set('since', state.since);
    if (state.depth) p.set('depth', state.depth);
    if (state.node) p.set('node', state.node);
    if (state.q) p.set('q', state.q);
    p.set('x', state.x.toFixed(0));
    p.set('y', state.y.toFixed(0));
    p.set('k', state.k.toFixed(3));
    history.replaceState(null, '', location.pathname + '?' + p.toString());
  }, 150);
}

// ---- formatting ----
function fmtBytes(v) {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
}
function fmtCount(v) {
  const units = ['', 'k', 'M', 'G'];
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return (i === 0 ? (Number.isInteger(v) ? v.toString() : v.toFixed(1)) : v.toFixed(v < 10 ? 2 : 1) + units[i]);
}
function fmtRate(e) { return fmtBytes(e.bytes_per_second) + '/s · ' + fmtCount(e.records_per_second) + ' rec/s'; }
function fmtTime(s) {
  const d = new Date(s);
  return isNaN(d) || d.getFullYear() < 2000 ? '–' : d.toLocaleString();
}
const typeLabel = { application: 'application', topic: 'topic', group: 'consumer group', job: 'job', flight_dataset: 'Flight dataset' };

// ---- layout ----
// Layers: the longest path from a source, after breaking cycles, so data
// flows left to right. Order within a layer: barycenter sweeps to reduce
// crossings, starting from a stable order by type and name.
function layout(nodes, edges) {
  const ids = new Set(nodes.map((n) => n.id));
  const out = new Map(), inc = new Map();
  for (const id of ids) { out.set(id, []); inc.set(id, []); }
  const sorted = [...nodes].sort((a, b) => a.id.localeCompare(b.id));
  for (const e of edges) {
    if (ids.has(e.from) && ids.has(e.to) && e.from !== e.to && !out.get(e.from).includes(e.to)) { out.get(e.from).push(e.to); }
  }
  // Break cycles with a DFS from the sources, dropping edges back into the stack.
  const color = new Map(), dag = new Map([...ids].map((id) => [id, []]));
  const indeg = new Map([...ids].map((id) => [id, 0]));
  for (const [, tos] of out) for (const t of tos) indeg.set(t, indeg.get(t) + 1);
  const roots = sorted.filter((n) => indeg.get(n.id) === 0).map((n) => n.id).concat(sorted.map((n) => n.id));
  for (const r of roots) {
    if (color.get(r)) continue;
    const stack = [[r, 0]];
    color.set(r, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const tos = out.get(top[0]);
      if (top[1] < tos.length) {
        const t = tos[top[1]++];
        const c = color.get(t);
        if (c === 1) continue; // back edge
        dag.get(top[0]).push(t);
        if (!c) { color.set(t, 1); stack.push([t, 0]); }
      } else { color.set(top[0], 2); stack.pop(); }
    }
  }
  for (const [f, tos] of dag) for (const t of tos) inc.get(t).push(f);
  const rank = new Map();
  const rankOf = (id) => {
    if (rank.has(id)) return rank.get(id);
    rank.set(id, 0);
    let r = 0;
    for (const p of inc.get(id)) r = Math.max(r, rankOf(p) + 1);
    rank.set(id, r);
    return r;
  };
  // Iterative deepening would be safer for huge graphs; the API caps what
  // we draw by window and depth, so recursion depth stays small.
  for (const n of sorted) rankOf(n.id);
  const layers = [];
  const typeOrder = { application: 0, job: 1, topic: 2, flight_dataset: 3, group: 4 };
  for (const n of sorted) {
    const r = rank.get(n.id);
    (layers[r] = layers[r] || []).push(n);
  }
  for (const l of layers) if (l) l.sort((a, b) => (typeOrder[a.type] - typeOrder[b.type]) || a.name.localeCompare(b.name));
  // An edge that skips layers gets a placeholder in each layer it crosses,
  // so the ordering keeps a lane free for it instead of drawing it through
  // the nodes in between.
  const routes = new Map();
  for (const [f, tos] of [...dag]) {
    for (const t of [...tos]) {
      const span = rank.get(t) - rank.get(f);
      if (span <= 1) continue;
      const chain = [];
      let prev = f;
      dag.set(f, dag.get(f).filter((x) => x !== t));
      inc.set(t, inc.get(t).filter((x) => x !== f));
      for (let r = rank.get(f) + 1; r < rank.get(t); r++) {
        const id = `~${f}\u0000${t}\u0000${r}`;
        const d = { id, type: 'dummy', name: '\uffff' };
        (layers[r] = layers[r] || []).push(d);
        inc.set(id, [prev]);
        dag.set(id, []);
        dag.get(prev).push(id);
        chain.push(id);
        prev = id;
      }
      inc.get(t).push(prev);
      routes.set(`${f}\u0000${t}`, chain);
    }
  }
  const idx = new Map();
  const reindex = () => layers.forEach((l) => l && l.forEach((n, i) => idx.set(n.id, i)));
  reindex();
  const bary = (n, nbrs) => {
    const ps = nbrs.get(n.id).filter((p) => idx.has(p));
    return ps.length ? ps.reduce((s, p) => s + idx.get(p), 0) / ps.length : idx.get(n.id);
  };
  const succ = dag;
  for (let sweep = 0; sweep < 4; sweep++) {
    const down = sweep % 2 === 0;
    const order = down ? layers.map((_, i) => i) : layers.map((_, i) => layers.length - 1 - i);
    for (const li of order) {
      const l = layers[li];
      if (!l) continue;
      const b = new Map(l.map((n) => [n.id, bary(n, down ? inc : succ)]));
      l.sort((a, c) => (b.get(a.id) - b.get(c.id)) || a.name.localeCompare(c.name));
      l.forEach((n, i) => idx.set(n.id, i));
    }
  }
  const pos = new Map();
  layers.forEach((l, li) => {
    if (!l) return;
    const h = l.length * NODE_H + (l.length - 1) * ROW_GAP;
    l.forEach((n, i) => pos.set(n.id, { x: li * LAYER_GAP, y: i * (NODE_H + ROW_GAP) - h / 2, dummy: n.type === 'dummy' }));
  });
  const waypoints = new Map();
  for (const [k, chain] of routes) waypoints.set(k, chain.map((id) => pos.get(id)));
  for (const id of [...pos.keys()]) if (pos.get(id).dummy) pos.delete(id);
  return { pos, waypoints };
}

// ---- drawing ----
function el(name, attrs, parent) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function applyTransform() {
  viewport.setAttribute('transform', `translate(${state.x},${state.y}) scale(${state.k})`);
}

function matches(n) {
  const q = state.q.trim().toLowerCase();
  return q !== '' && (n.name.toLowerCase().includes(q) || n.id.toLowerCase().includes(q));
}

// sameProgram links a consumer group to an application that is probably
// the same program: one client id, principal and host on both (a stream
// processor reads in its group and writes as itself). The link is drawn
// dashed and only guides the layout; the API has no such edge.
function sameProgram(nodes) {
  const links = [];
  const key = (n) => (n.client_ids || []).flatMap((c) => (n.principals || ['']).flatMap((p) => (n.hosts || ['']).map((h) => `${c}\u0000${p}\u0000${h}`)));
  const apps = new Map();
  for (const n of nodes) if (n.type === 'application') for (const k of key(n)) apps.set(k, n.id);
  for (const n of nodes) {
    if (n.type !== 'group') continue;
    const seen = new Set();
    for (const k of key(n)) {
      const a = apps.get(k);
      if (a && !seen.has(a)) { seen.add(a); links.push({ from: n.id, to: a, type: 'same_program' }); }
    }
  }
  return links;
}

// bez is the point at t on the cubic from p0 to p3.
function bez(t, p0, p1, p2, p3) {
  const u = 1 - t;
  return u * u * u * p0 + 3 * u * u * t * p1 + 3 * u * t * t * p2 + t * t * t * p3;
}

function render() {
  const links = sameProgram(graph.nodes);
  const laid = layout(graph.nodes, graph.edges.concat(links));
  positions = laid.pos;
  const outDeg = new Map(), inDeg = new Map();
  for (const e of graph.edges) {
    outDeg.set(e.from, (outDeg.get(e.from) || 0) + 1);
    inDeg.set(e.to, (inDeg.get(e.to) || 0) + 1);
  }
  edgesG.replaceChildren();
  nodesG.replaceChildren();
  if (graph.nodes.length === 0) {
    const t = el('text', { id: 'empty', x: 0, y: 0, 'text-anchor': 'middle' }, nodesG);
    t.textContent = 'No traffic seen in this window yet. Point a Kafka client at the proxy.';
  }
  const maxRate = Math.max(1, ...graph.edges.map((e) => e.bytes_per_second));
  const searching = state.q.trim() !== '';
  const sel = state.node;
  for (const e of graph.edges) {
    const a = positions.get(e.from), b = positions.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    let d, mx, my;
    const via = laid.waypoints.get(`${e.from}\u0000${e.to}`);
    if (via && via.length && x2 > x1) {
      // Through the lane kept free in each layer crossed; the label sits on
      // the first straight stretch, where nothing else runs.
      d = `M${x1},${y1}`;
      let px = x1, py = y1;
      for (const w of via) {
        const wy = w.y + NODE_H / 2, c = (w.x - px) / 2;
        d += ` C${px + c},${py} ${w.x - c},${wy} ${w.x},${wy} L${w.x + NODE_W},${wy}`;
        px = w.x + NODE_W; py = wy;
      }
      const c = (x2 - px) / 2;
      d += ` C${px + c},${py} ${x2 - c},${y2} ${x2},${y2}`;
      mx = via[0].x + NODE_W / 2; my = via[0].y + NODE_H / 2;
    } else if (x2 > x1) {
      const c = (x2 - x1) / 2;
      d = `M${x1},${y1} C${x1 + c},${y1} ${x2 - c},${y2} ${x2},${y2}`;
      // Put the label where the edge runs alone: near the end that does
      // not fan in or out.
      const fanOut = (outDeg.get(e.from) || 0) > 1, fanIn = (inDeg.get(e.to) || 0) > 1;
      const t = fanOut && !fanIn ? 0.72 : fanIn && !fanOut ? 0.28 : 0.5;
      mx = bez(t, x1, x1 + c, x2 - c, x2); my = bez(t, y1, y1, y2, y2);
    } else { // a back edge: loop under the nodes
      const low = Math.max(a.y, b.y) + NODE_H + 50;
      d = `M${x1},${y1} C${x1 + 90},${low} ${x2 - 90},${low} ${x2},${y2}`;
      mx = (x1 + x2) / 2; my = low - 10;
    }
    const idle = e.bytes_per_second === 0 && e.records_per_second === 0;
    const cls = ['edge', e.type];
    if (idle) cls.push('idle');
    if (sel && (e.from === sel || e.to === sel)) cls.push('hot');
    if (searching) cls.push('dim');
    const g = el('g', { class: cls.join(' '), 'data-from': e.from, 'data-to': e.to, 'data-type': e.type }, edgesG);
    const w = idle ? 1.5 : 1.5 + 10 * Math.sqrt(e.bytes_per_second / maxRate);
    el('path', { d, 'stroke-width': w.toFixed(2), 'marker-end': 'url(#arrow)' }, g);
    const title = el('title', {}, g);
    title.textContent = `${e.from} ${e.type} ${e.to}\n${fmtRate(e)}\ntotal ${fmtBytes(e.bytes)}, ${fmtCount(e.records)} records`;
    const label = el('text', { x: mx, y: my - 6, 'text-anchor': 'middle', class: 'rate' }, g);
    label.textContent = idle ? 'idle' : fmtRate(e);
  }
  for (const l of links) {
    const a = positions.get(l.from), b = positions.get(l.to);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    let d = `M${x1},${y1}`, px = x1, py = y1;
    for (const w of laid.waypoints.get(`${l.from}\u0000${l.to}`) || []) {
      const wy = w.y + NODE_H / 2, c = (w.x - px) / 2;
      d += ` C${px + c},${py} ${w.x - c},${wy} ${w.x},${wy} L${w.x + NODE_W},${wy}`;
      px = w.x + NODE_W; py = wy;
    }
    const c = Math.max(40, (x2 - px) / 2);
    d += ` C${px + c},${py} ${x2 - c},${y2} ${x2},${y2}`;
    const g = el('g', { class: 'link' + (searching ? ' dim' : ''), 'data-from': l.from, 'data-to': l.to }, edgesG);
    el('path', { d }, g);
    el('title', {}, g).textContent = 'same client id, principal and host: probably the same program';
  }
  for (const n of graph.nodes) {
    const p = positions.get(n.id);
    const cls = ['node', n.type];
    if (n.id === sel) cls.push('selected');
    if (searching) cls.push(matches(n) ? 'match' : 'dim');
    const g = el('g', { class: cls.join(' '), 'data-id': n.id, transform: `translate(${p.x},${p.y})`, tabindex: 0, role: 'button' }, nodesG);
    el('rect', { width: NODE_W, height: NODE_H, rx: 8 }, g);
    const kind = el('text', { x: 12, y: 17, class: 'kind' }, g);
    kind.textContent = typeLabel[n.type] || n.type;
    const name = el('text', { x: 12, y: 35, class: 'name' }, g);
    name.textContent = n.name.length > 26 ? n.name.slice(0, 25) + '…' : n.name;
    const t = el('title', {}, g);
    t.textContent = n.id;
  }
  if (!fitted && graph.nodes.length) { fit(); fitted = true; }
  applyTransform();
}

function bounds() {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const p of positions.values()) {
    x0 = Math.min(x0, p.x); y0 = Math.min(y0, p.y);
    x1 = Math.max(x1, p.x + NODE_W); y1 = Math.max(y1, p.y + NODE_H);
  }
  return { x0, y0, x1, y1 };
}

function fit() {
  if (!positions.size) return;
  const b = bounds(), r = svg.getBoundingClientRect();
  const free = panel.classList.contains('open') ? r.width - panel.offsetWidth : r.width;
  const k = Math.min(1.5, Math.max(0.1, Math.min((free - 80) / (b.x1 - b.x0), (r.height - 120) / (b.y1 - b.y0 + 60))));
  state.k = k;
  state.x = (free - (b.x1 - b.x0) * k) / 2 - b.x0 * k;
  state.y = (r.height - (b.y1 - b.y0) * k) / 2 - b.y0 * k;
  applyTransform();
  writeURL();
}

function center(id) {
  const p = positions.get(id);
  if (!p) return;
  const r = svg.getBoundingClientRect();
  const free = r.width - (panel.classList.contains('open') ? panel.offsetWidth : 0);
  state.x = free / 2 - (p.x + NODE_W / 2) * state.k;
  state.y = r.height / 2 - (p.y + NODE_H / 2) * state.k;
  applyTransform();
  writeURL();
}

// ---- data ----
function query() {
  const p = new URLSearchParams();
  if (state.since) p.set('since', state.since);
  if (state.node && state.depth) { p.set('node', state.node); p.set('depth', state.depth); }
  return '/api/v1/lineage?' + p.toString();
}

let inflight = false;
async function refresh() {
  if (inflight) return;
  inflight = true;
  try {
    let resp = await fetch(query(), { cache: 'no-store' });
    if (resp.status === 404 && state.node) {
      // The selected node is outside the window: show everything instead.
      resp = await fetch(query().replace(/&?node=[^&]*/, '').replace(/&?depth=[^&]*/, ''), { cache: 'no-store' });
    }
    if (!resp.ok) throw new Error((await resp.json()).error || resp.statusText);
    graph = await resp.json();
    render();
    if (state.node) await showPanel(state.node);
    statusEl.className = '';
    statusEl.textContent = `${graph.nodes.length} nodes, ${graph.edges.length} edges · updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    statusEl.className = 'error';
    statusEl.textContent = 'update failed: ' + err.message + ' (retrying)';
  } finally {
    inflight = false;
  }
}

function row(tbody, cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    if (c instanceof Node) td.appendChild(c); else td.textContent = c;
    if (typeof c === 'string' && /\d/.test(c) && cells.indexOf(c) > 0) td.className = 'num';
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
}

function nodeLink(id) {
  const a = document.createElement('a');
  a.textContent = id;
  a.addEventListener('click', () => { select(id); center(id); });
  return a;
}

async function showPanel(id) {
  const resp = await fetch('/api/v1/lineage/nodes/' + encodeURIComponent(id), { cache: 'no-store' });
  if (!resp.ok) {
    panelBody.textContent = 'This node is no longer in the graph.';
    return;
  }
  const d = await resp.json();
  const n = d.node;
  const body = document.createElement('div');
  const h = document.createElement('h2');
  h.textContent = n.name;
  const kind = document.createElement('div');
  kind.className = 'kind';
  kind.textContent = typeLabel[n.type] || n.type;
  body.append(h, kind);
  const dl = document.createElement('dl');
  const add = (k, v) => {
    if (v === undefined || v === null || v === '' || (Array.isArray(v) && !v.length)) return;
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = Array.isArray(v) ? v.join(', ') : v;
    dl.append(dt, dd);
  };
  add('in', `${fmtBytes(n.bytes_in_per_second)}/s · ${fmtCount(n.records_in_per_second)} rec/s`);
  add('out', `${fmtBytes(n.bytes_out_per_second)}/s · ${fmtCount(n.records_out_per_second)} rec/s`);
  add('first seen', fmtTime(n.first_seen));
  add('last seen', fmtTime(n.last_seen));
  add('principals', n.principals);
  add('client ids', n.client_ids);
  add('client software', n.client_software);
  add('hosts', n.hosts);
  body.appendChild(dl);
  for (const [title, list, other] of [['Data in, from', d.in, 'from'], ['Data out, to', d.out, 'to']]) {
    if (!list.length) continue;
    const h3 = document.createElement('h3');
    h3.textContent = title;
    const table = document.createElement('table');
    const tb = document.createElement('tbody');
    for (const e of list) {
      row(tb, [nodeLink(e[other]), e.type, fmtBytes(e.bytes_per_second) + '/s', fmtCount(e.records_per_second) + ' rec/s']);
      row(tb, ['total', '', fmtBytes(e.bytes), fmtCount(e.records) + ' rec' + (e.errors ? ` · ${e.errors} err` : '')]);
    }
    table.appendChild(tb);
    body.append(h3, table);
  }
  panelBody.replaceChildren(body);
  panel.classList.add('open');
}

function select(id) {
  state.node = id;
  writeURL();
  if (!id) {
    panel.classList.remove('open');
    render();
    return;
  }
  showPanel(id);
  if (state.depth) refresh(); else render();
}

// ---- interaction ----
let drag = null;
svg.addEventListener('mousedown', (ev) => {
  drag = { x: ev.clientX, y: ev.clientY, sx: state.x, sy: state.y, moved: false };
  svg.classList.add('dragging');
});
window.addEventListener('mousemove', (ev) => {
  if (!drag) return;
  const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
  if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
  state.x = drag.sx + dx; state.y = drag.sy + dy;
  applyTransform();
});
window.addEventListener('mouseup', () => {
  if (drag && drag.moved) writeURL();
  svg.classList.remove('dragging');
  setTimeout(() => { drag = null; }, 0);
});
svg.addEventListener('wheel', (ev) => {
  ev.preventDefault();
  const r = svg.getBoundingClientRect();
  const cx = ev.clientX - r.left, cy = ev.clientY - r.top;
  const k = Math.min(4, Math.max(0.05, state.k * Math.exp(-ev.deltaY * 0.0015)));
  state.x = cx - (cx - state.x) * (k / state.k);
  state.y = cy - (cy - state.y) * (k / state.k);
  state.k = k;
  applyTransform();
  writeURL();
}, { passive: false });
svg.addEventListener('click', (ev) => {
  if (drag && drag.moved) return;
  const g = ev.target.closest('.node');
  if (g) select(g.dataset.id);
});
nodesG.addEventListener('keydown', (ev) => {
  const g = ev.target.closest('.node');
  if (g && (ev.key === 'Enter' || ev.key === ' ')) select(g.dataset.id);
});
$('close').addEventListener('click', () => select(''));
$('fit').addEventListener('click', fit);
$('since').addEventListener('change', (ev) => { state.since = ev.target.value; writeURL(); refresh(); });
$('depth').addEventListener('change', (ev) => { state.depth = ev.target.value; writeURL(); refresh(); });
$('search').addEventListener('input', (ev) => { state.q = ev.target.value; writeURL(); render(); });
$('search').addEventListener('keydown', (ev) => {
  if (ev.key !== 'Enter') return;
  const n = graph.nodes.find(matches);
  if (n) { select(n.id); center(n.id); }
});
window.addEventListener('resize', () => { if (!positions.size) fitted = false; });

readURL();
applyTransform();
refresh();
setInterval(refresh, REFRESH_MS);
