//! Validation of nodes and edges received from API clients and publishers, against Skydive's
//! JSON schemas (`statics/schemas/node.schema`, `edge.schema`), with messages in the form its
//! validator printed them (clients compare some of them verbatim).
//!
//! Written by hand: the schemas are three small rules, and no schema crate reproduces the
//! messages of Skydive's Go validator.

use serde_json::Value;

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check_string(
    errors: &mut Vec<String>,
    field: &str,
    v: Option<&Value>,
    required_in: &str,
    min_len: usize,
) {
    match v {
        None => errors.push(format!(
            "{required_in}: {} is required",
            field.rsplit('.').next().unwrap_or(field)
        )),
        Some(Value::String(s)) if s.chars().count() < min_len => errors.push(format!(
            "{field}: String length must be greater than or equal to {min_len}"
        )),
        Some(Value::String(_)) => {}
        Some(other) => errors.push(format!(
            "{field}: Invalid type. Expected: string, given: {}",
            type_name(other)
        )),
    }
}

fn check_optional(errors: &mut Vec<String>, field: &str, v: Option<&Value>, expected: &str) {
    if let Some(v) = v.filter(|v| !v.is_null())
        && type_name(v) != expected
    {
        errors.push(format!(
            "{field}: Invalid type. Expected: {expected}, given: {}",
            type_name(v)
        ));
    }
}

