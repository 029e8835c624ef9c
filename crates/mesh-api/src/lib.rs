//! Agent Mesh front ends over the one [`mesh_node::service::Service`] API.
//!
//! A front end parses its wire format into a typed call on the service and
//! encodes the reply; it decides nothing (the shape of mini-redis: frame →
//! command → apply → frame). Today: [`http`], the HTTP/JSON API with its
//! OpenAPI document and optional bearer token. The MCP server and the
//! Redis-protocol endpoint belong here too.

#![forbid(unsafe_code)]

pub mod http;
pub mod mcp;
