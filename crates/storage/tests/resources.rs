//! The resource battery, run through the backend contract against every backend.

mod common;

use skydive_storage::ResourceStore;

fn battery(store: &dyn ResourceStore) {
    let v = serde_json::json!({"UUID": "a", "GremlinQuery": "G.V()"});
    store.put("capture", "a", &v, 0).unwrap();
    store
        .put("capture", "b", &serde_json::json!({"UUID": "b"}), 1000)
        .unwrap();
    store
        .put("alert", "a", &serde_json::json!({"UUID": "x"}), 0)
        .unwrap();
    assert_eq!(store.get("capture", "a", 10).unwrap(), Some(v));
    assert_eq!(store.get("capture", "zz", 10).unwrap(), None);
    assert_eq!(store.list("capture", 10).unwrap().len(), 2);
    assert_eq!(
        store
            .list("capture", 1000)
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["a"]
    );
    assert_eq!(
        store.get("capture", "b", 1000).unwrap(),
        None,
        "expired at its deadline"
    );
    let expired = store.take_expired(1000).unwrap();
    assert_eq!(
        expired,
        vec![(
            "capture".to_string(),
            "b".to_string(),
            serde_json::json!({"UUID": "b"})
        )]
    );
    assert!(store.take_expired(1000).unwrap().is_empty());
    let v2 = serde_json::json!({"UUID": "a", "GremlinQuery": "G.E()"});
    store.put("capture", "a", &v2, 0).unwrap();
    assert_eq!(store.get("capture", "a", 10).unwrap(), Some(v2));
    assert!(store.delete("capture", "a", 10).unwrap());
    assert!(!store.delete("capture", "a", 10).unwrap());
    assert_eq!(
        store.list("alert", 10).unwrap().len(),
        1,
        "kinds are separate"
    );
}

#[test]
fn every_backend_passes_the_resource_battery() {
    let dir = tempfile::tempdir().unwrap();
    for b in common::backends(dir.path()) {
        eprintln!("backend {}", b.driver);
        battery(b.resources.as_ref());
    }
}
