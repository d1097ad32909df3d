//! The netlink probe of one namespace: reads the namespace's state, then follows the
//! kernel's events; polls the interface counters; asks ethtool about each interface.
//! Failures (an overrun of the event socket, a dump interrupted by a change, a socket error)
//! are logged and followed by a full resynchronisation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{LinkMessage, Stats64};
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use skydive_graph::{Value, now_ms};
use tokio::sync::{mpsc, watch};

use super::reducer::{Changes, NsModel, delta, metric};
use super::socket::{NetlinkError, NlSocket};
use crate::netns::{NsKey, NsSockets};
use crate::status::ProbeStatus;
use crate::topology::{Input, LinkState};

/// The namespaces known to the agent, for turning the namespace IDs of the kernel (nsid)
/// into namespaces.
#[derive(Debug)]
pub struct NsRegistry {
    root: NsKey,
    paths: Mutex<BTreeMap<NsKey, PathBuf>>,
    version: watch::Sender<u64>,
}

impl NsRegistry {
    pub fn new(root: NsKey, root_path: PathBuf) -> Arc<NsRegistry> {
        Arc::new(NsRegistry {
            root,
            paths: Mutex::new([(root, root_path)].into_iter().collect()),
            version: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NsKey, PathBuf>> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, key: NsKey, path: PathBuf) {
        self.lock().insert(key, path);
        self.version.send_modify(|v| *v += 1);
    }

    pub fn remove(&self, key: NsKey) {
        self.lock().remove(&key);
        self.version.send_modify(|v| *v += 1);
    }

    /// The namespaces, the host's first.
    fn candidates(&self) -> Vec<(NsKey, PathBuf)> {
        let paths = self.lock();
        let mut v: Vec<(NsKey, PathBuf)> = paths.iter().map(|(k, p)| (*k, p.clone())).collect();
        v.sort_by_key(|(k, _)| *k != self.root);
        v
    }
}

/// Settings of a namespace's probe.
#[derive(Clone, Debug)]
pub struct NsProbeConfig {
    pub metrics_every: Duration,
    /// What ethtool was asked, for the ethtool probe's status.
    pub ethtool: Arc<crate::ethtool::EthtoolCounters>,
}

/// The probe of one namespace.
pub struct NsProbe {
    key: NsKey,
    events: NlSocket,
    requests: NlSocket,
    ioctl: OwnedFd,
    model: NsModel,
    tx: mpsc::Sender<Input>,
    registry: Arc<NsRegistry>,
    /// nsid (as this namespace numbers the others) → namespace.
    nsids: HashMap<i32, NsKey>,
    /// Counters at the last poll, and when.
    counters: HashMap<u32, (Stats64, i64)>,
    /// The `Metric` and `LastUpdateMetric` of each interface.
    metrics: HashMap<u32, (Value, Option<Value>)>,
    /// The name ethtool was last asked about, per interface (a rename asks again).
    ethtool_names: HashMap<u32, String>,
    status: Arc<ProbeStatus>,
    cfg: NsProbeConfig,
    /// Veths reported without their peer, to be read again, with how many times they were,
    /// and when.
    peerless: BTreeMap<u32, u32>,
    peerless_due: Option<tokio::time::Instant>,
}

/// How long after a veth is reported without its peer it is read again, and how many times.
const PEERLESS_RECHECK: Duration = Duration::from_millis(100);
const PEERLESS_TRIES: u32 = 5;

impl std::fmt::Debug for NsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsProbe").field("ns", &self.key).finish()
    }
}

fn dump_links() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

impl NsProbe {
    pub fn new(
        key: NsKey,
        sockets: NsSockets,
        tx: mpsc::Sender<Input>,
        registry: Arc<NsRegistry>,
        status: Arc<ProbeStatus>,
        cfg: NsProbeConfig,
    ) -> std::io::Result<NsProbe> {
        Ok(NsProbe {
            key,
            events: NlSocket::new(sockets.events)?,
            requests: NlSocket::new(sockets.requests)?,
            ioctl: sockets.ioctl,
            model: NsModel::new(),
            tx,
            registry,
            nsids: HashMap::new(),
            counters: HashMap::new(),
            metrics: HashMap::new(),
            ethtool_names: HashMap::new(),
            status,
            cfg,
            peerless: BTreeMap::new(),
            peerless_due: None,
        })
    }

