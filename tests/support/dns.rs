//! A tiny DNS server on loopback that answers A queries from a fixed table: the stand-in for
//! Docker's embedded DNS, so the load balancer finds services by name exactly as in compose.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::UdpSocket;

pub struct Dns {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Dns {
    /// Serves `names` (name → addresses) until dropped.
    pub async fn start(names: HashMap<String, Vec<Ipv4Addr>>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                if let Some(reply) = answer(&buf[..len], &names) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        Self { addr, task }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reply to one query (RFC 1035 §4): the question echoed, then one A record per address;
/// NXDOMAIN for an unknown name, no records for other types.
fn answer(query: &[u8], names: &HashMap<String, Vec<Ipv4Addr>>) -> Option<Vec<u8>> {
    let (name, question_end) = question(query)?;
    let qtype = u16::from_be_bytes([query[question_end - 4], query[question_end - 3]]);
    let known = names.get(&name.to_ascii_lowercase());
    let records: &[Ipv4Addr] = match known {
        Some(addrs) if qtype == 1 => addrs,
        _ => &[],
    };
    let rcode = if known.is_some() { 0 } else { 3 };
    let mut reply = Vec::with_capacity(question_end + records.len() * 16);
    reply.extend_from_slice(&query[..2]); // id
    reply.extend_from_slice(&[0x81, 0x80 | rcode]); // response, recursion desired+available
    reply.extend_from_slice(&[0, 1]); // one question
    reply.extend_from_slice(&(records.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional
    reply.extend_from_slice(&query[12..question_end]);
    for ip in records {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // the question's name, A, IN
        reply.extend_from_slice(&1u32.to_be_bytes()); // TTL 1 s
        reply.extend_from_slice(&[0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

/// The queried name and where the question ends.
fn question(query: &[u8]) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).into_owned());
        at += len;
    }
    let end = at + 4; // type and class
    (end <= query.len()).then(|| (labels.join("."), end))
}
