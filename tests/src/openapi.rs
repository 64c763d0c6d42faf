//! Checks answers against an OpenAPI 3.1 description: the subset of it, and of JSON Schema,
//! that `docs/http-api.openapi.json` uses — `$ref` within the document, `type` (one or a list),
//! `enum`, `properties`, `required`, `additionalProperties: false`, `items`, `oneOf`,
//! `minLength`, `maxLength`, `format: date-time`, and responses by status or `default` with
//! their required headers. Anything else in a schema is refused, so that the description cannot
//! grow a rule this checker silently ignores.
//!
//! It also keeps count of what was checked, so a test can prove it exercised every documented
//! route, method and status.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::http::Answer;

/// A loaded description, and what has been checked against it so far.
pub struct Description {
    doc: Value,
    /// (path template, method, response key) of every answer checked.
    seen: BTreeSet<(String, String, String)>,
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const SCHEMA_KEYWORDS: [&str; 11] = [
    "$ref",
    "type",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "oneOf",
    "minLength",
    "maxLength",
    "format",
];

impl Description {
    /// Reads the description at `path`.
    pub fn load(path: &Path) -> Description {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let doc = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        Description { doc, seen: BTreeSet::new() }
    }

    /// Checks `answer`, the answer to `method` on documented path `template`, against the
    /// response documented for its status (or `default`), and records it.
    pub fn check(&mut self, template: &str, method: &str, answer: &Answer) -> Result<(), String> {
        let status = answer.status.to_string();
        let documented = self.operation(template, method)?["responses"].get(&status).is_some();
        self.check_as(template, method, if documented { &status } else { "default" }, answer)
    }

