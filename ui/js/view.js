// The topology drawn with Cytoscape. Owners contain what they own (host > netns > interface,
// OVS bridge > port) as compound nodes; a collapsed owner hides what it owns and stands for it,
// and the links of hidden nodes are drawn once between the visible nodes that stand for their
// ends. Changes of the model are drawn incrementally: the IDs they touch are collected and
// redrawn together at the next animation frame, inside one Cytoscape batch.

import { OWNERSHIP } from './model.js';

const GOLDEN_ANGLE = Math.PI * (3 - Math.sqrt(5));

const STYLE = [
  {
    selector: 'node',
    style: {
      label: 'data(label)',
      'font-size': 10,
      'text-valign': 'bottom',
      'text-margin-y': 3,
      width: 22,
      height: 22,
      'background-color': '#7a8fa6',
      'border-width': 2,
      'border-color': '#4b5d70',
      color: '#1d2733',
      'text-max-width': 120,
      'text-wrap': 'ellipsis',
      'min-zoomed-font-size': 7,
    },
  },
  { selector: 'node[state = "UP"]', style: { 'border-color': '#2e9a4d' } },
  { selector: 'node[state = "DOWN"]', style: { 'background-color': '#b9c2cc', 'border-color': '#8d99a6' } },
  { selector: 'node[type = "host"]', style: { shape: 'round-rectangle', 'background-color': '#2f5d8a', width: 34, height: 34 } },
  { selector: 'node[type = "netns"]', style: { shape: 'round-rectangle', 'background-color': '#8a6f2f' } },
  { selector: 'node[type = "bridge"]', style: { shape: 'diamond', 'background-color': '#5a8a2f', width: 28, height: 28 } },
  { selector: 'node[type = "ovsbridge"]', style: { shape: 'hexagon', 'background-color': '#2f8a7d', width: 30, height: 30 } },
  { selector: 'node[type = "ovsport"]', style: { shape: 'round-triangle', 'background-color': '#57b0a3' } },
  { selector: 'node[type = "veth"]', style: { 'background-color': '#9a7ab8' } },
  { selector: 'node[type = "internal"], node[type = "tun"], node[type = "tap"]', style: { 'background-color': '#5fa0c8' } },
  { selector: 'node[type = "container"]', style: { shape: 'barrel', 'background-color': '#c88a3a' } },
  {
    selector: ':parent',
    style: {
      'text-valign': 'top',
      'text-margin-y': -2,
      'background-opacity': 0.07,
      'border-width': 1,
      'border-style': 'solid',
      padding: 12,
      shape: 'round-rectangle',
      'font-weight': 'bold',
    },
  },
  { selector: 'node[type = "netns"]:parent', style: { 'border-style': 'dashed', 'border-color': '#8a6f2f' } },
  { selector: 'node[type = "host"]:parent', style: { 'border-color': '#2f5d8a', 'border-width': 2 } },
  { selector: 'node.collapsed', style: { 'border-style': 'double', 'border-width': 5, width: 36, height: 36 } },
  { selector: 'node.captured', style: { 'overlay-color': '#d33', 'overlay-opacity': 0.18, 'overlay-padding': 5 } },
  {
    selector: 'edge',
    style: {
      width: 2,
      'line-color': '#9aa7b4',
      'curve-style': 'bezier',
      'target-arrow-shape': 'none',
    },
  },
  { selector: 'edge[relation = "layer2"]', style: { 'line-color': '#6b8fb3' } },
  { selector: 'edge[linktype = "patch"]', style: { 'line-style': 'dashed', 'line-color': '#2f8a7d' } },
  { selector: 'edge.meta', style: { 'line-style': 'dotted', width: 3, label: 'data(label)', 'font-size': 8 } },
  { selector: 'node.hl', style: { 'overlay-color': '#f2b705', 'overlay-opacity': 0.45, 'overlay-padding': 7 } },
  { selector: 'edge.hl', style: { 'line-color': '#f2b705', width: 4 } },
  { selector: 'node.added', style: { 'overlay-color': '#2e9a4d', 'overlay-opacity': 0.4, 'overlay-padding': 7 } },
  { selector: 'node.removed', style: { 'overlay-color': '#d33', 'overlay-opacity': 0.4, 'overlay-padding': 7, opacity: 0.6 } },
  { selector: 'node.changed', style: { 'overlay-color': '#e07b00', 'overlay-opacity': 0.4, 'overlay-padding': 7 } },
  { selector: ':selected', style: { 'border-color': '#f25c05', 'border-width': 4 } },
];

