//! Node settings: defaults, a TOML file, `MESH_*` environment variables and flags.
//!
//! Precedence: flags > environment > file > defaults. The CLI gathers flags and
//! environment (clap does both) into [`Settings`]; [`NodeConfig::resolve`] lays
//! them over the file and the defaults and checks everything, so a bad value is a
//! clear error before anything starts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use mesh_proto::Profile;
use mesh_proto::soft::{SoftState, validate_name};

/// Default gossip/RPC address (memberlist's port).
pub const DEFAULT_BIND: &str = "127.0.0.1:7946";
/// Default HTTP address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7070";

/// One layer of settings, all optional: the `--config` TOML file, or the flags
/// and environment together (same fields, so one type serves both layers).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// This node's name, unique in the mesh.
    pub node_id: Option<String>,
    /// `HOST:PORT` for UDP gossip and TCP RPC (one port for both).
    pub bind: Option<String>,
    /// Seed nodes' `HOST:PORT`s; an entry may hold several, comma-separated.
    pub join: Option<Vec<String>>,
    /// `HOST:PORT` of the HTTP API and `/metrics`.
    pub http: Option<String>,
    /// Directory of the node id, the replicated log and the snapshots.
    pub data_dir: Option<PathBuf>,
    /// Timing preset name: `local`, `lan` or `wan`.
    pub profile: Option<String>,
    /// Failure domain of this node (rack, zone, host).
    pub zone: Option<String>,
    /// Capabilities this node offers; an entry may hold several, comma-separated.
    pub caps: Option<Vec<String>>,
    /// Announce and discover peers with mDNS on the local network.
    pub mdns: Option<bool>,
    /// Target number of Raft voters: 1, 3, 5 or 7.
    pub voters: Option<usize>,
    /// How long a voter must be confirmed dead before a learner replaces it ("30s").
    pub replace_dead_after: Option<String>,
    /// Bearer token every HTTP request must carry (but `GET /healthz`).
    pub http_token: Option<String>,
    /// Address of the Redis-protocol endpoint (off unless given).
    pub resp: Option<String>,
    /// Password Redis clients must give (`AUTH`); without it only loopback
    /// clients are served.
    pub resp_password: Option<String>,
    /// Serve `FLUSHDB`/`FLUSHALL` (they remove every key of the mesh).
    pub resp_allow_flush: Option<bool>,
    /// Most Redis clients at once.
    pub resp_max_clients: Option<usize>,
    /// The ordering engine: `raft` (crash faults) or `pbft` (Byzantine faults).
    pub consensus: Option<String>,
    /// pBFT's genesis file: the replicas' names and public keys.
    pub pbft_genesis: Option<PathBuf>,
}

/// Shortest HTTP token accepted: a short one is guessable on an open port.
pub const MIN_HTTP_TOKEN_LEN: usize = 16;

/// Default Raft voter target.
pub const DEFAULT_VOTERS: usize = 3;
/// Default grace time before a dead voter is replaced.
pub const DEFAULT_REPLACE_DEAD_AFTER_MS: u64 = 30_000;

/// Resolved, checked settings of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `None`: read from the data directory, or generate and persist one.
    pub node_id: Option<String>,
    /// Address for UDP gossip and TCP RPC, also advertised to peers.
    pub bind: SocketAddr,
    /// Seed nodes to join through (empty: this node starts a mesh).
    pub join: Vec<SocketAddr>,
    /// Address of the HTTP API and `/metrics`.
    pub http: SocketAddr,
    /// Directory of the node id, the replicated log and the snapshots.
    pub data_dir: PathBuf,
    /// Timing preset every node of the mesh shares.
    pub profile: Profile,
    /// Failure domain of this node (rack, zone, host); never empty when set.
    pub zone: Option<String>,
    /// Capabilities this node offers, split and trimmed.
    pub caps: Vec<String>,
    /// Announce and discover peers with mDNS on the local network.
    pub mdns: bool,
    /// Target number of Raft voters (fewer while the mesh is smaller).
    pub voters: usize,
    /// A voter confirmed dead this long is replaced by a healthy learner.
    pub replace_dead_after_ms: u64,
    /// Bearer token for the HTTP API; required when `http` is not loopback.
    pub http_token: Option<String>,
    /// The Redis-protocol endpoint, if served.
    pub resp: Option<SocketAddr>,
    /// Password Redis clients must give with `AUTH`; `None`: only loopback
    /// clients are served.
    pub resp_password: Option<String>,
    /// Serve `FLUSHDB`/`FLUSHALL` (they remove every key of the mesh).
    pub resp_allow_flush: bool,
    /// Most Redis clients served at once (1 to 1,000,000).
    pub resp_max_clients: usize,
    /// The ordering engine.
    pub consensus: crate::engine::EngineKind,
    /// The genesis file (set exactly when `consensus` is pBFT).
    pub pbft_genesis: Option<PathBuf>,
}

