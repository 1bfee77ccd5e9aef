//! GitHub's own OpenAPI description of api.github.com (npm `@octokit/openapi`), and validation
//! of request and response bodies against the schemas it gives each operation.
//!
//! The description is OpenAPI 3.0, whose schema objects are close to, but not, JSON Schema. Before
//! a schema reaches the `jsonschema` crate it is converted: local `$ref`s are inlined (the crate
//! is built without remote resolution, and the description's refs point into itself), `nullable:
//! true` becomes a `null` alternative (without this, every `null` GitHub documents would be
//! reported), and documentation-only keywords (`example`, `x-*`, …) are dropped. Request bodies
//! are additionally closed (`additionalProperties: false` at the top level): GitHub ignores a
//! misspelt field, so only the fake can tell pacer it sent one.
//!
//! The file is 13 MB; it is parsed once per test process, and each operation's validator is
//! compiled once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use jsonschema::{Draft, Validator};
use serde_json::{Map, Value};

/// The npm package's generated description (the non-dereferenced one: a fifth of the size of
/// `.deref.json`, and the refs are resolved here anyway).
fn description_path() -> PathBuf {
    pacer_test_support::in_repo("tests/node_modules/@octokit/openapi/generated/api.github.com.json")
}

static DESCRIPTION: LazyLock<OpenApi> = LazyLock::new(OpenApi::load);

/// The api.github.com description, loaded on first use.
pub fn description() -> &'static OpenApi {
    &DESCRIPTION
}

/// What the description says an operation answers with a given status.
pub enum ResponseSpec {
    /// A JSON body matching this schema.
    Json(Arc<Validator>),
    /// No body (e.g. 204).
    Empty,
}

pub struct OpenApi {
    doc: Value,
    validators: Mutex<HashMap<String, Arc<Validator>>>,
}

impl OpenApi {
    fn load() -> OpenApi {
        let path = description_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "GitHub's OpenAPI description is missing ({}: {e}). Run `make test`, which installs \
                 tests/node_modules (npm ci --prefix tests); the fake GitHub refuses to run unchecked",
                path.display()
            )
        });
        let doc: Value = serde_json::from_str(&text).expect("the OpenAPI description is JSON");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.0")),
            "the conversion to JSON Schema is written for OpenAPI 3.0; the description says {}",
            doc["openapi"]
        );
        OpenApi {
            doc,
            validators: Mutex::new(HashMap::new()),
        }
    }

    /// The operation object, e.g. `("post", "/orgs/{org}/actions/runners/generate-jitconfig")`.
    fn operation(&self, method: &str, template: &str) -> &Value {
        let op = &self.doc["paths"][template][method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "the OpenAPI description has no operation {method} {template}"
        );
        op
    }

    /// Follows a `$ref` (if `node` is one) to what it names.
    fn resolve<'a>(&'a self, node: &'a Value) -> &'a Value {
        match node.get("$ref").and_then(Value::as_str) {
            Some(reference) => self.resolve(self.pointer(reference)),
            None => node,
        }
    }

    fn pointer(&self, reference: &str) -> &Value {
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| {
            panic!("only local $refs are expected in the description, found {reference}")
        });
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"))
    }

    /// The query parameters the operation documents.
    pub fn query_parameters(&self, method: &str, template: &str) -> Vec<String> {
        let op = self.operation(method, template);
        let shared = self.doc["paths"][template]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let own = op["parameters"].as_array().cloned().unwrap_or_default();
        shared
            .iter()
            .chain(own.iter())
            .map(|p| self.resolve(p))
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// The value of one documented query parameter, typed as its schema says, with the
    /// schema's validator; `None` when the operation does not document the parameter.
    pub fn query_parameter(
        &self,
        method: &str,
        template: &str,
        name: &str,
        text: &str,
    ) -> Option<(Value, Arc<Validator>)> {
        let op = self.operation(method, template);
        let shared = self.doc["paths"][template]["parameters"].as_array();
        let own = op["parameters"].as_array();
        let parameter = shared
            .into_iter()
            .flatten()
            .chain(own.into_iter().flatten())
            .map(|p| self.resolve(p))
            .find(|p| p["in"] == "query" && p["name"] == name)?;
        let schema = self.resolve(&parameter["schema"]);
        let key = format!("query {method} {template} {name}");
        let validator = self.validator(key, || self.to_json_schema(schema, 0));
        Some((query_value(schema["type"].as_str(), text), validator))
    }

    /// Whether the operation requires a request body.
    pub fn request_body_required(&self, method: &str, template: &str) -> bool {
        self.operation(method, template)
            .get("requestBody")
            .is_some_and(|b| self.resolve(b)["required"] == Value::Bool(true))
    }

    /// The request body validator, or `None` when the operation takes no body.
    pub fn request_validator(&self, method: &str, template: &str) -> Option<Arc<Validator>> {
        let key = format!("request {method} {template}");
        let body = self.operation(method, template).get("requestBody")?;
        let schema = &self.resolve(body)["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template}: the request body has no JSON schema"
        );
        Some(self.validator(key, || {
            let mut converted = self.to_json_schema(schema, 0);
            close_object(&mut converted);
            converted
        }))
    }

    /// What the operation answers with `status`; for an error status the description does not
    /// list, GitHub's generic `basic-error` body.
    pub fn response(
        &self,
        method: &str,
        template: &str,
        status: u16,
    ) -> Result<ResponseSpec, String> {
        let op = self.operation(method, template);
        let response = match op["responses"].get(status.to_string()) {
            Some(r) => self.resolve(r),
            None if status >= 400 => {
                let key = "schema basic-error".to_owned();
                let schema = &self.doc["components"]["schemas"]["basic-error"];
                return Ok(ResponseSpec::Json(
                    self.validator(key, || self.to_json_schema(schema, 0)),
                ));
            }
            None => {
                return Err(format!(
                    "{method} {template}: status {status} is not a documented response"
                ));
            }
        };
        let schema = &response["content"]["application/json"]["schema"];
        if !schema.is_object() {
            return Ok(ResponseSpec::Empty);
        }
        let key = format!("response {method} {template} {status}");
        Ok(ResponseSpec::Json(
            self.validator(key, || self.to_json_schema(schema, 0)),
        ))
    }

    /// `components/examples/{name}`: GitHub's own example of a body, used by the fake as the
    /// template of its answers so they carry every field real ones do.
    pub fn example(&self, name: &str) -> Value {
        let example = &self.doc["components"]["examples"][name]["value"];
        assert!(
            !example.is_null(),
            "the OpenAPI description has no example {name}"
        );
        example.clone()
    }

    fn validator(&self, key: String, schema: impl FnOnce() -> Value) -> Arc<Validator> {
        let mut validators = self.validators.lock().expect("validator cache lock");
        validators
            .entry(key)
            .or_insert_with_key(|key| {
                let schema = schema();
                let validator = jsonschema::options()
                    .with_draft(Draft::Draft7)
                    .should_validate_formats(true)
                    .build(&schema)
                    .unwrap_or_else(|e| {
                        panic!("{key}: the converted schema does not compile: {e}")
                    });
                Arc::new(validator)
            })
            .clone()
    }

    /// OpenAPI 3.0 schema object → JSON Schema (draft 7). See the module docs.
    fn to_json_schema(&self, node: &Value, depth: usize) -> Value {
        assert!(
            depth < 64,
            "the description's schemas nest deeper than expected (a $ref cycle?)"
        );
        let Value::Object(object) = node else {
            return node.clone();
        };
        if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
            return self.to_json_schema(self.pointer(reference), depth + 1);
        }
        let mut out = Map::new();
        for (key, value) in object {
            let converted = match key.as_str() {
                // Documentation only; `examples` is not even an array in OpenAPI 3.0.
                "example" | "examples" | "description" | "title" | "deprecated"
                | "externalDocs" | "xml" | "nullable" => continue,
                k if k.starts_with("x-") => continue,
                "properties" | "patternProperties" => Value::Object(
                    value
                        .as_object()
                        .expect("properties is an object")
                        .iter()
                        .map(|(name, schema)| {
                            (name.clone(), self.to_json_schema(schema, depth + 1))
                        })
                        .collect(),
                ),
                "items" | "not" | "additionalProperties" if value.is_object() => {
                    self.to_json_schema(value, depth + 1)
                }
                "allOf" | "anyOf" | "oneOf" => Value::Array(
                    value
                        .as_array()
                        .expect("a schema list")
                        .iter()
                        .map(|schema| self.to_json_schema(schema, depth + 1))
                        .collect(),
                ),
                _ => value.clone(),
            };
            out.insert(key.clone(), converted);
        }
        if object.get("nullable") == Some(&Value::Bool(true)) {
            allow_null(out)
        } else {
            Value::Object(out)
        }
    }
}

