// Captures: the list, a form to create one (on the selected node or from a query), delete,
// and a live flow table for one capture (`/ws/subscriber/flow`, namespace `flow/<ID>`).

import { Socket } from './api.js';
import { el, humanBytes } from './metadata.js';

/** The Gremlin query that designates one node, as Skydive's UI writes it. */
export function nodeQuery(node) {
  const m = node?.Metadata || {};
  if (m.TID) return `G.V().Has('TID', '${m.TID}')`;
  return `G.V('${node.ID}')`;
}

export class CapturesPanel {
  constructor(root, api, { selected, onError }) {
    this.root = root;
    this.api = api;
    this.selected = selected; // () => the selected node or null
    this.onError = onError;
    this.list = root.querySelector('#capture-list');
    this.form = root.querySelector('#capture-form');
    this.message = root.querySelector('#capture-message');
    this.flows = new FlowTable(root.querySelector('#flow-table'), api, root.querySelector('#flow-title'));
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.create();
    });
    root.querySelector('#capture-use-selected').addEventListener('click', () => this.useSelected());
    root.querySelector('#capture-refresh').addEventListener('click', () => this.refresh());
  }

  useSelected() {
    const n = this.selected();
    if (!n) {
      this.say('Select a node in the graph first.', true);
      return;
    }
    this.form.elements.GremlinQuery.value = nodeQuery(n);
    if (!this.form.elements.Name.value) this.form.elements.Name.value = `capture ${n.Metadata?.Name ?? ''}`.trim();
  }

  say(text, error = false) {
    this.message.textContent = text;
    this.message.className = error ? 'error' : 'muted';
  }

  async create() {
    const f = this.form.elements;
    const capture = { GremlinQuery: f.GremlinQuery.value.trim() };
    for (const k of ['Name', 'Description', 'BPFFilter', 'Type']) {
      const v = f[k].value.trim();
      if (v) capture[k] = v;
    }
    for (const k of ['HeaderSize', 'RawPacketLimit', 'SamplingRate', 'PollingInterval']) {
      const v = f[k]?.value.trim();
      if (v) capture[k] = Number(v);
    }
    if (!capture.GremlinQuery) {
      this.say('A capture needs a Gremlin query (or a selected node).', true);
      return;
    }
    try {
      const c = await this.api.createCapture(capture);
      this.say(`Capture ${c.UUID} created.`);
      await this.refresh();
      this.flows.open(c.UUID, c.Name || c.GremlinQuery);
    } catch (e) {
      this.say(e.message, true);
    }
  }

  async refresh() {
    let caps;
    try {
      caps = (await this.api.captures()) || {};
    } catch (e) {
      this.list.replaceChildren(el('li', { class: 'error' }, e.message));
      return;
    }
    const items = Object.values(caps).sort((a, b) => String(a.Name || a.UUID).localeCompare(String(b.Name || b.UUID)));
    if (!items.length) {
      this.list.replaceChildren(el('li', { class: 'muted' }, 'No capture.'));
      return;
    }
    this.list.replaceChildren(
      ...items.map((c) =>
        el(
          'li',
          { 'data-capture-id': c.UUID, class: this.flows.captureId === c.UUID ? 'current' : '' },
          el('b', {}, c.Name || c.UUID.slice(0, 8)),
          ' ',
          el('code', {}, c.GremlinQuery),
          c.BPFFilter ? el('span', { class: 'muted' }, ` bpf: ${c.BPFFilter}`) : '',
          el('span', { class: 'muted' }, ` ${c.Type || 'default type'} · ${c.Count ?? 0} probe(s)`),
          ' ',
          el('button', { class: 'flows', onclick: () => this.flows.open(c.UUID, c.Name || c.GremlinQuery) }, 'Flows'),
          el('button', { class: 'delete', onclick: () => this.remove(c.UUID) }, 'Delete'),
        ),
      ),
    );
  }

  async remove(id) {
    try {
      await this.api.deleteCapture(id);
      if (this.flows.captureId === id) this.flows.close();
      this.say(`Capture ${id} deleted.`);
    } catch (e) {
      this.say(e.message, true);
    }
    await this.refresh();
  }
}

const COLUMNS = [
  { key: 'Application', title: 'App', value: (f) => f.Application ?? '' },
  { key: 'A', title: 'A', value: (f) => endpoint(f, 'A') },
  { key: 'B', title: 'B', value: (f) => endpoint(f, 'B') },
  {
    key: 'Packets',
    title: 'Packets',
    value: (f) => (f.Metric?.ABPackets ?? 0) + (f.Metric?.BAPackets ?? 0),
    ab: (f) => [f.Metric?.ABPackets ?? 0, f.Metric?.BAPackets ?? 0],
    num: true,
  },
  {
    key: 'Bytes',
    title: 'Bytes',
    value: (f) => (f.Metric?.ABBytes ?? 0) + (f.Metric?.BABytes ?? 0),
    ab: (f) => [f.Metric?.ABBytes ?? 0, f.Metric?.BABytes ?? 0],
    num: true,
    bytes: true,
  },
  { key: 'Last', title: 'Last', value: (f) => f.Last ?? 0, num: true, time: true },
];

