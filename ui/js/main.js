// The web UI: the live topology from `/ws/subscriber`, the selected node's metadata, Gremlin
// queries, captures with their flows, and history.

import cytoscape from '../vendor/cytoscape.esm.min.js';
import { Api, Socket } from './api.js';
import { CapturesPanel } from './captures.js';
import { HistoryPanel } from './history.js';
import { edgesPanel, el, nodePanel } from './metadata.js';
import { Graph } from './model.js';
import { TopologyView } from './view.js';

if (window.cytoscapeFcose) cytoscape.use(window.cytoscapeFcose);

const $ = (sel) => document.querySelector(sel);

const metrics = { firstSyncAt: null, firstDrawn: false, firstRenderAt: null, events: 0, lastEventAt: null, layoutMs: null };

const api = Api.fromLocation();
const graph = new Graph();
const params = new URLSearchParams(window.location.search);
const view = new TopologyView($('#graph'), graph, cytoscape, {
  autoCollapseAbove: Number(params.get('collapse_above') || 400),
});

const state = { selected: null, history: null, missedLive: 0, service: null };

// ---------------------------------------------------------------- the live topology socket

let socket = null;

/** The subscription to the live graph (after a login, when the server asks for one). */
function openSocket() {
  socket = new Socket(
    api.wsUrl('/ws/subscriber', [
      ['x-client-type', 'webui'],
      ['x-update-policy', 'partial'],
      ['x-websocket-namespace', 'Graph'],
      ['x-websocket-namespace', 'OnDemandCaptureNotification'],
      ['x-websocket-namespace', 'Alert'],
    ]),
    {
      onOpen: (s) => {
        if (state.history === null) s.send('Graph', 'SyncRequest', {});
      },
      onMessage: onMessage,
      onState: (st) => {
        const c = $('#conn');
        c.textContent = st;
        c.className = st;
      },
    },
  );
  window.skydiveUI.socket = socket;
}

function onMessage(msg) {
  if (msg.Namespace === 'Graph') {
    if (msg.Type === 'SyncReply') {
      if (state.history !== null) return;
      if (msg.Status !== 200) {
        showError(`Synchronisation refused: ${msg.Status} ${JSON.stringify(msg.Obj)}`);
        return;
      }
      if (metrics.firstSyncAt === null) metrics.firstSyncAt = performance.now();
      graph.reset(msg.Obj?.Nodes, msg.Obj?.Edges);
      return;
    }
    if (state.history !== null) {
      state.missedLive++;
      return;
    }
    metrics.events++;
    metrics.lastEventAt = performance.now();
    graph.apply(msg.Type, msg.Obj);
    return;
  }
  if (msg.Namespace === 'OnDemandCaptureNotification') {
    captures?.refresh();
    return;
  }
  if (msg.Namespace === 'Alert') {
    const a = msg.Obj || {};
    notify(`Alert ${a.UUID ?? ''} fired at ${a.Timestamp ? new Date(a.Timestamp).toLocaleTimeString() : ''}`);
  }
}

/**
 * The graph at a past time. Through REST rather than a SyncRequest with `Time`: a large
 * synchronisation is chunked into a SyncReply and a stream of NodeAdded/EdgeAdded that cannot
 * be told apart from live events.
 */
async function graphAt(t) {
  const [nodes, edges] = await Promise.all([api.query(`G.At(${t}).V()`), api.query(`G.At(${t}).E()`)]);
  return { Nodes: nodes || [], Edges: edges || [] };
}

function setHistory(label, t) {
  state.history = t;
  state.missedLive = 0;
  $('#mode').replaceChildren(el('span', {}, label, ' '), el('button', { id: 'back-live', onclick: backToLive }, 'Back to live'));
  $('#mode').className = 'history';
}

function backToLive() {
  state.history = null;
  view.mark(new Map());
  $('#mode').replaceChildren('Live');
  $('#mode').className = 'live';
  socket.send('Graph', 'SyncRequest', {});
}

// ---------------------------------------------------------------- rendering and selection

view.on('rendered', () => {
  if (metrics.firstRenderAt === null && metrics.firstSyncAt !== null && !metrics.firstDrawn) {
    metrics.firstDrawn = true;
    fit();
    // Drawn once the browser has painted the frame.
    requestAnimationFrame(() => setTimeout(() => (metrics.firstRenderAt = performance.now()), 0));
  }
  $('#counts').textContent = `${graph.nodes.size} nodes, ${graph.edges.size} edges (${view.cy.nodes().length} drawn)`;
  if (state.selected && refreshSelected) refreshSelected();
});

let panelTimer = null;
let refreshSelected = null;

function select(id) {
  state.selected = id;
  view.select(id);
  const render = () => {
    if (state.selected === null) {
      $('#node-panel').replaceChildren(el('p', { class: 'muted' }, 'Click a node to see its metadata. Double-click a host or namespace to collapse or expand it.'));
      return;
    }
    $('#node-panel').replaceChildren(
      nodePanel(graph, state.selected, {
        onSelect: (other) => {
          select(other);
          view.focus(other);
        },
        onToggle: (gid) => {
          view.toggle(gid);
          render();
        },
        isCollapsed: (gid) => view.collapsed.has(gid),
      }),
    );
  };
  refreshSelected = () => {
    // Redraw the panel at most twice a second while the node changes.
    if (panelTimer) return;
    panelTimer = setTimeout(() => {
      panelTimer = null;
      render();
    }, 500);
  };
  render();
  if (id !== null) showTab('node');
}

