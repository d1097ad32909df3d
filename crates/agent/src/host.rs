//! The host node: the root of an agent's graph (Skydive's host node), with what Skydive's
//! hardware probe reported (CPUs, OS, kernel) and the `agent.metadata` of the configuration.

use std::path::Path;

use skydive_graph::id::host_tid;
use skydive_graph::{Id, Map, Node, Value, gen_id_from};

/// The ID of the host node: derived from its TID, so it is the same after a restart.
pub fn host_node_id(host_id: &str) -> Id {
    gen_id_from(&[&host_tid(host_id), "host"])
}

fn read(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(root.join(path.trim_start_matches('/'))).ok()
}

/// `/proc/cpuinfo` as Skydive's `CPU` list.
pub fn parse_cpuinfo(text: &str) -> Vec<Value> {
    let mut cpus = Vec::new();
    for block in text.split("\n\n").filter(|b| b.contains("processor")) {
        let mut m = Map::new();
        let field = |name: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        let int =
            |name: &str| field(name).and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok());
        if let Some(v) = int("processor") {
            m.insert("CPU", v);
        }
        for (key, name) in [
            ("VendorID", "vendor_id"),
            ("Family", "cpu family"),
            ("Model", "model"),
            ("PhysicalID", "physical id"),
            ("CoreID", "core id"),
            ("ModelName", "model name"),
            ("Microcode", "microcode"),
        ] {
            if let Some(v) = field(name) {
                m.insert(key, v.as_str());
            }
        }
        for (key, name) in [
            ("Stepping", "stepping"),
            ("Cores", "cpu cores"),
            ("CacheSize", "cache size"),
        ] {
            if let Some(v) = int(name) {
                m.insert(key, v);
            }
        }
        if let Some(v) = field("cpu MHz").and_then(|v| v.parse::<f64>().ok()) {
            m.insert("Mhz", Value::Float(v));
        }
        cpus.push(Value::Map(m));
    }
    cpus
}

/// `KEY="value"` lines of `/etc/os-release`.
fn os_release(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// What the hardware probe reports, read under `root` (`/` on a real host).
pub fn hardware_metadata(root: &Path) -> Map {
    let mut m = Map::new();
    if let Some(text) = read(root, "/proc/cpuinfo") {
        let cpus = parse_cpuinfo(&text);
        if !cpus.is_empty() {
            m.insert("CPU", Value::Array(cpus));
        }
        if text.contains(" hypervisor") {
            m.insert("VirtualizationRole", "guest");
        }
    }
    m.insert("OS", std::env::consts::OS);
    if let Some(text) = read(root, "/etc/os-release") {
        if let Some(id) = os_release(&text, "ID") {
            let family = os_release(&text, "ID_LIKE")
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
                .unwrap_or_else(|| id.clone());
            m.insert("Platform", id.as_str());
            m.insert("PlatformFamily", family.as_str());
        }
        // Debian keeps the point release in /etc/debian_version.
        let version = read(root, "/etc/debian_version")
            .map(|v| v.trim().to_string())
            .or_else(|| os_release(&text, "VERSION_ID"));
        if let Some(v) = version {
            m.insert("PlatformVersion", v.as_str());
        }
    }
    if let Some(v) = read(root, "/proc/sys/kernel/osrelease") {
        m.insert("KernelVersion", v.trim());
    }
    if let Some(v) = read(root, "/proc/cmdline") {
        m.insert("KernelCmdLine", v.trim());
    }
    if root.join(".dockerenv").exists() {
        m.insert("VirtualizationSystem", "docker");
        m.insert("VirtualizationRole", "guest");
    }
    if let Some(v) = read(root, "/etc/machine-id") {
        m.insert("InstanceID", v.trim());
    }
    if let Some(v) = read(root, "/sys/devices/system/cpu/isolated") {
        m.insert(
            "IsolatedCPU",
            Value::Array(
                parse_cpu_list(v.trim())
                    .into_iter()
                    .map(Value::Int)
                    .collect(),
            ),
        );
    }
    m
}

/// A kernel CPU list (`0-2,5`).
fn parse_cpu_list(s: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                    out.extend(a..=b.min(a + 4096));
                }
            }
            None => out.extend(part.parse::<i64>().ok()),
        }
    }
    out
}

