// A node's metadata as a readable tree: nested maps and arrays unfold, counters get units,
// times are dates. Every value row carries its dotted key in `data-key`.

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function humanBytes(v) {
  let x = Number(v);
  let i = 0;
  while (Math.abs(x) >= 1024 && i < BYTE_UNITS.length - 1) {
    x /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${x.toFixed(x >= 100 ? 0 : 1)} ${BYTE_UNITS[i]}`;
}

const int = (v) => Number(v).toLocaleString('en-US');

/** A value with its unit, from the name of its key (Skydive's naming). */
export function formatValue(key, v) {
  if (typeof v !== 'number') return String(v);
  const leaf = key.split('.').pop();
  if (/Bytes$/.test(leaf)) return `${humanBytes(v)} (${int(v)})`;
  if (/Packets$/.test(leaf)) return `${int(v)} packets`;
  if (/(Errors|Dropped|Drops|Collisions|Errs)$/.test(leaf)) return int(v);
  if (leaf === 'Speed') return `${int(v)} Mbit/s`;
  if (leaf === 'MTU') return `${int(v)} bytes`;
  if (leaf === 'RTT') return `${(v / 1e6).toFixed(3)} ms`;
  if (/(At|Start|Last|Time|Timestamp)$/.test(leaf) && v > 1e12) {
    return `${new Date(v).toISOString().replace('T', ' ').replace('Z', ' UTC')} (${v})`;
  }
  return String(v);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

export { el };

/** Renders `value` under `key` (dotted path) into a list item. */
function renderEntry(key, name, value, depth) {
  if (value !== null && typeof value === 'object') {
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value).sort(([a], [b]) => a.localeCompare(b));
    const summary = Array.isArray(value) ? `${name} [${value.length}]` : `${name} {${entries.length}}`;
    const details = el('details', { 'data-key': key, class: 'md-group' }, el('summary', {}, summary));
    // Small maps and lists open at the top level, and a container's labels however nested
    // (what an operator looks for on a container); big ones (Features, routes) stay folded.
    const labels = key === 'Container.Labels' || key.startsWith('Container.Labels.');
    if ((depth < 1 || labels) && entries.length <= 12) details.open = true;
    const ul = el('ul', { class: 'md' });
    for (const [k, v] of entries) ul.append(renderEntry(`${key}.${k}`, k, v, depth + 1));
    details.append(ul);
    return el('li', {}, details);
  }
  return el(
    'li',
    { 'data-key': key, class: 'md-leaf' },
    el('span', { class: 'md-name' }, name),
    el('span', { class: 'md-value', title: String(value) }, formatValue(key, value)),
  );
}

/** The metadata tree of an element. */
export function metadataTree(metadata) {
  const ul = el('ul', { class: 'md md-root' });
  for (const [k, v] of Object.entries(metadata || {}).sort(([a], [b]) => a.localeCompare(b))) {
    ul.append(renderEntry(k, k, v, 0));
  }
  return ul;
}

/** The panel of a selected node: identity, metadata, edges (each end clickable). */
export function nodePanel(graph, id, { onSelect, onToggle, isCollapsed }) {
  const n = graph.nodes.get(id);
  const root = el('div', { class: 'node-panel', 'data-node-id': id });
  if (!n) {
    root.append(el('p', { class: 'muted' }, 'This node is gone.'));
    return root;
  }
  const m = n.Metadata || {};
  root.append(el('h3', {}, `${m.Name ?? id} `, el('small', {}, m.Type ?? '')));
  root.append(identTable(n, ['ID', 'Host', 'Origin', 'Revision', 'CreatedAt', 'UpdatedAt']));
  if (graph.owned.has(id)) {
    root.append(
      el(
        'button',
        { class: 'toggle', onclick: () => onToggle(id) },
        isCollapsed(id) ? `Expand (${graph.descendants(id).length} inside)` : 'Collapse',
      ),
    );
  }
  root.append(el('h4', {}, 'Metadata'), metadataTree(m));
  const edges = [...(graph.incident.get(id) || [])].map((eid) => graph.edges.get(eid)).filter(Boolean);
  root.append(el('h4', {}, `Edges (${edges.length})`));
  const table = el('table', { class: 'edges' });
  for (const e of edges.sort((a, b) => String(a.Metadata?.RelationType).localeCompare(String(b.Metadata?.RelationType)))) {
    const out = e.Parent === id;
    const other = out ? e.Child : e.Parent;
    const link = el('a', { href: '#', 'data-node-id': other, onclick: (ev) => (ev.preventDefault(), onSelect(other)) }, graph.name(other));
    const em = { ...(e.Metadata || {}) };
    delete em.RelationType;
    table.append(
      el(
        'tr',
        { 'data-edge-id': e.ID },
        el('td', {}, e.Metadata?.RelationType ?? ''),
        el('td', {}, out ? '→' : '←'),
        el('td', {}, link),
        el('td', { class: 'muted' }, Object.keys(em).length ? JSON.stringify(em) : ''),
      ),
    );
  }
  root.append(table);
  return root;
}

/** The panel of selected edges: for each, its ends (links to them) and its metadata. */
/** The fields `keys` of a node or an edge (those it has), as a table. */
function identTable(x, keys) {
  const table = el('table', { class: 'ident' });
  for (const k of keys) {
    if (x[k] !== undefined) table.append(el('tr', { 'data-key': k }, el('th', {}, k), el('td', {}, formatValue(k, x[k]))));
  }
  return table;
}

export function edgesPanel(graph, ids, { onSelect }) {
  const root = el('div', { class: 'edge-panel' });
  root.append(el('h3', {}, ids.length === 1 ? 'Edge' : `${ids.length} links of hidden nodes`));
  for (const id of ids) {
    const e = graph.edges.get(id);
    if (!e) continue;
    const end = (nid) => el('a', { href: '#', 'data-node-id': nid, onclick: (ev) => (ev.preventDefault(), onSelect(nid)) }, graph.name(nid));
    const box = el('div', { class: 'edge', 'data-edge-id': id });
    box.append(el('p', {}, end(e.Parent), ' → ', end(e.Child)));
    box.append(identTable(e, ['ID', 'Host', 'Origin', 'Revision', 'CreatedAt']), metadataTree(e.Metadata));
    root.append(box);
  }
  return root;
}