view.on('select', (id) => select(id));
view.on('selectEdges', (ids) => {
  state.selected = null;
  view.select(null);
  $('#node-panel').replaceChildren(
    edgesPanel(graph, ids, {
      onSelect: (id) => {
        select(id);
        view.focus(id);
      },
    }),
  );
  showTab('node');
});
view.on('toggle', () => {
  if (state.selected) refreshSelected?.();
});

// ---------------------------------------------------------------- Gremlin

/** IDs of the nodes and edges in a query result (a graph, or elements). */
export function resultIds(result) {
  const ids = new Set();
  const visit = (x) => {
    if (Array.isArray(x)) x.forEach(visit);
    else if (x && typeof x === 'object') {
      if (Array.isArray(x.Nodes) || Array.isArray(x.Edges)) {
        (x.Nodes || []).forEach(visit);
        (x.Edges || []).forEach(visit);
      } else if (typeof x.ID === 'string' && ('Metadata' in x || 'Parent' in x)) ids.add(x.ID);
    }
  };
  visit(result);
  return ids;
}

async function runQuery(q) {
  const out = $('#gremlin-result');
  const summary = $('#gremlin-summary');
  summary.className = 'muted';
  summary.textContent = 'running…';
  try {
    const t0 = performance.now();
    const result = await api.query(q);
    const ms = (performance.now() - t0).toFixed(0);
    const ids = [...resultIds(result)].filter((id) => graph.nodes.has(id) || graph.edges.has(id));
    const shown = view.highlight(ids);
    const text = JSON.stringify(result, null, 2) ?? '(no content)';
    out.textContent = text.length > 200000 ? text.slice(0, 200000) + '\n…' : text;
    summary.textContent = `${ids.length} element(s) highlighted (${shown.size} drawn) in ${ms} ms`;
    summary.dataset.count = String(ids.length);
  } catch (e) {
    view.highlight([]);
    out.textContent = '';
    summary.className = 'error';
    summary.textContent = e.message;
    summary.dataset.count = '';
  }
}

$('#gremlin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  runQuery($('#gremlin-query').value.trim());
});
$('#gremlin-clear').addEventListener('click', () => {
  view.highlight([]);
  $('#gremlin-result').textContent = '';
  $('#gremlin-summary').textContent = '';
});

// ---------------------------------------------------------------- toolbar, tabs, messages

function showTab(name) {
  for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.tab === name);
  for (const s of document.querySelectorAll('.tab')) s.hidden = s.id !== `tab-${name}`;
}
for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => showTab(b.dataset.tab));

/** Fits the graph in the window, without blowing a small graph up. */
function fit() {
  view.cy.fit(undefined, 30);
  if (view.cy.zoom() > 1.2) {
    view.cy.zoom(1.2);
    view.cy.center();
  }
}
$('#fit').addEventListener('click', fit);
$('#relayout').addEventListener('click', () => {
  const t0 = performance.now();
  view.layout();
  metrics.layoutMs = performance.now() - t0;
});
$('#collapse-all').addEventListener('click', () => view.setAllCollapsed(true));
$('#expand-all').addEventListener('click', () => view.setAllCollapsed(false));
$('#find').addEventListener('change', (ev) => {
  const name = ev.target.value.trim();
  if (!name) return;
  for (const n of graph.nodes.values()) {
    if (String(n.Metadata?.Name ?? '') === name || n.ID === name) {
      select(n.ID);
      view.focus(n.ID);
      return;
    }
  }
  notify(`No node named ${name}.`);
});

function notify(text) {
  const n = $('#notice');
  n.textContent = text;
  n.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => (n.hidden = true), 6000);
}

function showError(text) {
  notify(text);
}

// ---------------------------------------------------------------- panels and start

const captures = new CapturesPanel($('#tab-captures'), api, {
  selected: () => (state.selected ? graph.nodes.get(state.selected) : null),
});

const history = new HistoryPanel($('#tab-history'), {
  request: graphAt,
  graph,
  view,
  onModeChange: setHistory,
  onSelect: (id) => {
    select(id);
    view.focus(id);
  },
});

select(null);
showTab('node');

/** Asks for a user name and password until `POST /login` accepts them. */
function askLogin() {
  const form = $('#login');
  form.hidden = false;
  form.elements.username.focus();
  return new Promise((resolve) => {
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const err = $('#login-error');
      err.textContent = '';
      try {
        await api.login(form.elements.username.value, form.elements.password.value);
        form.hidden = true;
        form.elements.password.value = '';
        resolve();
      } catch (e) {
        err.textContent = e.message;
      }
    };
  });
}

$('#logout').addEventListener('click', async () => {
  await api.logout();
  window.location.reload();
});

async function start() {
  let info;
  for (;;) {
    try {
      info = await api.info();
      break;
    } catch (e) {
      if (e.status !== 401) {
        showError(`${api.base}/api: ${e.message}`);
        $('#conn').textContent = 'unreachable';
        return;
      }
      // No credentials, or they no longer work.
      api.logout();
      await askLogin();
    }
  }
  $('#logout').hidden = !api.token;
  state.service = info.Service;
  $('#server').textContent = `${info.Service} ${info.Host} · ${info.Version}${api.base !== window.location.origin ? ' · ' + api.base : ''}`;
  document.title = `Skydive · ${info.Host}`;
  if (info.Service === 'agent') {
    // An agent's own API has no capture or history of its own: they live on the analyzer.
    $('#tab-captures').replaceChildren(el('p', { class: 'muted', id: 'agent-captures' }, 'This is an agent: captures and flows are managed by the analyzer.'));
  } else {
    captures.refresh();
  }
  openSocket();
}

window.skydiveUI = { api, graph, view, socket, metrics, state, select, runQuery, captures, history, showTab };
start();
