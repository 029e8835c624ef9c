//! `mesh pbft`: set up a mesh that orders with pBFT (`mesh up --consensus pbft`).
//!
//! `keygen` creates a node's replica key in its data directory and prints its
//! genesis line; `genesis` gathers the lines into the file every replica
//! starts with (`--pbft-genesis`). See `mesh_node::pbft_setup` for the format.

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
            for r in &replicas {
                let (name, key) = r.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("--replica {r}: expected NAME=PUBLIC_KEY_HEX")
                })?;
                g.replicas.push(GenesisReplica {
                    name: name.trim().to_string(),
                    key: key.trim().to_string(),
                });
            }
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