export class TopologyView {
  constructor(container, graph, cytoscape, opts = {}) {
    this.graph = graph;
    this.collapsed = new Set();
    // What the user chose: groups they expanded stay expanded after a resync.
    this.expanded = new Set();
    this.userCollapsed = new Set();
    this.autoCollapseAbove = opts.autoCollapseAbove ?? 400;
    this.highlighted = new Set();
    this.marks = new Map(); // node ID -> class (history diff)
    this.edgeTarget = new Map(); // model edge ID -> drawn edge ID
    this.meta = new Map(); // drawn meta edge ID -> Set of model edge IDs
    this.dirtyNodes = new Set();
    this.dirtyEdges = new Set();
    this.frame = null;
    this.needLayout = false;
    this.lastLayoutAt = -Infinity;
    this.lastChangeAt = 0;
    this.pendingSince = 0;
    // Groups seen so far: a new one starts collapsed when the graph is large.
    this.knownGroups = new Set();
    this.listeners = { rendered: [], select: [], selectEdges: [], toggle: [] };
    this.stats = { flushes: 0, resets: 0, lastFlushMs: 0, flushMsTotal: 0, renderedAt: 0, updates: 0 };
    this.cy = cytoscape({
      container,
      style: STYLE,
      wheelSensitivity: 0.3,
      minZoom: 0.05,
      maxZoom: 4,
      textureOnViewport: true,
      hideEdgesOnViewport: true,
      boxSelectionEnabled: false,
    });
    this.cy.on('tap', 'node', (ev) => this.emit('select', ev.target.id()));
    this.cy.on('tap', (ev) => {
      if (ev.target === this.cy) this.emit('select', null);
    });
    this.cy.on('dbltap', 'node', (ev) => this.toggle(ev.target.id()));
    // An edge stands for one model edge, or (dotted) for the links of hidden nodes.
    this.cy.on('tap', 'edge', (ev) => {
      const id = ev.target.id();
      this.emit('selectEdges', this.meta.has(id) ? [...this.meta.get(id)] : [id]);
    });
    graph.subscribe((change) => this.onChange(change));
  }

  on(what, fn) {
    this.listeners[what].push(fn);
  }

  emit(what, arg) {
    for (const fn of this.listeners[what]) fn(arg);
  }

  /** Forgets what is drawn; the next flush draws every node and edge of the model. */
  rebuild() {
    this.cy.elements().remove();
    this.edgeTarget.clear();
    this.meta.clear();
    this.collapsed.clear();
    this.autoCollapse();
    this.needLayout = true;
    for (const id of this.graph.nodes.keys()) this.dirtyNodes.add(id);
    for (const id of this.graph.edges.keys()) this.dirtyEdges.add(id);
  }

  onChange(change) {
    if (change.reset) {
      this.stats.resets++;
      this.rebuild();
    }
    const g = this.graph;
    for (const id of change.nodes) {
      this.dirtyNodes.add(id);
      if (!change.reset && g.owned.has(id) && !this.knownGroups.has(id)) {
        this.knownGroups.add(id);
        if (g.nodes.size > this.autoCollapseAbove && !this.expanded.has(id) && g.nodes.get(id)?.Metadata?.Type !== 'host') {
          this.collapsed.add(id);
        }
      }
    }
    for (const id of change.edges) this.dirtyEdges.add(id);
    this.stats.updates++;
    this.lastChangeAt = performance.now();
    if (this.frame === null) this.pendingSince = this.lastChangeAt;
    this.schedule();
  }

  /**
   * Large graphs open collapsed: namespaces (and other groups) when the graph has more than
   * `autoCollapseAbove` nodes, hosts too when that still leaves 2.5 times as many drawn; the
   * groups the user expanded stay expanded, the ones the user collapsed stay collapsed.
   */
  autoCollapse() {
    const g = this.graph;
    const groups = [...g.owned.keys()].filter((id) => g.nodes.has(id));
    this.knownGroups = new Set(groups);
    for (const id of this.userCollapsed) if (g.nodes.has(id)) this.collapsed.add(id);
    if (g.nodes.size <= this.autoCollapseAbove) return;
    const typeOf = (id) => g.nodes.get(id)?.Metadata?.Type;
    const byDepth = (a, b) => g.ancestors(b).length - g.ancestors(a).length;
    // Deepest groups first (netns inside hosts before hosts).
    for (const id of groups.filter((id) => typeOf(id) !== 'host').sort(byDepth)) {
      if (!this.expanded.has(id)) this.collapsed.add(id);
    }
    const drawn = () => [...g.nodes.keys()].filter((id) => this.visible(id)).length;
    if (drawn() > 2.5 * this.autoCollapseAbove) {
      for (const id of groups.filter((id) => typeOf(id) === 'host')) {
        if (!this.expanded.has(id)) this.collapsed.add(id);
      }
    }
  }