function endpoint(f, side) {
  const net = f.Network?.[side] ?? f.Link?.[side] ?? '';
  const port = f.Transport?.[side];
  if (port === undefined || port === null || port === '') return String(net);
  return net.includes(':') ? `[${net}]:${port}` : `${net}:${port}`;
}

/** A live, sortable table of one capture's flows. */
export class FlowTable {
  constructor(root, api, title) {
    this.root = root;
    this.api = api;
    this.title = title;
    this.flows = new Map();
    this.sortKey = 'Bytes';
    this.sortDesc = true;
    this.captureId = null;
    this.socket = null;
    this.timer = null;
    this.received = 0;
    this.render();
  }

  close() {
    this.socket?.close();
    this.socket = null;
    clearInterval(this.poll);
    this.poll = null;
    this.captureId = null;
    this.flows.clear();
    this.title.textContent = 'No capture selected.';
    this.render();
  }

  async open(id, label) {
    this.close();
    this.captureId = id;
    this.title.textContent = `Flows of ${label}`;
    this.socket = new Socket(
      this.api.wsUrl('/ws/subscriber/flow', [
        ['x-client-type', 'webui'],
        ['x-websocket-namespace', `flow/${id}`],
      ]),
      { onMessage: (msg) => this.onMessage(msg) },
    );
    // The agents' flow tables, now and every few seconds: the socket brings flows only as
    // often as agents send them (flow.update, a minute by default).
    this.poll = setInterval(() => this.fetchLive(id), 3000);
    await this.fetchLive(id);
  }

  async fetchLive(id) {
    try {
      const flows = await this.api.query(`G.Flows().Has('CaptureID', '${id}')`);
      if (this.captureId === id && Array.isArray(flows)) this.upsert(flows);
    } catch {
      // An agent's own API has no flows; the socket still brings stored ones.
    }
  }

  onMessage(msg) {
    if (msg.Type !== 'store' || !Array.isArray(msg.Obj)) return;
    this.upsert(msg.Obj);
  }

  upsert(flows) {
    for (const f of flows) {
      if (!f || !f.UUID) continue;
      if (this.captureId && f.CaptureID && f.CaptureID !== this.captureId) continue;
      this.received++;
      this.flows.set(f.UUID, f);
    }
    this.scheduleRender();
  }

  scheduleRender() {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.render();
    }, 200);
  }

  sortBy(key) {
    if (this.sortKey === key) this.sortDesc = !this.sortDesc;
    else {
      this.sortKey = key;
      this.sortDesc = COLUMNS.find((c) => c.key === key)?.num ?? false;
    }
    this.render();
  }

  render() {
    const col = COLUMNS.find((c) => c.key === this.sortKey) || COLUMNS[0];
    const rows = [...this.flows.values()].sort((a, b) => {
      const x = col.value(a);
      const y = col.value(b);
      const r = col.num ? x - y : String(x).localeCompare(String(y));
      return this.sortDesc ? -r : r;
    });
    const head = el(
      'tr',
      {},
      ...COLUMNS.map((c) =>
        el(
          'th',
          { 'data-sort': c.key, class: c.key === this.sortKey ? (this.sortDesc ? 'desc' : 'asc') : '', onclick: () => this.sortBy(c.key) },
          c.title,
        ),
      ),
    );
    const body = rows.slice(0, 500).map((f) =>
      el(
        'tr',
        { 'data-flow-uuid': f.UUID, title: (f.LayersPath || '') + (f.NodeTID ? ` on ${f.NodeTID}` : '') },
        ...COLUMNS.map((c) => {
          const v = c.value(f);
          const show = (x) => (c.bytes ? humanBytes(x) : Number(x).toLocaleString('en-US'));
          const attrs = { class: c.num ? 'num' : '', 'data-col': c.key, 'data-value': String(v) };
          let text = v;
          if (c.time) text = v ? new Date(v).toLocaleTimeString() : '';
          else if (c.num) text = show(v);
          if (c.ab) {
            // Each direction in the cell's tooltip and attributes.
            const [ab, ba] = c.ab(f);
            Object.assign(attrs, { 'data-ab': String(ab), 'data-ba': String(ba), title: `A→B ${show(ab)}, B→A ${show(ba)}` });
          }
          return el('td', attrs, text);
        }),
      ),
    );
    const table = el('table', { class: 'flows' }, el('thead', {}, head), el('tbody', {}, ...body));
    const note = this.flows.size > 500 ? el('p', { class: 'muted' }, `${this.flows.size} flows, the first 500 shown.`) : '';
    this.root.replaceChildren(table, note);
  }
}