    /// Checks `answer` against the response documented under `key` (a status or `default`),
    /// whatever its status: for answers passed through from elsewhere, which the description
    /// documents as `default`.
    pub fn check_as(&mut self, template: &str, method: &str, key: &str, answer: &Answer) -> Result<(), String> {
        let responses = &self.operation(template, method)?["responses"];
        let response = self.resolve(responses.get(key).ok_or_else(|| {
            format!("{method} {template}: status {} is not documented, and there is no default", answer.status)
        })?)?;
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for (name, header) in headers {
                let header = self.resolve(header)?;
                let value = answer.header(name);
                match value {
                    None if header["required"] == Value::Bool(true) => {
                        return Err(format!("{method} {template} {key}: header {name} is missing"));
                    }
                    None => {}
                    Some(value) => {
                        if let Some(allowed) = self.resolve(&header["schema"])?.get("enum").and_then(Value::as_array)
                            && !allowed.iter().any(|a| a == value)
                        {
                            return Err(format!(
                                "{method} {template} {key}: header {name}: {value:?} not in {allowed:?}"
                            ));
                        }
                    }
                }
            }
        }
        if let Some(content) = response.get("content").and_then(Value::as_object) {
            let (media, body) = content.iter().next().ok_or("empty content")?;
            let actual = answer.header("content-type").unwrap_or_default();
            if !actual.starts_with(media.as_str()) {
                return Err(format!("{method} {template} {key}: content type {actual:?}, documented {media}"));
            }
            if let Some(schema) = body.get("schema") {
                let value: Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| format!("{method} {template} {key}: the body is not JSON: {e}"))?;
                self.validate(schema, &value, "$").map_err(|e| format!("{method} {template} {key}: {e}"))?;
            }
        }
        self.seen.insert((template.to_owned(), method.to_owned(), key.to_owned()));
        Ok(())
    }

    /// Checks `answer`, the answer to a method that documented path `template` does not take:
    /// 405, an `Allow` header, and a body of the `Error` schema.
    pub fn check_not_allowed(&self, template: &str, method: &str, answer: &Answer) -> Result<(), String> {
        if self.operation(template, method).is_ok() {
            return Err(format!("{method} {template} is documented"));
        }
        if answer.status != 405 || answer.header("allow").is_none() {
            return Err(format!(
                "answered {} (allow: {:?}), not 405 with Allow",
                answer.status,
                answer.header("allow")
            ));
        }
        let value: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("the body is not JSON: {e}"))?;
        self.validate(&serde_json::json!({ "$ref": "#/components/schemas/Error" }), &value, "$")
    }

    fn operation(&self, template: &str, method: &str) -> Result<&Value, String> {
        self.doc
            .pointer(&format!("/paths/{}/{method}", escape(template)))
            .ok_or_else(|| format!("{method} {template} is not documented"))
    }

    /// Every documented (path template, method) and (path template, response key) that no
    /// checked answer exercised.
    pub fn unexercised(&self) -> Vec<String> {
        let mut missing = Vec::new();
        let paths = self.doc["paths"].as_object().expect("paths");
        for (template, item) in paths {
            let mut keys = BTreeSet::new();
            for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
                if !self.seen.iter().any(|(t, m, _)| t == template && m == method) {
                    missing.push(format!("{method} {template}"));
                }
                keys.extend(item[*method]["responses"].as_object().expect("responses").keys().cloned());
            }
            for key in keys {
                if !self.seen.iter().any(|(t, _, k)| t == template && *k == key) {
                    missing.push(format!("{template} answering {key}"));
                }
            }
        }
        missing
    }

    fn resolve<'a>(&'a self, value: &'a Value) -> Result<&'a Value, String> {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').ok_or_else(|| format!("external $ref {reference}"))?;
                let target = self.doc.pointer(pointer).ok_or_else(|| format!("dangling $ref {reference}"))?;
                self.resolve(target)
            }
            None => Ok(value),
        }
    }

    /// Validates `value` (at `at`, for messages) against `schema`.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema)?;
        let rules = schema.as_object().ok_or_else(|| format!("{at}: the schema is not an object"))?;
        for keyword in rules.keys() {
            if !SCHEMA_KEYWORDS.contains(&keyword.as_str()) && keyword != "description" {
                return Err(format!("{at}: the schema uses `{keyword}`, which this checker does not know"));
            }
        }
        if let Some(kind) = rules.get("type") {
            let kinds: Vec<&str> = match kind {
                Value::String(k) => vec![k.as_str()],
                Value::Array(ks) => ks.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{at}: bad type {kind}")),
            };
            if !kinds.iter().any(|k| is_a(value, k)) {
                return Err(format!("{at}: {value} is not of type {kinds:?}"));
            }
        }
        if let Some(allowed) = rules.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
        if let Some(options) = rules.get("oneOf").and_then(Value::as_array) {
            let matching = options.iter().filter(|o| self.validate(o, value, at).is_ok()).count();
            if matching != 1 {
                return Err(format!("{at}: {value} matches {matching} of the oneOf schemas, not exactly 1"));
            }
        }
        if let Value::String(text) = value {
            let length = text.chars().count() as u64;
            if rules.get("minLength").and_then(Value::as_u64).is_some_and(|min| length < min)
                || rules.get("maxLength").and_then(Value::as_u64).is_some_and(|max| length > max)
            {
                return Err(format!("{at}: {value} has the wrong length"));
            }
            if rules.get("format").and_then(Value::as_str) == Some("date-time")
                && humantime::parse_rfc3339(text).is_err()
            {
                return Err(format!("{at}: {value} is not an RFC 3339 date-time"));
            }
        }
        if let Value::Object(fields) = value {
            let properties = rules.get("properties").and_then(Value::as_object);
            for required in rules.get("required").and_then(Value::as_array).into_iter().flatten() {
                let name = required.as_str().unwrap_or_default();
                if !fields.contains_key(name) {
                    return Err(format!("{at}: the required field `{name}` is missing"));
                }
            }
            for (name, field) in fields {
                match properties.and_then(|p| p.get(name)) {
                    Some(schema) => self.validate(schema, field, &format!("{at}.{name}"))?,
                    None if rules.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{at}: the field `{name}` is not documented"));
                    }
                    None => {}
                }
            }
        }
        if let (Value::Array(items), Some(schema)) = (value, rules.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.validate(schema, item, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}

fn is_a(value: &Value, kind: &str) -> bool {
    match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

/// A path template as a JSON pointer token (RFC 6901).
fn escape(template: &str) -> String {
    template.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description() -> Description {
        Description::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/http-api.openapi.json"))
    }

    fn error_schema() -> Value {
        serde_json::json!({ "$ref": "#/components/schemas/Error" })
    }

    #[test]
    fn a_body_that_breaks_its_schema_is_caught() {
        let d = description();
        let schema = error_schema();
        assert!(d.validate(&schema, &serde_json::json!({ "error": "usage", "message": "m" }), "$").is_ok());
        for bad in [
            serde_json::json!({ "error": "usage" }),
            serde_json::json!({ "error": "nonsense", "message": "m" }),
            serde_json::json!({ "error": "usage", "message": 3 }),
            serde_json::json!({ "error": "usage", "message": "m", "extra": 1 }),
            serde_json::json!(["usage"]),
        ] {
            assert!(d.validate(&schema, &bad, "$").is_err(), "{bad}");
        }
        let token = serde_json::json!({ "$ref": "#/components/schemas/Token" });
        let mut good = serde_json::json!({
            "profile": "p", "access_token": "t", "token_type": "Bearer", "expires_at": "2026-01-01T00:00:00Z",
            "expires_in": 5, "fingerprint": "0123456789abcdef0123456789abcdef", "scope": null,
        });
        assert!(d.validate(&token, &good, "$").is_ok());
        good["expires_at"] = "tomorrow".into();
        assert!(d.validate(&token, &good, "$").is_err());
        good["expires_at"] = "2026-01-01T00:00:00Z".into();
        good["fingerprint"] = "abc".into();
        assert!(d.validate(&token, &good, "$").is_err());
    }

    #[test]
    fn an_undocumented_status_or_a_missing_header_is_caught() {
        let mut d = description();
        let answer = |status: u16, headers: &[(&str, &str)], body: &str| {
            let mut map = hyper::HeaderMap::new();
            for (name, value) in headers {
                map.insert(hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
            }
            Answer { status, headers: map, body: hyper::body::Bytes::from(body.to_owned()) }
        };
        let error = r#"{"error":"unknown_profile","message":"m"}"#;
        let json = ("content-type", "application/json");
        assert!(
            d.check("/v1/status/{name}", "get", &answer(404, &[json, ("tokend-error", "unknown_profile")], error))
                .is_ok()
        );
        assert!(d.check("/v1/status/{name}", "get", &answer(404, &[json], error)).is_err(), "no Tokend-Error");
        assert!(d.check("/v1/status/{name}", "post", &answer(404, &[json], error)).is_err(), "undocumented method");
        assert!(d.check("/v1/nope", "get", &answer(200, &[json], "{}")).is_err());
        assert!(!d.unexercised().is_empty());
    }
}