  schedule() {
    if (this.frame !== null) return;
    const run = () => {
      this.frame = null;
      // While a burst streams in (the rest of a chunked synchronisation, an agent
      // connecting), wait for it to end, up to a second, and draw it once.
      const now = performance.now();
      const pending = this.dirtyNodes.size + this.dirtyEdges.size;
      if (pending > 500 && now - this.lastChangeAt < 50 && now - this.pendingSince < 1000) {
        this.schedule();
        return;
      }
      this.flush();
    };
    // requestAnimationFrame does not run in a hidden tab; a timeout does.
    this.frame = document.hidden ? setTimeout(run, 50) : requestAnimationFrame(run);
  }

  /** Whether a node of the model is drawn (no collapsed owner above it). */
  visible(id) {
    if (!this.graph.nodes.has(id)) return false;
    for (const a of this.graph.ancestors(id)) {
      if (this.collapsed.has(a)) return false;
    }
    return true;
  }

  /** The drawn node that stands for `id`: itself, or its outermost collapsed owner. */
  rep(id) {
    if (!this.graph.nodes.has(id)) return null;
    let r = id;
    for (const a of this.graph.ancestors(id)) {
      if (this.collapsed.has(a)) r = a;
    }
    return r;
  }

  drawnParent(id) {
    const o = this.graph.owner.get(id);
    return o !== undefined && this.graph.nodes.has(o) ? o : null;
  }

  nodeData(id) {
    const n = this.graph.nodes.get(id);
    const m = n.Metadata || {};
    let label = m.Name !== undefined ? String(m.Name) : id.slice(0, 8);
    const data = { id, type: String(m.Type ?? ''), state: String(m.State ?? '') };
    if (this.collapsed.has(id)) {
      const count = this.graph.descendants(id).length;
      label += ` (+${count})`;
      data.count = count;
    }
    data.label = label;
    return data;
  }

  classesOf(id) {
    const n = this.graph.nodes.get(id);
    const cls = [];
    if (this.collapsed.has(id)) cls.push('collapsed');
    const caps = n?.Metadata?.Captures;
    if (Array.isArray(caps) && caps.some((c) => c.State === 'active')) cls.push('captured');
    if (this.highlighted.has(id)) cls.push('hl');
    const mark = this.marks.get(id);
    if (mark) cls.push(mark);
    return cls.join(' ');
  }

  flush() {
    const t0 = performance.now();
    if (this.dirtyNodes.size > 500 && this.dirtyNodes.size * 3 > this.graph.nodes.size) {
      // Most of the graph changed: drawing it again from scratch is cheaper than moving
      // thousands of nodes one by one, and the groups are collapsed again as at a reset.
      this.rebuild();
    }
    const nodes = this.dirtyNodes;
    const edges = this.dirtyEdges;
    this.dirtyNodes = new Set();
    this.dirtyEdges = new Set();
    const g = this.graph;
    // A node whose owner or visibility changes moves its whole subtree.
    const all = new Set(nodes);
    for (const id of nodes) {
      const el = this.cy.getElementById(id);
      const wantParent = this.drawnParent(id);
      const movedOrShown = el.empty() !== !this.visible(id) || (el.nonempty() && (el.data('parent') ?? null) !== wantParent);
      if (movedOrShown || this.collapsed.has(id)) for (const d of g.descendants(id)) all.add(d);
      for (const a of g.ancestors(id)) if (this.collapsed.has(a)) all.add(a); // counts
    }
    const order = [...all].map((id) => [g.ancestors(id).length, id]).sort((a, b) => a[0] - b[0]);
    const added = [];
    this.cy.batch(() => {
      // Removals deepest first, so that a group's children go before it.
      for (let i = order.length - 1; i >= 0; i--) {
        const id = order[i][1];
        if (!this.visible(id)) {
          const el = this.cy.getElementById(id);
          if (el.nonempty()) el.remove();
        }
      }
      for (const [, id] of order) {
        if (this.visible(id) && this.drawNode(id)) added.push(id);
      }
      for (const id of all) for (const eid of g.incident.get(id) || []) edges.add(eid);
      for (const eid of edges) this.drawEdge(eid);
    });
    // Many new nodes at once (a host connecting, a page opened before its agents) are laid
    // out with the rest, at most every two seconds; a few are placed beside their kin.
    const many = added.length > 50 && added.length * 5 > this.cy.nodes().length;
    if (this.needLayout || (many && performance.now() - this.lastLayoutAt > 2000)) {
      this.needLayout = false;
      this.layout();
      this.lastLayoutAt = performance.now();
    } else if (added.length) {
      this.place(added);
    }
    this.stats.flushes++;
    this.stats.lastFlushMs = performance.now() - t0;
    this.stats.flushMsTotal += this.stats.lastFlushMs;
    this.stats.renderedAt = performance.now();
    this.emit('rendered', { added: added.length, nodes: all.size, edges: edges.size });
  }

