//! `mesh pbft`: set up a mesh that orders with pBFT (`mesh up --consensus pbft`).
//!
//! `keygen` creates a node's replica key in its data directory and prints its
//! genesis line; `genesis` gathers the lines into the file every replica
//! starts with (`--pbft-genesis`). See `mesh_node::pbft_setup` for the format.
//!
//! `reconfigure` sends a running replica's vote for a new replica set (2f + 1
//! replicas must vote for the same list); `config` prints the configuration
//! in force, which a node joining the set starts from (`mesh up --consensus
//! pbft --pbft-genesis` that file).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use mesh_node::pbft_setup::{Genesis, GenesisReplica, key_path, load_key, load_or_create_key};

#[derive(Args, Debug)]
pub struct PbftArgs {
    #[command(subcommand)]
    command: PbftCommand,
}

#[derive(Subcommand, Debug)]
enum PbftCommand {
    /// Create this node's replica key (unless it exists) and print its genesis entry as JSON.
    Keygen {
        /// The node's data directory (the key goes to DIR/pbft/replica.key, mode 0600)
        #[arg(long, env = "MESH_DATA_DIR", value_name = "DIR")]
        data_dir: PathBuf,
        /// The node's name [default: DIR/node-id, written there when given and absent]
        #[arg(long, env = "MESH_NODE_ID")]
        node_id: Option<String>,
    },
    /// Write the genesis file: the replicas in order (replica 0 is the first primary).
    Genesis {
        /// A replica's data directory (its node-id and key are read), repeatable
        #[arg(long = "data-dir", value_name = "DIR")]
        data_dirs: Vec<PathBuf>,
        /// A replica given as NAME=PUBLIC_KEY_HEX (what `keygen` printed), repeatable
        #[arg(long = "replica", value_name = "NAME=KEY")]
        replicas: Vec<String>,
        /// Write here instead of standard output
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Vote, as the replica at --node, for a new replica set (in order; the
    /// first is the first primary). 2f + 1 replicas of the current set must
    /// vote for the same list; the change takes effect a window later.
    Reconfigure {
        /// The voting replica's HTTP URL
        #[arg(long, env = "MESH_NODE", default_value = crate::api::DEFAULT_NODE)]
        node: String,
        /// The new set as a genesis-format file (`mesh pbft genesis --out` writes one)
        #[arg(long, value_name = "FILE", conflicts_with = "replicas")]
        file: Option<PathBuf>,
        /// A replica of the new set as NAME=PUBLIC_KEY_HEX, repeatable, in order
        #[arg(long = "replica", value_name = "NAME=KEY")]
        replicas: Vec<String>,
    },
    /// Print the pBFT configuration in force (JSON): give it to a node that
    /// joins the replica set as its --pbft-genesis.
    Config {
        /// Ask this running node
        #[arg(long, env = "MESH_NODE", default_value = crate::api::DEFAULT_NODE, conflicts_with = "data_dir")]
        node: String,
        /// Read it from this stopped node's data directory instead
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Write here instead of standard output
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `NAME=KEY` arguments as genesis entries.
fn parse_replicas(args: &[String]) -> anyhow::Result<Vec<GenesisReplica>> {
    args.iter()
        .map(|r| {
            let (name, key) = r
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--replica {r}: expected NAME=PUBLIC_KEY_HEX"))?;
            Ok(GenesisReplica {
                name: name.trim().to_string(),
                key: key.trim().to_string(),
            })
        })
        .collect()
}

fn write_out(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

pub fn run(args: PbftArgs) -> anyhow::Result<()> {
    match args.command {
        PbftCommand::Keygen { data_dir, node_id } => {
            let name = node_name(&data_dir, node_id.as_deref())?;
            let (key, created) =
                load_or_create_key(&key_path(&data_dir)).map_err(anyhow::Error::msg)?;
            let entry = GenesisReplica {
                name,
                key: mesh_proto::hex::encode(&key.verifying_key().to_bytes()),
            };
            eprintln!(
                "{} {}",
                if created {
                    "created"
                } else {
                    "kept the existing"
                },
                key_path(&data_dir).display()
            );
            println!("{}", serde_json::to_string(&entry)?);
            Ok(())
        }
        PbftCommand::Genesis {
            data_dirs,
            replicas,
            out,
        } => {
            let mut g = Genesis {
                replicas: Vec::new(),
            };
            for dir in &data_dirs {
                let name = node_name(dir, None)?;
                let key = load_key(&key_path(dir)).map_err(|e| {
                    anyhow::anyhow!(
                        "{e} (run `mesh pbft keygen --data-dir {}` first)",
                        dir.display()
                    )
                })?;
                g.replicas.push(GenesisReplica {
                    name,
                    key: mesh_proto::hex::encode(&key.verifying_key().to_bytes()),
                });
            }
            g.replicas.extend(parse_replicas(&replicas)?);
            g.replica_set()
                .map_err(|e| anyhow::anyhow!("not a valid replica set: {e}"))?;
            let text = serde_json::to_string_pretty(&g)? + "\n";
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                    eprintln!(
                        "wrote {} ({} replicas, tolerates f = {} Byzantine)",
                        path.display(),
                        g.replicas.len(),
                        (g.replicas.len() - 1) / 3
                    );
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        PbftCommand::Reconfigure {
            node,
            file,
            replicas,
        } => {
            let g = match file {
                Some(path) => Genesis::read(&path).map_err(anyhow::Error::msg)?,
                None if replicas.is_empty() => {
                    anyhow::bail!("give the new replica set: --file FILE or --replica NAME=KEY ...")
                }
                None => Genesis {
                    replicas: parse_replicas(&replicas)?,
                },
            };
            g.replica_set()
                .map_err(|e| anyhow::anyhow!("not a valid replica set: {e}"))?;
            let body = serde_json::to_vec(&g)?;
            let r = crate::api::Api::new(&node).send(
                "POST",
                "/v1/pbft/reconfigure",
                &body,
                "application/json",
                None,
            )?;
            match r["status"].as_str() {
                Some("decided") => println!(
                    "decided: epoch {} ({}) starts after sequence number {}",
                    r["epoch"],
                    r["replicas"]
                        .as_array()
                        .map(|a| a
                            .iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default(),
                    r["end"]
                ),
                Some("counted") => println!(
                    "vote counted: {} of the {} votes it takes",
                    r["votes"], r["need"]
                ),
                _ => println!("{r}"),
            }
            Ok(())
        }
        PbftCommand::Config {
            node,
            data_dir,
            out,
        } => {
            let text = match data_dir {
                Some(dir) => {
                    let pbft = dir.join(mesh_node::pbft_setup::PBFT_DIR);
                    let file = mesh_consensus::pbft::engine::EpochFile::read(&pbft)
                        .map_err(anyhow::Error::msg)?
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "{} holds no pBFT configuration (epoch.json): the node never started on pBFT",
                                pbft.display()
                            )
                        })?;
                    serde_json::to_string_pretty(&file)?
                }
                None => serde_json::to_string_pretty(
                    &crate::api::Api::new(&node).get("/v1/pbft/config")?,
                )?,
            };
            write_out(out.as_deref(), &(text + "\n"))
        }
    }
}

/// The node's name: `given` (stored in the data directory if it has none),
/// else the one stored there.
fn node_name(dir: &Path, given: Option<&str>) -> anyhow::Result<String> {
    let file = dir.join("node-id");
    let stored = std::fs::read_to_string(&file)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    match (given, stored) {
        (Some(g), Some(s)) if g != s => {
            anyhow::bail!("{} names this node '{s}', not '{g}'", file.display())
        }
        (Some(g), _) => {
            mesh_proto::soft::validate_name("node id", g)?;
            std::fs::create_dir_all(dir)?;
            std::fs::write(&file, g)?;
            Ok(g.to_string())
        }
        (None, Some(s)) => Ok(s),
        (None, None) => anyhow::bail!("{} has no node-id yet: give --node-id", dir.display()),
    }
}
