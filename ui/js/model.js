// The live graph as the server sends it: nodes, edges, adjacency and the ownership tree.
// Every change is reported to the listeners as the sets of node and edge IDs it touched, so
// that the view redraws only those.

export const OWNERSHIP = 'ownership';

/** Sets a dotted key in nested maps, as the server's partial updates do. */
export function setPath(obj, key, value) {
  const parts = key.split('.');
  let cur = obj;
  for (let i = 0; i < parts.length - 1; i++) {
    const k = parts[i];
    if (cur[k] === null || typeof cur[k] !== 'object' || Array.isArray(cur[k])) cur[k] = {};
    cur = cur[k];
  }
  cur[parts[parts.length - 1]] = value;
}

/** Deletes a dotted key, and the maps it leaves empty. */
export function deletePath(obj, key) {
  const parts = key.split('.');
  const chain = [obj];
  let cur = obj;
  for (let i = 0; i < parts.length - 1; i++) {
    cur = cur[parts[i]];
    if (cur === null || typeof cur !== 'object') return;
    chain.push(cur);
  }
  delete cur[parts[parts.length - 1]];
  for (let i = chain.length - 1; i > 0; i--) {
    if (Object.keys(chain[i]).length > 0) break;
    delete chain[i - 1][parts[i - 1]];
  }
}

/** Reads a dotted key. */
export function getPath(obj, key) {
  let cur = obj;
  for (const k of key.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = cur[k];
  }
  return cur;
}

export class Graph {
  constructor() {
    this.nodes = new Map();
    this.edges = new Map();
    // node ID -> Set of incident edge IDs
    this.incident = new Map();
    // child ID -> owner ID, owner ID -> Set of child IDs
    this.owner = new Map();
    this.owned = new Map();
    this.listeners = [];
  }

  /** `fn({reset, nodes: Set, edges: Set})` after every change. */
  subscribe(fn) {
    this.listeners.push(fn);
  }

  emit(change) {
    for (const fn of this.listeners) fn(change);
  }

  /** Replaces everything (a SyncReply). */
  reset(nodes, edges) {
    this.nodes.clear();
    this.edges.clear();
    this.incident.clear();
    this.owner.clear();
    this.owned.clear();
    for (const n of nodes || []) this.nodes.set(n.ID, n);
    for (const e of edges || []) this.insertEdge(e);
    this.emit({ reset: true, nodes: new Set(this.nodes.keys()), edges: new Set(this.edges.keys()) });
  }

  /** Applies one graph message of the `Graph` namespace; returns whether it was one. */
  apply(type, obj) {
    const nodes = new Set();
    const edges = new Set();
    switch (type) {
      case 'NodeAdded':
      case 'NodeUpdated': {
        const old = this.nodes.get(obj.ID);
        if (old && type === 'NodeUpdated' && (obj.Revision || 0) < (old.Revision || 0)) return true;
        this.nodes.set(obj.ID, obj);
        nodes.add(obj.ID);
        break;
      }
      case 'NodePartiallyUpdated': {
        const n = this.nodes.get(obj.ID);
        if (!n || (obj.Revision || 0) <= (n.Revision || 0)) return true;
        n.Metadata = n.Metadata || {};
        for (const op of obj.Ops || []) {
          if (op.Type === 1) setPath(n.Metadata, op.Key, op.Value);
          else if (op.Type === 2) deletePath(n.Metadata, op.Key);
        }
        n.Revision = obj.Revision;
        if (obj.UpdatedAt) n.UpdatedAt = obj.UpdatedAt;
        nodes.add(obj.ID);
        break;
      }
      case 'NodeDeleted': {
        if (!this.nodes.has(obj.ID)) return true;
        for (const eid of this.incident.get(obj.ID) || []) {
          const e = this.edges.get(eid);
          this.removeEdge(eid);
          edges.add(eid);
          if (e) {
            nodes.add(e.Parent);
            nodes.add(e.Child);
          }
        }
        this.nodes.delete(obj.ID);
        this.incident.delete(obj.ID);
        nodes.add(obj.ID);
        break;
      }
      case 'EdgeAdded':
      case 'EdgeUpdated': {
        const old = this.edges.get(obj.ID);
        if (old && type === 'EdgeUpdated' && (obj.Revision || 0) < (old.Revision || 0)) return true;
        if (old) this.removeEdge(obj.ID);
        this.insertEdge(obj);
        edges.add(obj.ID);
        nodes.add(obj.Parent);
        nodes.add(obj.Child);
        break;
      }
      case 'EdgePartiallyUpdated': {
        const e = this.edges.get(obj.ID);
        if (!e || (obj.Revision || 0) <= (e.Revision || 0)) return true;
        e.Metadata = e.Metadata || {};
        for (const op of obj.Ops || []) {
          if (op.Type === 1) setPath(e.Metadata, op.Key, op.Value);
          else if (op.Type === 2) deletePath(e.Metadata, op.Key);
        }
        e.Revision = obj.Revision;
        edges.add(obj.ID);
        break;
      }
      case 'EdgeDeleted': {
        const e = this.edges.get(obj.ID);
        if (!e) return true;
        this.removeEdge(obj.ID);
        edges.add(obj.ID);
        nodes.add(e.Parent);
        nodes.add(e.Child);
        break;
      }
      default:
        return false;
    }
    this.emit({ reset: false, nodes, edges });
    return true;
  }

  insertEdge(e) {
    this.edges.set(e.ID, e);
    for (const id of [e.Parent, e.Child]) {
      let s = this.incident.get(id);
      if (!s) this.incident.set(id, (s = new Set()));
      s.add(e.ID);
    }
    if (e.Metadata && e.Metadata.RelationType === OWNERSHIP) {
      const prev = this.owner.get(e.Child);
      if (prev !== undefined) this.owned.get(prev)?.delete(e.Child);
      this.owner.set(e.Child, e.Parent);
      let s = this.owned.get(e.Parent);
      if (!s) this.owned.set(e.Parent, (s = new Set()));
      s.add(e.Child);
    }
  }

  removeEdge(id) {
    const e = this.edges.get(id);
    if (!e) return;
    this.edges.delete(id);
    this.incident.get(e.Parent)?.delete(id);
    this.incident.get(e.Child)?.delete(id);
    if (e.Metadata && e.Metadata.RelationType === OWNERSHIP && this.owner.get(e.Child) === e.Parent) {
      this.owner.delete(e.Child);
      const s = this.owned.get(e.Parent);
      if (s) {
        s.delete(e.Child);
        if (s.size === 0) this.owned.delete(e.Parent);
      }
    }
  }

  /** Every node owned, directly or not, by `id`. */
  descendants(id) {
    const out = [];
    const stack = [id];
    const seen = new Set([id]);
    while (stack.length) {
      const cur = stack.pop();
      for (const c of this.owned.get(cur) || []) {
        if (seen.has(c)) continue;
        seen.add(c);
        out.push(c);
        stack.push(c);
      }
    }
    return out;
  }

  /** The chain of owners of `id`, nearest first (cycles cut). */
  ancestors(id) {
    const out = [];
    const seen = new Set([id]);
    let cur = this.owner.get(id);
    while (cur !== undefined && !seen.has(cur)) {
      out.push(cur);
      seen.add(cur);
      cur = this.owner.get(cur);
    }
    return out;
  }

  name(id) {
    const n = this.nodes.get(id);
    if (!n) return id;
    const m = n.Metadata || {};
    return m.Name !== undefined ? String(m.Name) : id;
  }
}
