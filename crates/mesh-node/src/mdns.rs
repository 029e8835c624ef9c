//! Optional mDNS discovery on a LAN (`mesh up --mdns`), with the mdns-sd crate.
//!
//! Each node registers `_agent-mesh._udp.local.` with its gossip port and browses
//! for the others; every address it resolves is handed to the membership core,
//! which sends a join unless that address is already a member. Discovery only
//! finds peers: membership, failure detection and everything else stay SWIM's.

use std::net::SocketAddr;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;

/// The DNS-SD service type of Agent Mesh nodes.
pub const SERVICE_TYPE: &str = "_agent-mesh._udp.local.";

/// Registers this node and forwards every peer address found to `found`.
/// Returns the daemon; dropping it does not stop it, call `shutdown`.
pub fn start(
    name: &str,
    gossip: SocketAddr,
    found: mpsc::Sender<SocketAddr>,
) -> Result<ServiceDaemon, mdns_sd::Error> {
    let daemon = ServiceDaemon::new()?;
    if gossip.ip().is_loopback() {
        // Nodes bound to loopback can only find each other over loopback.
        daemon.enable_interface(IfKind::LoopbackV4)?;
    }
    let host = format!("{name}.local.");
    let props: [(&str, &str); 1] = [("node", name)];
    let info = if gossip.ip().is_unspecified() {
        ServiceInfo::new(SERVICE_TYPE, name, &host, "", gossip.port(), &props[..])?
            .enable_addr_auto()
    } else {
        ServiceInfo::new(
            SERVICE_TYPE,
            name,
            &host,
            gossip.ip(),
            gossip.port(),
            &props[..],
        )?
    };
    let own = info.get_fullname().to_string();
    daemon.register(info)?;
    let events = daemon.browse(SERVICE_TYPE)?;
    std::thread::Builder::new()
        .name("mdns-browse".into())
        .spawn(move || {
            while let Ok(event) = events.recv() {
                if let ServiceEvent::ServiceResolved(service) = event {
                    if service.fullname == own {
                        continue;
                    }
                    for ip in &service.addresses {
                        let addr = SocketAddr::new(ip.to_ip_addr(), service.port);
                        if found.blocking_send(addr).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .map_err(|e| mdns_sd::Error::Msg(e.to_string()))?;
    Ok(daemon)
}