  /** Draws or redraws one node; returns whether it was added. */
  drawNode(id) {
    const data = this.nodeData(id);
    const parent = this.drawnParent(id);
    if (parent !== null) data.parent = parent;
    const classes = this.classesOf(id);
    let el = this.cy.getElementById(id);
    if (el.nonempty() && (el.data('parent') ?? null) !== parent) {
      // Cytoscape moves a node to another parent with move(); edges stay.
      el = el.move({ parent });
    }
    if (el.nonempty()) {
      el.data(data);
      el.classes(classes);
      return false;
    }
    this.cy.add({ group: 'nodes', data, classes });
    return true;
  }

  drawEdge(eid) {
    const g = this.graph;
    const e = g.edges.get(eid);
    let target = null;
    if (e && e.Metadata?.RelationType !== OWNERSHIP) {
      const p = this.rep(e.Parent);
      const c = this.rep(e.Child);
      if (p && c && p !== c && !this.nests(p, c) && !this.nests(c, p)) {
        target = p === e.Parent && c === e.Child ? eid : `meta:${p < c ? p + '|' + c : c + '|' + p}`;
      }
    }
    const old = this.edgeTarget.get(eid);
    if (old !== undefined && old !== target) {
      if (old === eid) {
        this.cy.getElementById(eid).remove();
      } else {
        const members = this.meta.get(old);
        members?.delete(eid);
        if (!members || members.size === 0) {
          this.meta.delete(old);
          this.cy.getElementById(old).remove();
        } else {
          this.cy.getElementById(old).data('label', `${members.size}`);
        }
      }
    }
    if (target === null) {
      this.edgeTarget.delete(eid);
      return;
    }
    this.edgeTarget.set(eid, target);
    const m = e.Metadata || {};
    if (target === eid) {
      const data = {
        id: eid,
        source: e.Parent,
        target: e.Child,
        relation: String(m.RelationType ?? ''),
        linktype: String(m.Type ?? ''),
      };
      const el = this.cy.getElementById(eid);
      if (el.nonempty()) el.data(data);
      else this.cy.add({ group: 'edges', data, classes: this.highlighted.has(eid) ? 'hl' : '' });
      return;
    }
    let members = this.meta.get(target);
    if (!members) this.meta.set(target, (members = new Set()));
    members.add(eid);
    const [a, b] = target.slice(5).split('|');
    const el = this.cy.getElementById(target);
    if (el.nonempty()) el.data('label', `${members.size}`);
    else this.cy.add({ group: 'edges', data: { id: target, source: a, target: b, label: `${members.size}` }, classes: 'meta' });
  }

  /** Whether `outer` is an owner (at any depth) of `inner`. */
  nests(outer, inner) {
    return this.graph.ancestors(inner).includes(outer);
  }

  /** Places new nodes beside their owner's other children, or beside a neighbour. */
  place(ids) {
    const fresh = new Set(ids);
    const ext = this.cy.extent();
    const center = { x: (ext.x1 + ext.x2) / 2, y: (ext.y1 + ext.y2) / 2 };
    const anchors = new Map(); // owner ID -> where its older children are (or null)
    const counts = new Map();
    for (const id of ids) {
      const el = this.cy.getElementById(id);
      if (el.empty() || el.isParent()) continue;
      const parent = el.parent();
      const key = parent.nonempty() ? parent.id() : '';
      let anchor = anchors.get(key);
      if (anchor === undefined) {
        const older = parent.nonempty() ? parent.children().filter((c) => !fresh.has(c.id())) : null;
        anchor = older && older.nonempty() ? older.boundingBox() : null;
        anchors.set(key, anchor);
      }
      let a = anchor;
      if (!a) {
        const nb = el.neighborhood('node').filter((n) => !fresh.has(n.id()));
        if (nb.nonempty()) a = nb.boundingBox();
      }
      const k = (counts.get(key) ?? 0) + 1;
      counts.set(key, k);
      const base = a ? { x: (a.x1 + a.x2) / 2, y: a.y2 } : center;
      const r = 30 + 14 * Math.sqrt(k);
      el.position({ x: base.x + r * Math.cos(k * GOLDEN_ANGLE), y: base.y + 30 + r * Math.sin(k * GOLDEN_ANGLE) });
    }
  }

