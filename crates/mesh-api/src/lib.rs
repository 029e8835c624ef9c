//! Agent Mesh front ends over the one [`mesh_node::service::Service`] API.
//!
//! A front end parses its wire format into a typed call on the service and
//! encodes the reply; it decides nothing (the shape of mini-redis: frame →
//! command → apply → frame): [`http`], the HTTP/JSON API with its OpenAPI
//! document, optional bearer token, event streams and the dashboard; [`mcp`],
//! the MCP server over stdio; [`resp`], the Redis-protocol endpoint (RESP2
//! and RESP3; `docs/redis.md`).

#![forbid(unsafe_code)]

pub mod http;
pub mod mcp;
pub mod resp;
