//! A small HTTP/JSON client for the CLI commands that talk to a node.
//!
//! Non-2xx replies are turned into errors that carry the node's error code and
//! message, so the CLI prints what the node said, not just a status number.

use serde_json::Value;

/// Where the CLI finds a node when `--node` is not given.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:7070";

/// An error reply from the node.
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code}, HTTP {status})")]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub body: Value,
}

pub struct Api {
    base: String,
    agent: ureq::Agent,
    /// Sent as `Authorization: Bearer` when the node has a token.
    token: Option<String>,
}

pub use mesh_proto::url::segment;

impl Api {
    /// A client of the node at `base`, with the token from `MESH_HTTP_TOKEN` if set.
    pub fn new(base: &str) -> Self {
        Self::with_token(base, std::env::var("MESH_HTTP_TOKEN").ok())
    }

    pub fn with_token(base: &str, token: Option<String>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
            token: token.filter(|t| !t.is_empty()),
        }
    }

    fn auth<B>(&self, b: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => b.header("Authorization", format!("Bearer {t}")),
            None => b,
        }
    }

    fn finish(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let mut resp = resp.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach a mesh node at {}: {e} (is `mesh up` running? use --node URL)",
                self.base
            )
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()?;
        Ok((status, body))
    }

    fn json_or_error(status: u16, body: &[u8]) -> anyhow::Result<Value> {
        let v: Value = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let e = &v["error"];
        Err(ApiError {
            status,
            code: e["code"].as_str().unwrap_or("http_error").to_string(),
            message: e["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string()),
            body: v.clone(),
        }
        .into())
    }

    /// GET returning JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.finish(
            self.auth(self.agent.get(format!("{}{path}", self.base)))
                .call(),
        )?;
        Self::json_or_error(status, &body)
    }

    /// GET of a server-sent event stream: the `data:` payloads as they come,
    /// parsed as JSON, until the stream ends or fails.
    pub fn events(&self, path: &str) -> anyhow::Result<impl Iterator<Item = Value>> {
        use std::io::BufRead;
        let resp = self
            .auth(self.agent.get(format!("{}{path}", self.base)))
            .header("Accept", "text/event-stream")
            .call()
            .map_err(|e| anyhow::anyhow!("cannot reach a mesh node at {}: {e}", self.base))?;
        if !resp.status().is_success() {
            let (status, body) = self.finish(Ok(resp))?;
            Self::json_or_error(status, &body)?;
            anyhow::bail!("HTTP {status} for an event stream");
        }
        let lines = std::io::BufReader::new(resp.into_body().into_reader()).lines();
        Ok(lines.map_while(Result::ok).filter_map(|l| {
            let data = l.strip_prefix("data:")?;
            serde_json::from_str(data.trim_start()).ok()
        }))
    }

    /// GET returning the raw body (errors still parsed as JSON).
    pub fn get_raw(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let (status, body) = self.finish(
            self.auth(self.agent.get(format!("{}{path}", self.base)))
                .call(),
        )?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Self::json_or_error(status, &body).map(|_| Vec::new())
    }

    /// A request with a body (`method` is POST, PUT or DELETE).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        content_type: &str,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let with_key = |b: ureq::RequestBuilder<ureq::typestate::WithBody>| match idempotency_key {
            Some(k) => b.header("Idempotency-Key", k),
            None => b,
        };
        let resp = match method {
            "POST" => with_key(self.auth(self.agent.post(&url)))
                .header("Content-Type", content_type)
                .send(body),
            "PUT" => with_key(self.auth(self.agent.put(&url)))
                .header("Content-Type", content_type)
                .send(body),
            "DELETE" => {
                let b = self.auth(self.agent.delete(&url));
                match idempotency_key {
                    Some(k) => b.header("Idempotency-Key", k).call(),
                    None => b.call(),
                }
            }
            m => anyhow::bail!("unsupported method {m}"),
        };
        let (status, body) = self.finish(resp)?;
        Self::json_or_error(status, &body)
    }

    pub fn post_json(&self, path: &str, v: &Value) -> anyhow::Result<Value> {
        self.send(
            "POST",
            path,
            v.to_string().as_bytes(),
            "application/json",
            None,
        )
    }

    pub fn put_json(&self, path: &str, v: &Value) -> anyhow::Result<Value> {
        self.send(
            "PUT",
            path,
            v.to_string().as_bytes(),
            "application/json",
            None,
        )
    }
}