  /** Lays out what is drawn (fcose; a grid when Cytoscape lacks it). */
  layout(eles, { incremental = false } = {}) {
    const target = eles ?? this.cy.elements();
    if (target.empty()) return;
    const n = target.nodes().length;
    const fcose = typeof window !== 'undefined' && window.cytoscapeFcose;
    // fcose's draft quality (spectral only) tangles compound graphs; the default quality
    // with fewer iterations lays out 5,000 nodes in about 1.5 s (benchmark B8).
    const opts = fcose
      ? {
          name: 'fcose',
          quality: 'default',
          randomize: !incremental,
          animate: false,
          fit: !eles && !incremental,
          padding: 30,
          nodeRepulsion: 6000,
          idealEdgeLength: 60,
          nestingFactor: 0.6,
          numIter: n > 1500 ? 1000 : 2500,
          tile: true,
        }
      : { name: 'grid', animate: false, fit: !eles };
    target.layout(opts).run();
  }

  /** Collapses or expands an owner. */
  toggle(id) {
    if (!this.graph.owned.has(id)) return;
    if (this.collapsed.has(id)) {
      this.collapsed.delete(id);
      this.userCollapsed.delete(id);
      this.expanded.add(id);
    } else {
      this.collapsed.add(id);
      this.userCollapsed.add(id);
      this.expanded.delete(id);
    }
    this.dirtyNodes.add(id);
    for (const d of this.graph.descendants(id)) this.dirtyNodes.add(d);
    this.flush();
    const el = this.cy.getElementById(id);
    if (!this.collapsed.has(id) && el.nonempty() && this.cy.nodes().length <= 1500) {
      // The group's content laid out from where things are, its neighbours making room.
      this.layout(undefined, { incremental: true });
    } else if (!this.collapsed.has(id) && el.nonempty()) {
      const inner = el.union(el.descendants());
      const bb = el.boundingBox();
      this.layout(inner.union(inner.connectedEdges()));
      // Keep the group where it was.
      const nb = el.boundingBox();
      const dx = (bb.x1 + bb.x2 - nb.x1 - nb.x2) / 2;
      const dy = (bb.y1 + bb.y2 - nb.y1 - nb.y2) / 2;
      el.descendants().forEach((d) => {
        if (!d.isParent()) d.shift({ x: dx, y: dy });
      });
    }
    this.emit('toggle', id);
  }

  /** Expands every group (or collapses every group but hosts), with one redraw and layout. */
  setAllCollapsed(collapse) {
    const g = this.graph;
    for (const id of g.owned.keys()) {
      if (!g.nodes.has(id)) continue;
      if (collapse && g.nodes.get(id)?.Metadata?.Type !== 'host') {
        this.collapsed.add(id);
        this.userCollapsed.add(id);
        this.expanded.delete(id);
      } else if (!collapse) {
        this.collapsed.delete(id);
        this.userCollapsed.delete(id);
        this.expanded.add(id);
      }
    }
    for (const id of g.nodes.keys()) this.dirtyNodes.add(id);
    this.needLayout = true;
    this.flush();
  }

  /** Highlights model elements (nodes or edges); hidden ones through what stands for them. */
  highlight(ids) {
    this.highlighted = new Set();
    for (const id of ids) {
      if (this.graph.nodes.has(id)) this.highlighted.add(this.rep(id));
      else if (this.graph.edges.has(id)) this.highlighted.add(this.edgeTarget.get(id) ?? id);
    }
    this.cy.batch(() => {
      this.cy.elements('.hl').removeClass('hl');
      for (const id of this.highlighted) this.cy.getElementById(id).addClass('hl');
    });
    return this.highlighted;
  }

  /** Marks nodes with a class each (history diff); an empty map clears. */
  mark(marks) {
    this.marks = marks;
    this.cy.batch(() => {
      this.cy.nodes().removeClass('added removed changed');
      for (const [id, cls] of marks) this.cy.getElementById(this.rep(id) ?? id).addClass(cls);
    });
  }

  select(id) {
    this.cy.elements(':selected').unselect();
    if (id === null) return;
    const el = this.cy.getElementById(this.rep(id) ?? id);
    if (el.nonempty()) el.select();
  }

  /** Centers the view on a node. */
  focus(id) {
    const el = this.cy.getElementById(this.rep(id) ?? id);
    if (el.nonempty()) this.cy.animate({ center: { eles: el }, duration: 250 });
  }
}
