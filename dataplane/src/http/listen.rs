//! Listening sockets, and the address file that tells tests and scripts which ports were bound.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues while the accept loop is busy.
const BACKLOG: i32 = 1024;

/// Binds a TCP listener; `reuse_port` lets several dataplanes of a host share the port (the
/// kernel spreads connections between them).
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Writes `{"listen":"ip:port","admin":"ip:port"}` through a temporary file and a rename, so a
/// reader polling for the file never sees half of it.
pub fn write_addr_file(path: &Path, listen: SocketAddr, admin: SocketAddr) -> io::Result<()> {
    let content = serde_json::json!({ "listen": listen.to_string(), "admin": admin.to_string() }).to_string();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reuse_port_lets_two_listeners_share_a_port() {
        let first = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind(addr, true).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        assert!(bind(addr, false).is_err());
    }

    #[test]
    fn addr_file_is_complete_json() {
        let dir = std::env::temp_dir().join(format!("hgw-dp-addr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("addr.json");
        write_addr_file(&path, "127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["listen"], "127.0.0.1:1");
        assert_eq!(v["admin"], "127.0.0.1:2");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
