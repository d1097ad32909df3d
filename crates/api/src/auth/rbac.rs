//! Skydive's role model: `admin` may do everything, `guest` may read the topology and the
//! status and subscribe to `/ws/subscriber`; `rbac.policy` adds casbin-style lines
//! (`p, subject, object, action, allow|deny` and `g, user, role`).

use std::collections::HashMap;

use axum::http::Method;
use serde_json::Value;

use super::User;

/// One policy line: `subject` may (or may not) do `action` on `object`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Policy {
    subject: String,
    object: String,
    action: String,
    allow: bool,
}

/// Skydive's RBAC: the built-in roles plus `rbac.policy` lines.
#[derive(Debug, Clone)]
pub struct Rbac {
    policies: Vec<Policy>,
    /// user or role -> roles it has
    groups: HashMap<String, Vec<String>>,
}

const WS_ENDPOINTS: [&str; 7] = [
    "/ws/agent/topology",
    "/ws/agent/flow",
    "/ws/subscriber/flow",
    "/ws/publisher",
    "/ws/replication",
    "/ws/subscriber",
    "/ws/pubsub",
];

impl Rbac {
    /// The built-in policy and the configuration's extra lines.
    pub fn new(extra: &[String]) -> anyhow::Result<Rbac> {
        let mut policies = Vec::new();
        let mut allow = |sub: &str, obj: &str, act: &str| {
            policies.push(Policy {
                subject: sub.into(),
                object: obj.into(),
                action: act.into(),
                allow: true,
            });
        };
        for obj in [
            "alert",
            "capture",
            "injectpacket",
            "workflow",
            "node",
            "noderule",
            "edge",
            "edgerule",
        ] {
            allow("admin", obj, "read");
            allow("admin", obj, "write");
        }
        allow("admin", "capture", "rawpackets");
        allow("admin", "config", "read");
        allow("admin", "pcap", "write");
        allow("admin", "status", "read");
        allow("admin", "topology", "read");
        allow("admin", "workflow.call", "write");
        for ep in WS_ENDPOINTS {
            allow("admin", "websocket", ep);
        }
        allow("guest", "status", "read");
        allow("guest", "topology", "read");
        allow("guest", "websocket", "/ws/subscriber");
        let mut rbac = Rbac {
            policies,
            groups: HashMap::new(),
        };
        for (i, line) in extra.iter().enumerate() {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            match f.as_slice() {
                ["p", sub, obj, act] => rbac.policies.push(Policy {
                    subject: sub.to_string(),
                    object: obj.to_string(),
                    action: act.to_string(),
                    allow: true,
                }),
                ["p", sub, obj, act, eft] if matches!(*eft, "allow" | "deny") => {
                    rbac.policies.push(Policy {
                        subject: sub.to_string(),
                        object: obj.to_string(),
                        action: act.to_string(),
                        allow: *eft == "allow",
                    });
                }
                ["g", user, role] => rbac
                    .groups
                    .entry(user.to_string())
                    .or_default()
                    .push(role.to_string()),
                _ => anyhow::bail!(
                    "rbac.policy[{i}]: expected `p, subject, object, action[, allow|deny]` or `g, user, role`, got {line:?}"
                ),
            }
        }
        Ok(rbac)
    }

    /// The user, its role and every role they inherit (`g` lines, transitively).
    fn subjects(&self, user: &User) -> Vec<String> {
        let mut out = vec![user.name.clone(), user.role.clone()];
        let mut i = 0;
        while i < out.len() {
            if let Some(roles) = self.groups.get(&out[i]) {
                for r in roles {
                    if !out.contains(r) {
                        out.push(r.clone());
                    }
                }
            }
            i += 1;
        }
        out
    }

    /// Some allow and no deny, as casbin's effect says.
    pub fn enforce(&self, user: &User, object: &str, action: &str) -> bool {
        let subs = self.subjects(user);
        let mut allowed = false;
        for p in &self.policies {
            if p.object == object && p.action == action && subs.contains(&p.subject) {
                if !p.allow {
                    return false;
                }
                allowed = true;
            }
        }
        allowed
    }