/// Redis clients served at once unless configured (Redis's `maxclients`).
pub const DEFAULT_RESP_MAX_CLIENTS: usize = 10_000;

/// Why a node's settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The config file.
        path: PathBuf,
        /// The I/O error reading it.
        source: std::io::Error,
    },
    /// The `--config` file is not TOML of known keys and types.
    #[error("config file {path} is not valid: {detail}")]
    BadFile {
        /// The config file.
        path: PathBuf,
        /// The TOML parser's message.
        detail: String,
    },
    /// An address setting is not `HOST:PORT` or does not resolve.
    #[error("{what} '{value}' is not a valid HOST:PORT address: {detail}")]
    BadAddress {
        /// The setting, as its flag (`--bind`, `--join`, ...).
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Any other value out of range or settings that conflict; the message
    /// names the flag.
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Reads one layer of settings from a TOML file (the `--config` file).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::BadFile {
            path: path.into(),
            detail: e.to_string(),
        })
    }
}

/// Resolves `HOST:PORT` to one socket address (the first, preferring IPv4).
pub fn parse_addr(what: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |detail: String| ConfigError::BadAddress {
        what,
        value: value.to_string(),
        detail,
    };
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(bad("missing ':PORT'".into()));
    };
    if host.is_empty() {
        return Err(bad("missing host".into()));
    }
    port.parse::<u16>()
        .map_err(|_| bad(format!("'{port}' is not a port number")))?;
    let addrs: Vec<SocketAddr> = value
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| bad("resolves to no address".into()))
}

/// The default data directory: `$XDG_DATA_HOME/agent-mesh` or `~/.local/share/agent-mesh`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("agent-mesh");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/agent-mesh"),
        None => PathBuf::from(".agent-mesh"),
    }
}

impl NodeConfig {
    /// Lays `over` (flags and environment) over `file` and the defaults, and checks the result.
    pub fn resolve(over: Settings, file: Settings) -> Result<Self, ConfigError> {
        let node_id = over.node_id.or(file.node_id);
        if let Some(id) = &node_id {
            validate_name("node id", id).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let bind = parse_addr(
            "--bind",
            over.bind.or(file.bind).as_deref().unwrap_or(DEFAULT_BIND),
        )?;
        let http = parse_addr(
            "--http",
            over.http.or(file.http).as_deref().unwrap_or(DEFAULT_HTTP),
        )?;
        let join = over
            .join
            .or(file.join)
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| parse_addr("--join", s))
            .collect::<Result<Vec<_>, _>>()?;
        let profile = match over.profile.or(file.profile) {
            Some(p) => p.parse::<Profile>().map_err(ConfigError::Invalid)?,
            None => Profile::Lan,
        };
        let zone = over.zone.or(file.zone).filter(|z| !z.is_empty());
        let caps: Vec<String> = over
            .caps
            .or(file.caps)
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let soft = SoftState {
            zone: zone.clone(),
            caps: caps.clone(),
            ..Default::default()
        };
        soft.validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if bind.port() == 0 && !join.is_empty() && bind.ip().is_unspecified() {
            return Err(ConfigError::Invalid(
                "--bind 0.0.0.0:0 cannot be advertised to peers: give a concrete address".into(),
            ));
        }
        let voters = over.voters.or(file.voters).unwrap_or(DEFAULT_VOTERS);
        if ![1, 3, 5, 7].contains(&voters) {
            return Err(ConfigError::Invalid(format!(
                "--voters {voters}: expected 1, 3, 5 or 7 (an odd number keeps a clear majority)"
            )));
        }
        let replace_dead_after_ms = match over.replace_dead_after.or(file.replace_dead_after) {
            Some(d) => mesh_proto::units::parse_duration_ms(&d)
                .map_err(|e| ConfigError::Invalid(format!("--replace-dead-after: {e}")))?,
            None => DEFAULT_REPLACE_DEAD_AFTER_MS,
        };
        let http_token = over
            .http_token
            .or(file.http_token)
            .filter(|t| !t.is_empty());
        check_http_token(http, http_token.as_deref())?;
        let resp = match over.resp.or(file.resp) {
            Some(a) if !a.is_empty() => Some(parse_addr("--resp", &a)?),
            _ => None,
        };
        let resp_password = over
            .resp_password
            .or(file.resp_password)
            .filter(|p| !p.is_empty());
        if resp_password.as_ref().is_some_and(|p| p.len() > 512) {
            return Err(ConfigError::Invalid(
                "--resp-password is longer than 512 bytes".into(),
            ));
        }
        let resp_max_clients = over
            .resp_max_clients
            .or(file.resp_max_clients)
            .unwrap_or(DEFAULT_RESP_MAX_CLIENTS);
        if resp_max_clients == 0 || resp_max_clients > 1_000_000 {
            return Err(ConfigError::Invalid(format!(
                "--resp-max-clients {resp_max_clients}: expected 1 to 1000000"
            )));
        }
        let consensus: crate::engine::EngineKind = match over.consensus.or(file.consensus) {
            Some(c) => c.parse().map_err(ConfigError::Invalid)?,
            None => crate::engine::EngineKind::Raft,
        };
        let pbft_genesis = over.pbft_genesis.or(file.pbft_genesis);
        match (consensus, &pbft_genesis) {
            (crate::engine::EngineKind::Pbft, None) => {
                return Err(ConfigError::Invalid(
                    "--consensus pbft needs --pbft-genesis FILE (the replicas' names and public keys; see `mesh pbft --help`)".into(),
                ));
            }
            (crate::engine::EngineKind::Raft, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "--pbft-genesis is only for --consensus pbft".into(),
                ));
            }
            _ => {}
        }
        Ok(NodeConfig {
            consensus,
            pbft_genesis,
            resp,
            resp_password,
            resp_allow_flush: over
                .resp_allow_flush
                .or(file.resp_allow_flush)
                .unwrap_or(false),
            resp_max_clients,
            node_id,
            voters,
            http_token,
            replace_dead_after_ms,
            bind,
            join,
            http,
            data_dir: over
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(default_data_dir),
            profile,
            zone,
            caps,
            mdns: over.mdns.or(file.mdns).unwrap_or(false),
        })
    }
}

