// History: the topology at a past time (a SyncRequest with `Time`), and what changed between
// two times (both graphs fetched, compared here: added, removed, changed nodes and edges).

import { el } from './metadata.js';

/** `datetime-local` input value <-> milliseconds since the epoch, in local time. */
export function inputToMs(value) {
  if (!value) return NaN;
  return new Date(value).getTime();
}

export function msToInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}

/** What changed from graph `a` to graph `b` (`{Nodes, Edges}` each). */
export function diffGraphs(a, b) {
  const index = (list) => new Map((list || []).map((x) => [x.ID, x]));
  const out = {};
  for (const kind of ['Nodes', 'Edges']) {
    const before = index(a[kind]);
    const after = index(b[kind]);
    const added = [];
    const removed = [];
    const changed = [];
    for (const [id, x] of after) {
      const old = before.get(id);
      if (!old) added.push(x);
      else if (old.Revision !== x.Revision || JSON.stringify(old.Metadata) !== JSON.stringify(x.Metadata)) changed.push(x);
    }
    for (const [id, x] of before) if (!after.has(id)) removed.push(x);
    out[kind] = { added, removed, changed };
  }
  return out;
}

export class HistoryPanel {
  constructor(root, { request, graph, view, onModeChange, onSelect }) {
    this.root = root;
    this.request = request; // (timeMs) => Promise<{Nodes, Edges}>
    this.graph = graph;
    this.view = view;
    this.onModeChange = onModeChange; // (label | null) when leaving or entering the live view
    this.onSelect = onSelect;
    this.result = root.querySelector('#history-result');
    const now = Date.now();
    root.querySelector('#history-at').value = msToInput(now - 60000);
    root.querySelector('#history-from').value = msToInput(now - 300000);
    root.querySelector('#history-to').value = msToInput(now);
    root.querySelector('#history-show').addEventListener('click', () => this.showAt());
    root.querySelector('#history-compare').addEventListener('click', () => this.compare());
  }

  error(e) {
    this.result.replaceChildren(el('p', { class: 'error' }, e.message || String(e)));
  }

  async showAt() {
    const t = inputToMs(this.root.querySelector('#history-at').value);
    if (Number.isNaN(t)) return this.error(new Error('Pick a time.'));
    try {
      const g = await this.request(t);
      this.view.mark(new Map());
      this.onModeChange(`Topology at ${new Date(t).toLocaleString()}`, t);
      this.graph.reset(g.Nodes, g.Edges);
      this.result.replaceChildren(el('p', {}, `${(g.Nodes || []).length} nodes and ${(g.Edges || []).length} edges at ${new Date(t).toLocaleString()}.`));
    } catch (e) {
      this.error(e);
    }
  }

  async compare() {
    const t1 = inputToMs(this.root.querySelector('#history-from').value);
    const t2 = inputToMs(this.root.querySelector('#history-to').value);
    if (Number.isNaN(t1) || Number.isNaN(t2) || t1 >= t2) return this.error(new Error('Pick two times, the first before the second.'));
    let a;
    let b;
    try {
      [a, b] = await Promise.all([this.request(t1), this.request(t2)]);
    } catch (e) {
      return this.error(e);
    }
    const d = diffGraphs(a, b);
    // Draw the later graph plus what was removed since, each marked.
    const nodes = [...(b.Nodes || []), ...d.Nodes.removed];
    const ids = new Set(nodes.map((n) => n.ID));
    const edges = [...(b.Edges || []), ...d.Edges.removed.filter((e) => ids.has(e.Parent) && ids.has(e.Child))];
    this.onModeChange(`Changes between ${new Date(t1).toLocaleString()} and ${new Date(t2).toLocaleString()}`, t2);
    this.graph.reset(nodes, edges);
    const marks = new Map();
    for (const n of d.Nodes.added) marks.set(n.ID, 'added');
    for (const n of d.Nodes.changed) marks.set(n.ID, 'changed');
    for (const n of d.Nodes.removed) marks.set(n.ID, 'removed');
    // Marks go on once the reset is drawn.
    requestAnimationFrame(() => setTimeout(() => this.view.mark(marks), 0));
    const section = (title, cls, list) =>
      el(
        'div',
        { class: `diff ${cls}` },
        el('h4', {}, `${title} (${list.length})`),
        el(
          'ul',
          {},
          ...list.map((n) =>
            el(
              'li',
              { 'data-node-id': n.ID },
              el('a', { href: '#', onclick: (ev) => (ev.preventDefault(), this.onSelect(n.ID)) }, `${n.Metadata?.Name ?? n.ID} (${n.Metadata?.Type ?? ''})`),
            ),
          ),
        ),
      );
    const e = d.Edges;
    this.result.replaceChildren(
      section('Added nodes', 'added', d.Nodes.added),
      section('Removed nodes', 'removed', d.Nodes.removed),
      section('Changed nodes', 'changed', d.Nodes.changed),
      el('p', { class: 'muted' }, `Edges: ${e.added.length} added, ${e.removed.length} removed, ${e.changed.length} changed.`),
    );
    this.lastDiff = d;
  }
}