    /// What the user may and may not do, as `/login` and the `permissions` cookie list it.
    pub fn permissions(&self, user: &User) -> Vec<Value> {
        let subs = self.subjects(user);
        self.policies
            .iter()
            .filter(|p| subs.contains(&p.subject))
            .map(
                |p| serde_json::json!({"Object": p.object, "Action": p.action, "Allowed": p.allow}),
            )
            .collect()
    }
}

/// What a request needs: an RBAC object and action, or only to be authenticated.
pub fn permission_for(method: &Method, path: &str) -> Option<(String, String)> {
    if path.starts_with("/ws/") {
        return Some(("websocket".into(), path.trim_end_matches('/').to_string()));
    }
    let rest = path.strip_prefix("/api/")?;
    let object = rest.split('/').next().unwrap_or("");
    let read = matches!(*method, Method::GET | Method::HEAD);
    let action = if read { "read" } else { "write" };
    match object {
        // A query is a read, whatever its method.
        "topology" | "status" | "config" => Some((object.into(), "read".into())),
        "pcap" => Some(("pcap".into(), "write".into())),
        "capture" | "alert" | "node" | "edge" | "noderule" | "edgerule" | "injectpacket"
        | "workflow" => Some((object.into(), action.into())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_policy_lines() {
        let rbac = Rbac::new(&[
            "p, ops, capture, write, allow".into(),
            "p, ops, capture, read".into(),
            "g, carol, ops".into(),
            "g, ops, guest".into(),
            "p, dave, topology, read, deny".into(),
        ])
        .unwrap();
        let admin = User {
            name: "a".into(),
            role: "admin".into(),
        };
        let guest = User {
            name: "g".into(),
            role: "guest".into(),
        };
        let carol = User {
            name: "carol".into(),
            role: "guest".into(),
        };
        let dave = User {
            name: "dave".into(),
            role: "admin".into(),
        };
        assert!(rbac.enforce(&admin, "capture", "write"));
        assert!(rbac.enforce(&admin, "websocket", "/ws/agent/topology"));
        assert!(rbac.enforce(&guest, "topology", "read"));
        assert!(rbac.enforce(&guest, "websocket", "/ws/subscriber"));
        assert!(!rbac.enforce(&guest, "capture", "read"));
        assert!(!rbac.enforce(&guest, "websocket", "/ws/publisher"));
        assert!(rbac.enforce(&carol, "capture", "write"));
        assert!(rbac.enforce(&carol, "status", "read")); // ops inherits guest
        assert!(!rbac.enforce(&dave, "topology", "read")); // an explicit deny wins
        assert!(rbac.enforce(&dave, "status", "read"));
        let perms = rbac.permissions(&guest);
        assert_eq!(perms.len(), 3);
        assert!(perms.contains(
            &serde_json::json!({"Object": "topology", "Action": "read", "Allowed": true})
        ));
        let e = Rbac::new(&["x, y".into()]).unwrap_err().to_string();
        assert!(e.starts_with("rbac.policy[0]: expected"), "{e}");
    }

    #[test]
    fn requests_map_to_objects_and_actions() {
        let p = |m: Method, path: &str| permission_for(&m, path).map(|(o, a)| format!("{o} {a}"));
        assert_eq!(
            p(Method::POST, "/api/topology").as_deref(),
            Some("topology read")
        );
        assert_eq!(
            p(Method::GET, "/api/capture").as_deref(),
            Some("capture read")
        );
        assert_eq!(
            p(Method::DELETE, "/api/capture/x").as_deref(),
            Some("capture write")
        );
        assert_eq!(
            p(Method::PATCH, "/api/node/x").as_deref(),
            Some("node write")
        );
        assert_eq!(p(Method::POST, "/api/pcap").as_deref(), Some("pcap write"));
        assert_eq!(
            p(Method::GET, "/ws/subscriber").as_deref(),
            Some("websocket /ws/subscriber")
        );
        assert_eq!(p(Method::GET, "/api"), None);
    }
}