/// A token is required for an HTTP address other peers can reach, and must be
/// long and printable (it travels in a header).
fn check_http_token(http: SocketAddr, token: Option<&str>) -> Result<(), ConfigError> {
    match token {
        None if !http.ip().is_loopback() => Err(ConfigError::Invalid(format!(
            "--http {http} is reachable from other hosts: set --http-token (or MESH_HTTP_TOKEN) \
             to a secret of at least {MIN_HTTP_TOKEN_LEN} characters, or bind to 127.0.0.1"
        ))),
        None => Ok(()),
        Some(t) if t.len() < MIN_HTTP_TOKEN_LEN => Err(ConfigError::Invalid(format!(
            "--http-token is {} characters: use at least {MIN_HTTP_TOKEN_LEN}",
            t.len()
        ))),
        Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => Err(ConfigError::Invalid(
            "--http-token must be printable ASCII without spaces".into(),
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_http_address_needs_a_long_printable_token() {
        let open = |http: &str, token: Option<&str>| {
            NodeConfig::resolve(
                Settings {
                    http: Some(http.into()),
                    http_token: token.map(String::from),
                    ..Default::default()
                },
                Settings::default(),
            )
        };
        let e = open("0.0.0.0:7070", None).unwrap_err().to_string();
        assert!(e.contains("--http-token"), "{e}");
        assert!(open("0.0.0.0:7070", Some("short")).is_err());
        assert!(
            open("0.0.0.0:7070", Some("sixteen chars ok")).is_err(),
            "a space"
        );
        let c = open("0.0.0.0:7070", Some("0123456789abcdef")).unwrap();
        assert_eq!(c.http_token.as_deref(), Some("0123456789abcdef"));
        assert!(open("127.0.0.1:7070", None).unwrap().http_token.is_none());
        assert!(
            open("127.0.0.1:7070", Some(""))
                .unwrap()
                .http_token
                .is_none()
        );
    }

    #[test]
    fn flags_win_over_file() {
        let file: Settings =
            toml::from_str("node_id = \"a\"\nzone = \"z1\"\ncaps = [\"gpu\"]\nprofile = \"wan\"")
                .unwrap();
        let over = Settings {
            node_id: Some("b".into()),
            caps: Some(vec!["rust,review".into()]),
            ..Default::default()
        };
        let cfg = NodeConfig::resolve(over, file).unwrap();
        assert_eq!(cfg.node_id.as_deref(), Some("b"));
        assert_eq!(cfg.zone.as_deref(), Some("z1"));
        assert_eq!(cfg.caps, vec!["rust", "review"]);
        assert_eq!(cfg.profile, Profile::Wan);
        assert_eq!(cfg.bind, DEFAULT_BIND.parse().unwrap());
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let bad = |o: Settings| {
            NodeConfig::resolve(o, Settings::default())
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad(Settings {
                bind: Some("127.0.0.1".into()),
                ..Default::default()
            })
            .contains("missing ':PORT'")
        );
        assert!(
            bad(Settings {
                join: Some(vec!["host:99999".into()]),
                ..Default::default()
            })
            .contains("not a port number")
        );
        assert!(
            bad(Settings {
                profile: Some("fast".into()),
                ..Default::default()
            })
            .contains("local, lan, wan")
        );
        assert!(
            bad(Settings {
                caps: Some(vec!["a b".into()]),
                ..Default::default()
            })
            .contains("capability")
        );
        assert!(
            bad(Settings {
                voters: Some(4),
                ..Default::default()
            })
            .contains("expected 1, 3, 5 or 7")
        );
        assert!(
            bad(Settings {
                replace_dead_after: Some("soon".into()),
                ..Default::default()
            })
            .contains("--replace-dead-after")
        );
        assert!(toml::from_str::<Settings>("colour = 1").is_err());
    }
}