/// Why an element does not match its schema: every violation, as the validator reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaError {
    pub violations: Vec<String>,
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid schema: ")?;
        for v in &self.violations {
            writeln!(f, "{v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemaError {}

fn render(errors: &[String]) -> SchemaError {
    SchemaError {
        violations: errors.to_vec(),
    }
}

/// Checks a node against the node schema. The error is the validator's report.
pub fn validate_node(v: &Value) -> Result<(), SchemaError> {
    let Value::Object(m) = v else {
        return Err(render(&[format!(
            "(root): Invalid type. Expected: object, given: {}",
            type_name(v)
        )]));
    };
    let mut root = Vec::new();
    match m.get("ID") {
        None => root.push("(root): ID is required".to_string()),
        id => check_string(&mut root, "ID", id, "(root)", 1),
    }
    if !m.contains_key("Metadata") {
        root.push("(root): Metadata is required".to_string());
    }
    check_optional(&mut root, "Host", m.get("Host"), "string");
    check_optional(&mut root, "Origin", m.get("Origin"), "string");
    check_optional(&mut root, "CreatedAt", m.get("CreatedAt"), "integer");
    check_optional(&mut root, "UpdatedAt", m.get("UpdatedAt"), "integer");
    if !root.is_empty() {
        let mut all = vec!["(root): Must validate all the schemas (allOf)".to_string()];
        all.extend(root);
        return Err(render(&all));
    }
    let Some(Value::Object(md)) = m.get("Metadata") else {
        return Err(render(&[
            "(root): Must validate all the schemas (allOf)".to_string(),
            format!(
                "Metadata: Invalid type. Expected: object, given: {}",
                type_name(m.get("Metadata").unwrap_or(&Value::Null))
            ),
        ]));
    };
    let ty = md.get("Type");
    let mut branch = Vec::new();
    match ty.and_then(Value::as_str) {
        Some("netns") => {
            check_string(&mut branch, "Metadata.Path", md.get("Path"), "Metadata", 0);
            check_string(&mut branch, "Metadata.Name", md.get("Name"), "Metadata", 1);
        }
        Some("ovsport") => {
            check_string(&mut branch, "Metadata.UUID", md.get("UUID"), "Metadata", 0);
            check_string(&mut branch, "Metadata.Name", md.get("Name"), "Metadata", 1);
        }
        _ => {
            check_string(&mut branch, "Metadata.Type", ty, "Metadata", 1);
            check_string(&mut branch, "Metadata.Name", md.get("Name"), "Metadata", 1);
        }
    }
    if branch.is_empty() {
        return Ok(());
    }
    let mut all = vec![
        "(root): Must validate all the schemas (allOf)".to_string(),
        "Metadata: Must validate all the schemas (allOf)".to_string(),
    ];
    all.extend(branch);
    all.push("(root): Must validate at least one schema (anyOf)".to_string());
    Err(render(&all))
}

/// Checks an edge against the edge schema (which also requires a `RelationType`).
pub fn validate_edge(v: &Value) -> Result<(), SchemaError> {
    let Value::Object(m) = v else {
        return Err(render(&[format!(
            "(root): Invalid type. Expected: object, given: {}",
            type_name(v)
        )]));
    };
    let mut errors = Vec::new();
    check_string(&mut errors, "ID", m.get("ID"), "(root)", 1);
    check_string(&mut errors, "Parent", m.get("Parent"), "(root)", 1);
    check_string(&mut errors, "Child", m.get("Child"), "(root)", 1);
    check_optional(&mut errors, "Host", m.get("Host"), "string");
    check_optional(&mut errors, "CreatedAt", m.get("CreatedAt"), "integer");
    check_optional(&mut errors, "UpdatedAt", m.get("UpdatedAt"), "integer");
    match m.get("Metadata") {
        Some(Value::Object(md)) => check_string(
            &mut errors,
            "Metadata.RelationType",
            md.get("RelationType"),
            "Metadata",
            1,
        ),
        Some(other) if !other.is_null() => errors.push(format!(
            "Metadata: Invalid type. Expected: object, given: {}",
            type_name(other)
        )),
        _ => errors.push("(root): Metadata is required".to_string()),
    }
    if errors.is_empty() {
        return Ok(());
    }
    let mut all = vec!["(root): Must validate all the schemas (allOf)".to_string()];
    all.extend(errors);
    Err(render(&all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_elements_pass() {
        assert!(
            validate_node(&json!({"ID": "a", "Metadata": {"Name": "n", "Type": "device"}})).is_ok()
        );
        assert!(
            validate_node(
                &json!({"ID": "a", "Metadata": {"Name": "n", "Type": "netns", "Path": "/x"}})
            )
            .is_ok()
        );
        assert!(validate_node(&json!({"ID": "a", "Host": null, "Metadata": {"Name": "n", "Type": "ovsport", "UUID": "u"}})).is_ok());
        assert!(validate_edge(&json!({"ID": "e", "Parent": "a", "Child": "b", "Metadata": {"RelationType": "layer2"}})).is_ok());
    }

    #[test]
    fn missing_name_gives_skydive_message() {
        // The message Skydive's tests compare after a PATCH removing /Metadata/Name.
        let e = validate_node(&json!({"ID": "a", "Metadata": {"Type": "device"}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid schema: (root): Must validate all the schemas (allOf)\nMetadata: Must validate all the schemas (allOf)\nMetadata: Name is required\n(root): Must validate at least one schema (anyOf)\n"
        );
    }

    #[test]
    fn invalid_nodes_are_refused() {
        for bad in [
            json!({"Metadata": {"Name": "x", "Type": "t"}}),
            json!({"ID": "", "Metadata": {"Name": "x", "Type": "t"}}),
            json!({"ID": "a"}),
            json!({"ID": "a", "Metadata": {"Name": "x"}}),
            json!({"ID": "a", "Metadata": {"Name": "x", "Type": "netns"}}),
            json!({"ID": "a", "Metadata": {"Name": 3, "Type": "t"}}),
            json!({"ID": "a", "CreatedAt": "now", "Metadata": {"Name": "x", "Type": "t"}}),
            json!([1]),
        ] {
            assert!(validate_node(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_edges_are_refused() {
        let e = validate_edge(
            &json!({"ID": "e", "Parent": "", "Child": "", "Metadata": {"RelationType": "x"}}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("Parent: String length must be greater than or equal to 1"),
            "{e}"
        );
        assert!(
            validate_edge(&json!({"ID": "e", "Parent": "a", "Child": "b", "Metadata": {}}))
                .is_err()
        );
        assert!(validate_edge(&json!({"ID": "e", "Parent": "a", "Child": "b"})).is_err());
    }
}