/// OpenAPI's `nullable: true`: `null` is allowed besides whatever the schema allows.
fn allow_null(mut schema: Map<String, Value>) -> Value {
    if let Some(Value::Array(allowed)) = schema.get_mut("enum") {
        if !allowed.contains(&Value::Null) {
            allowed.push(Value::Null);
        }
    }
    match schema.get("type").cloned() {
        Some(Value::String(t)) => {
            schema.insert(
                "type".into(),
                Value::Array(vec![Value::String(t), "null".into()]),
            );
            Value::Object(schema)
        }
        Some(Value::Array(mut types)) => {
            if !types.contains(&Value::from("null")) {
                types.push("null".into());
            }
            schema.insert("type".into(), Value::Array(types));
            Value::Object(schema)
        }
        // No `type` (an allOf/anyOf/oneOf): null is one more alternative.
        _ => serde_json::json!({ "anyOf": [Value::Object(schema), { "type": "null" }] }),
    }
}

/// Refuses properties the schema does not name, at the top level of a request body.
fn close_object(schema: &mut Value) {
    if let Value::Object(map) = schema {
        if map.contains_key("properties") && !map.contains_key("additionalProperties") {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
}

/// A query parameter's text as the JSON value its schema is about: a number or a boolean where
/// the schema wants one and the text reads as one, a string otherwise (so `per_page=ten` is
/// reported as not an integer).
fn query_value(schema_type: Option<&str>, text: &str) -> Value {
    match schema_type {
        Some("integer") => text
            .parse::<i64>()
            .map_or_else(|_| text.into(), Value::from),
        Some("number") => text
            .parse::<f64>()
            .map_or_else(|_| text.into(), Value::from),
        Some("boolean") => text
            .parse::<bool>()
            .map_or_else(|_| text.into(), Value::from),
        _ => Value::String(text.to_owned()),
    }
}

/// Every way `instance` breaks `validator`, as readable lines (`/labels: "x" is not of type "array"`).
pub fn violations(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| {
            let at = e.instance_path.to_string();
            format!(
                "{}: {e}",
                if at.is_empty() { "(body)" } else { at.as_str() }
            )
        })
        .collect()
}