/// The host node of `host_id`: identity, hardware, then `agent.metadata` (which may
/// override anything but the identity).
pub fn host_node(host_id: &str, agent_metadata: &serde_json::Value, root: &Path, now: i64) -> Node {
    let mut m = hardware_metadata(root);
    if let serde_json::Value::Object(extra) = agent_metadata {
        for (k, v) in extra {
            m.set_path(k, Value::from_json(v));
        }
    }
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    m.insert("Hostname", hostname.as_str());
    m.insert("Name", host_id);
    m.insert("Type", "host");
    m.insert("TID", host_tid(host_id).as_str());
    Node::new(
        host_node_id(host_id),
        m,
        host_id,
        &format!("agent.{host_id}"),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_becomes_skydive_cpu_entries() {
        // Two blocks of a 2-vCPU AMD guest's /proc/cpuinfo, shortened.
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\nstepping\t: 1\nmicrocode\t: 0x1000065\ncpu MHz\t\t: 2596.128\ncache size\t: 1024 KB\nphysical id\t: 0\ncore id\t\t: 0\ncpu cores\t: 2\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\ncore id\t\t: 1\n\n";
        let cpus = parse_cpuinfo(text);
        assert_eq!(cpus.len(), 2);
        let c0 = cpus[0].as_map().unwrap();
        assert_eq!(c0.get("CPU"), Some(&Value::Int(0)));
        assert_eq!(
            c0.get("ModelName").and_then(Value::as_str),
            Some("AMD EPYC")
        );
        assert_eq!(c0.get("CacheSize"), Some(&Value::Int(1024)));
        assert_eq!(c0.get("Mhz"), Some(&Value::Float(2596.128)));
        assert_eq!(c0.get("Family").and_then(Value::as_str), Some("25"));
        assert_eq!(
            cpus[1]
                .as_map()
                .unwrap()
                .get("CoreID")
                .and_then(Value::as_str),
            Some("1")
        );
    }

    #[test]
    fn host_node_has_identity_hardware_and_configured_metadata() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::create_dir_all(root.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(
            root.path().join("etc/os-release"),
            "ID=debian\nVERSION_ID=\"12\"\n",
        )
        .unwrap();
        std::fs::write(root.path().join("proc/sys/kernel/osrelease"), "6.1.0\n").unwrap();
        let md = serde_json::json!({"mydict": {"value": 123}, "myarrays": {"integers": [1, 2, 3]}, "Name": "spoof"});
        let n = host_node("host1", &md, root.path(), 10);
        assert_eq!(n.name(), "host1");
        assert_eq!(n.type_str(), "host");
        assert_eq!(n.str_at("TID"), Some(host_tid("host1").as_str()));
        assert_eq!(n.str_at("Platform"), Some("debian"));
        assert_eq!(n.str_at("PlatformVersion"), Some("12"));
        assert_eq!(n.str_at("KernelVersion"), Some("6.1.0"));
        assert_eq!(n.metadata.get_path("mydict.value"), Some(&Value::Int(123)));
        assert_eq!(
            n.metadata.get_path("myarrays.integers"),
            Some(&Value::Array(vec![
                Value::Int(1),
                Value::Int(2),
                Value::Int(3)
            ]))
        );
        assert_eq!(n.origin.as_str(), "agent.host1");
        assert_eq!(n.id, host_node_id("host1"), "stable across restarts");
    }

    #[test]
    fn cpu_lists_expand_ranges() {
        assert_eq!(parse_cpu_list("0-2,5"), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list(""), Vec::<i64>::new());
    }
}
