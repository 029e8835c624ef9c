//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of this HTTP API.
//!
//! Each HTTP module lists its operations next to its router (`operations()`),
//! with the query and body types its handlers really parse: their JSON
//! schemas come from those types (`schemars`), so a field added to a body shows
//! up here. A test reads the routers' source and checks that the document and
//! the served routes are the same set of (method, path).

use schemars::JsonSchema;
use serde_json::{Map, Value, json};

/// One operation: a method on a path, as the router serves it.
pub(crate) struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    query: Option<Value>,
    body: Option<Value>,
    raw_body: bool,
    ok: u16,
    /// Served as JSON (else text: metrics, health, event streams).
    json: bool,
    open: bool,
}

impl Op {
    pub fn new(method: &'static str, path: &'static str, summary: &'static str) -> Self {
        Op {
            method,
            path,
            summary,
            query: None,
            body: None,
            raw_body: false,
            ok: 200,
            json: true,
            open: false,
        }
    }

    pub fn get(path: &'static str, summary: &'static str) -> Self {
        Self::new("get", path, summary)
    }

    pub fn post(path: &'static str, summary: &'static str) -> Self {
        Self::new("post", path, summary)
    }

    pub fn put(path: &'static str, summary: &'static str) -> Self {
        Self::new("put", path, summary)
    }

    pub fn delete(path: &'static str, summary: &'static str) -> Self {
        Self::new("delete", path, summary)
    }

    /// The query string, as the handler parses it.
    pub fn query<T: JsonSchema>(mut self) -> Self {
        self.query = Some(schemars::schema_for!(T).to_value());
        self
    }

    /// The JSON body, as the handler parses it.
    pub fn body<T: JsonSchema>(mut self) -> Self {
        self.body = Some(schemars::schema_for!(T).to_value());
        self
    }

    /// A body taken as raw bytes (a value to store).
    pub fn raw_body(mut self) -> Self {
        self.raw_body = true;
        self
    }

    pub fn created(mut self) -> Self {
        self.ok = 201;
        self
    }

    /// Answered as text, not JSON.
    pub fn text(mut self) -> Self {
        self.json = false;
        self
    }

    /// Served without the bearer token even when the node has one.
    pub fn open(mut self) -> Self {
        self.open = true;
        self
    }

    /// The path as OpenAPI writes it (axum's `{*key}` is `{key}`).
    fn openapi_path(&self) -> String {
        self.path.replace("{*", "{")
    }

    fn operation(&self) -> Value {
        let mut params: Vec<Value> = self
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                let name = name.trim_start_matches('*');
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        if let Some(q) = &self.query {
            let required: Vec<&str> = q["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for (name, schema) in q["properties"].as_object().into_iter().flatten() {
                let mut p = json!({"name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": schema});
                if let Some(d) = schema.get("description") {
                    p["description"] = d.clone();
                }
                params.push(p);
            }
        }
        let content = if self.json {
            json!({"application/json": {}})
        } else {
            json!({"text/plain": {}})
        };
        let mut op = json!({
            "summary": self.summary,
            "operationId": operation_id(self.method, self.path),
            "parameters": params,
            "responses": {
                self.ok.to_string(): {"description": "success", "content": content},
                "default": {"$ref": "#/components/responses/Error"},
            },
        });
        if let Some(b) = &self.body {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": b}}});
        } else if self.raw_body {
            op["requestBody"] = json!({"required": true, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
        }
        if self.open {
            op["security"] = json!([]);
        }
        op
    }
}

fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "v1")
        .map(|s| {
            s.trim_matches(|c| c == '{' || c == '}' || c == '*')
                .replace(['.', '-'], "_")
        })
        .collect();
    format!("{method}_{}", words.join("_"))
}

/// Every operation the router serves.
pub(crate) fn operations() -> Vec<Op> {
    let mut ops = super::operations();
    ops.extend(super::kv::operations());
    ops.extend(super::coord::operations());
    ops.extend(super::tasks::operations());
    ops.extend(super::messages::operations());
    ops.extend(super::pbft::operations());
    ops
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in operations() {
        let entry = paths.entry(op.openapi_path()).or_insert_with(|| json!({}));
        entry[op.method] = op.operation();
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Agent Mesh node API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every node serves the same API over the replicated state. Writes accept an \
                `Idempotency-Key` header; reads take `stale=true` to answer from the local replica. \
                With a token set (`mesh up --http-token`), every request but `GET /healthz` and the \
                dashboard page `GET /` needs `Authorization: Bearer <token>`."
        },
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "description": "stable, machine-readable (e.g. `not_found`, `conflict`, `read_only`, `unauthorized`)"},
                            "message": {"type": "string"}
                        },
                        "additionalProperties": true
                    }}
                }
            },
            "responses": {
                "Error": {
                    "description": "an error, with a code",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// (method, path) of every `.route("path", get(..).post(..))` in the source.
    fn served_routes() -> BTreeSet<(String, String)> {
        let sources = [
            include_str!("mod.rs"),
            include_str!("kv.rs"),
            include_str!("coord.rs"),
            include_str!("tasks.rs"),
            include_str!("messages.rs"),
            include_str!("pbft.rs"),
        ];
        let mut out = BTreeSet::new();
        for src in sources {
            for line in src.lines() {
                let Some(rest) = line.trim().strip_prefix(".route(\"") else {
                    continue;
                };
                let (path, methods) = rest.split_once('"').expect("a closing quote");
                for m in ["get", "post", "put", "delete"] {
                    let called = methods
                        .match_indices(&format!("{m}("))
                        .any(|(i, _)| i == 0 || matches!(&methods[i - 1..i], " " | "." | "("));
                    if called {
                        out.insert((m.to_string(), path.replace("{*", "{")));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_document_lists_exactly_the_served_routes() {
        let served = served_routes();
        assert!(
            served.len() > 30,
            "the route scan found too few: {served:?}"
        );
        let doc = document();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "served but not documented: {missing:?}; documented but not served: {extra:?}"
        );
    }

    #[test]
    fn bodies_and_queries_carry_the_handlers_schemas() {
        let doc = document();
        let submit = &doc["paths"]["/v1/tasks"]["post"];
        assert_eq!(submit["responses"]["201"]["description"], "success");
        let body = submit["requestBody"]["content"]["application/json"]["schema"].to_string();
        assert!(body.contains("payload_base64"), "{body}");
        let list = doc["paths"]["/v1/tasks"]["get"]["parameters"].to_string();
        assert!(
            list.contains("\"state\"") && list.contains("\"agent\""),
            "{list}"
        );
        let show = doc["paths"]["/v1/kv/{ns}/{key}"]["get"]["parameters"].to_string();
        assert!(show.contains("\"in\":\"path\""), "{show}");
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
        // Every operation id is unique.
        let ids: Vec<String> = operations()
            .iter()
            .map(|o| operation_id(o.method, o.path))
            .collect();
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
    }
}