    /// Reads the whole state of the namespace.
    async fn dump_all(&mut self) -> Result<NsModel, NetlinkError> {
        let mut model = NsModel::new();
        let mut requests: Vec<RouteNetlinkMessage> = vec![dump_links()];
        requests.push(RouteNetlinkMessage::GetAddress(AddressMessage::default()));
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut r = RouteMessage::default();
            r.header.address_family = fam;
            requests.push(RouteNetlinkMessage::GetRoute(r));
        }
        for fam in [
            AddressFamily::Inet,
            AddressFamily::Inet6,
            AddressFamily::Bridge,
        ] {
            let mut n = NeighbourMessage::default();
            n.header.family = fam;
            requests.push(RouteNetlinkMessage::GetNeighbour(n));
        }
        for req in requests {
            for m in self.requests.dump(req).await? {
                model.apply(&m);
            }
        }
        Ok(model)
    }

    /// A full resynchronisation: the namespace's state read again and sent whole.
    async fn sync(&mut self) -> Result<(), NetlinkError> {
        let mut model = loop {
            match self.dump_all().await {
                Ok(m) => break m,
                Err(NetlinkError::Interrupted) => continue,
                Err(e) => return Err(e),
            }
        };
        model.ethtool = self.model.ethtool.clone();
        let old_names: BTreeMap<u32, String> = self
            .model
            .links
            .iter()
            .map(|(i, l)| (*i, l.name.clone()))
            .collect();
        self.model = model;
        let indexes: Vec<u32> = self.model.links.keys().copied().collect();
        for i in &indexes {
            if old_names.get(i) != self.model.links.get(i).map(|l| &l.name)
                || !self.model.ethtool.contains_key(i)
            {
                self.read_ethtool(*i);
            }
        }
        self.poll_counters(&indexes, false);
        self.peerless.clear();
        self.note_peerless(&indexes.iter().copied().collect());
        let mut links = Vec::new();
        for i in indexes {
            if let Some(l) = self.link_state(i).await {
                links.push(l);
            }
        }
        self.status.set_interfaces(self.key, links.len());
        let _ = self
            .tx
            .send(Input::Links {
                ns: self.key,
                full: true,
                links,
                removed: Vec::new(),
            })
            .await;
        Ok(())
    }

    fn read_ethtool(&mut self, index: u32) {
        let Some(name) = self.model.links.get(&index).map(|l| l.name.clone()) else {
            return;
        };
        let info = crate::ethtool::read(self.ioctl.as_fd(), &name);
        self.cfg.ethtool.record(&info);
        self.model.ethtool.insert(index, info);
        self.ethtool_names.insert(index, name);
    }

    /// Updates `Metric`/`LastUpdateMetric` from the counters in the model; returns the
    /// interfaces whose counters moved.
    fn poll_counters(&mut self, indexes: &[u32], with_delta: bool) -> BTreeSet<u32> {
        let now = now_ms();
        let mut moved = BTreeSet::new();
        for i in indexes {
            let Some(stats) = self.model.links.get(i).and_then(|l| l.stats) else {
                continue;
            };
            let prev = self.counters.get(i).copied();
            if prev.is_some_and(|(p, _)| p == stats) {
                continue;
            }
            let mut m = metric(&stats, 0, now);
            m.remove("Start");
            let last = match (with_delta, prev) {
                (true, Some((p, at))) => Some(Value::Map(metric(&delta(&stats, &p), at, now))),
                _ => None,
            };
            self.metrics.insert(*i, (Value::Map(m), last));
            self.counters.insert(*i, (stats, now));
            moved.insert(*i);
        }
        moved
    }

    /// Reads the counters of every interface again (and ethtool's view of them).
    async fn poll_metrics(&mut self) -> Result<(), NetlinkError> {
        let msgs = match self.requests.dump(dump_links()).await {
            Err(NetlinkError::Interrupted) => return Ok(()),
            r => r?,
        };
        for m in msgs {
            if let RouteNetlinkMessage::NewLink(l) = m
                && let Some(rec) = self.model.links.get_mut(&l.header.index)
            {
                rec.stats = super::reducer::link_record(&l).stats;
            }
        }
        let indexes: Vec<u32> = self.model.links.keys().copied().collect();
        let mut changed = self.poll_counters(&indexes, true);
        for i in &indexes {
            let before = self.model.ethtool.get(i).cloned();
            self.read_ethtool(*i);
            if self.model.ethtool.get(i) != before.as_ref() {
                changed.insert(*i);
            }
        }
        self.publish(Changes {
            changed,
            removed: BTreeSet::new(),
        })
        .await;
        Ok(())
    }

    /// The namespace a kernel nsid of this namespace stands for.
    async fn resolve(&mut self, nsid: i32) -> Option<NsKey> {
        if let Some(k) = self.nsids.get(&nsid) {
            return Some(*k);
        }
        let known: BTreeSet<NsKey> = self.nsids.values().copied().collect();
        for (key, path) in self.registry.candidates() {
            if key == self.key || known.contains(&key) {
                continue;
            }
            let Ok(f) = File::open(&path) else { continue };
            let mut msg = NsidMessage::default();
            msg.attributes.push(NsidAttribute::Fd(f.as_raw_fd() as u32));
            let Ok(RouteNetlinkMessage::NewNsId(answer)) = self
                .requests
                .request(RouteNetlinkMessage::GetNsId(msg))
                .await
            else {
                continue;
            };
            let id = answer.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) => Some(*id),
                _ => None,
            });
            if let Some(id) = id.filter(|i| *i >= 0) {
                self.nsids.insert(id, key);
                if id == nsid {
                    return Some(key);
                }
            }
        }
        None
    }

    async fn link_state(&mut self, index: u32) -> Option<LinkState> {
        let l = self.model.links.get(&index)?.clone();
        let mut metadata = self.model.metadata(index)?;
        if let Some((m, last)) = self.metrics.get(&index) {
            metadata.insert("Metric", m.clone());
            if let Some(last) = last {
                metadata.insert("LastUpdateMetric", last.clone());
            }
        }
        let link = match (l.link, l.link_netnsid) {
            (None, _) => None,
            (Some(i), None) => Some((None, i)),
            (Some(i), Some(nsid)) => self.resolve(nsid).await.map(|k| (Some(k), i)),
        };
        let ty = metadata
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or("device")
            .to_string();
        Some(LinkState {
            index,
            name: l.name.clone(),
            ty,
            metadata,
            master: l.master,
            link,
        })
    }

    async fn publish(&mut self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        let mut links = Vec::new();
        for i in &changes.changed {
            if let Some(l) = self.link_state(*i).await {
                links.push(l);
            }
        }
        for i in &changes.removed {
            self.counters.remove(i);
            self.metrics.remove(i);
        }
        self.status.set_interfaces(self.key, self.model.links.len());
        let _ = self
            .tx
            .send(Input::Links {
                ns: self.key,
                full: false,
                links,
                removed: changes.removed.into_iter().collect(),
            })
            .await;
    }

    /// The kernel announces the end of a veth made in another namespace before the pair is
    /// joined (`ip link add … peer name y netns b`: `y` is registered first), so that end comes
    /// without its peer and nothing announces it again. Such ends are read again a moment
    /// later, a few times.
    fn note_peerless(&mut self, changed: &BTreeSet<u32>) {
        for i in changed {
            match self.model.links.get(i) {
                Some(l) if l.ty == "veth" && l.link.is_none() => {
                    self.peerless.entry(*i).or_insert(0);
                    self.peerless_due
                        .get_or_insert_with(|| tokio::time::Instant::now() + PEERLESS_RECHECK);
                }
                _ => {
                    self.peerless.remove(i);
                }
            }
        }
    }

    async fn recheck_peerless(&mut self) -> Result<(), NetlinkError> {
        self.peerless_due = None;
        let mut changes = Changes::default();
        for (i, tries) in std::mem::take(&mut self.peerless) {
            let mut msg = LinkMessage::default();
            msg.header.index = i;
            match self
                .requests
                .request(RouteNetlinkMessage::GetLink(msg))
                .await
            {
                Ok(answer) => changes.merge(self.model.apply(&answer)),
                // Gone meanwhile: its deletion is on its way.
                Err(NetlinkError::Refused(_)) => continue,
                Err(e) => return Err(e),
            }
            if self.model.links.get(&i).is_some_and(|l| l.link.is_none())
                && tries + 1 < PEERLESS_TRIES
            {
                self.peerless.insert(i, tries + 1);
                self.peerless_due =
                    Some(tokio::time::Instant::now() + PEERLESS_RECHECK * (tries + 2));
            }
        }
        self.publish(changes).await;
        Ok(())
    }

    /// Links that point at a namespace not known when they were reported: the ones whose
    /// namespace is known now are reported again (the others are as they were reported).
    async fn retry_unresolved(&mut self) {
        let pending: Vec<(u32, i32)> = self
            .model
            .links
            .values()
            .filter_map(|l| Some((l.index, l.link_netnsid?)))
            .filter(|(_, n)| !self.nsids.contains_key(n))
            .collect();
        let mut resolved = BTreeSet::new();
        for (index, nsid) in pending {
            if self.resolve(nsid).await.is_some() {
                resolved.insert(index);
            }
        }
        if !resolved.is_empty() {
            self.publish(Changes {
                changed: resolved,
                removed: BTreeSet::new(),
            })
            .await;
        }
    }

    /// Runs until `stop` turns true or the topology goes away.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut registry = self.registry.version.subscribe();
        let mut metrics = tokio::time::interval(self.cfg.metrics_every);
        metrics.tick().await;
        loop {
            if let Err(e) = self.sync().await {
                self.status.error(format!("namespace {}: {e}", self.key));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => return,
                }
            }
            loop {
                let r = tokio::select! {
                    r = self.events.recv() => r.map(Some),
                    _ = metrics.tick() => self.poll_metrics().await.map(|_| None),
                    _ = registry.changed() => {
                        self.retry_unresolved().await;
                        Ok(None)
                    }
                    _ = tokio::time::sleep_until(
                        self.peerless_due.unwrap_or_else(tokio::time::Instant::now)
                    ), if self.peerless_due.is_some() => {
                        self.recheck_peerless().await.map(|_| None)
                    }
                    _ = stop.changed() => return,
                    _ = self.tx.closed() => return,
                };
                match r {
                    Ok(Some((msgs, bad))) => {
                        if bad > 0 {
                            self.status.malformed(bad as u64);
                        }
                        let mut changes = Changes::default();
                        for m in msgs {
                            if let netlink_packet_core::NetlinkPayload::InnerMessage(inner) =
                                m.payload
                            {
                                changes.merge(self.model.apply(&inner));
                            }
                        }
                        let renamed: Vec<u32> = changes
                            .changed
                            .iter()
                            .copied()
                            .filter(|i| {
                                self.ethtool_names.get(i)
                                    != self.model.links.get(i).map(|l| &l.name)
                            })
                            .collect();
                        for i in &changes.removed {
                            self.ethtool_names.remove(i);
                        }
                        for i in renamed {
                            self.read_ethtool(i);
                        }
                        self.note_peerless(&changes.changed);
                        self.publish(changes).await;
                    }
                    Ok(None) => {}
                    Err(NetlinkError::Overrun) => {
                        self.status.overrun();
                        tracing::warn!(
                            ns = self.key,
                            "netlink events lost; reading the namespace again"
                        );
                        break;
                    }
                    Err(e) => {
                        self.status.error(format!("namespace {}: {e}", self.key));
                        tracing::warn!(ns = self.key, "netlink probe error, resynchronising: {e}");
                        break;
                    }
                }
            }
        }
    }
}
