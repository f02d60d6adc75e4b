//! Real forward proxies on loopback for endpoint `proxy` tests: tinyproxy (HTTP, Basic credentials,
//! CONNECT to any port), microsocks (SOCKS5, username/password) and Dante (SOCKS4). Each writes its
//! configuration to the test's folder, listens on a port of its own on 127.0.0.1 and is killed by its
//! own pid when dropped ([`Proc`]).

use std::path::Path;
use std::time::Duration;

use crate::process::{Proc, child_pids, eventually, free_port, pid_alive};

/// How long a proxy may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The username and password the proxies that authenticate expect.
pub const PROXY_USER: &str = "proxy-alice";
pub const PROXY_PASSWORD: &str = "proxy-pw-7f3a9";

/// A forward proxy process.
pub struct ForwardProxy {
    pub port: u16,
    pub proc: Proc,
    program: &'static str,
}

/// Dante works in child processes (negotiate, request, I/O) which its main process stops when asked
/// to (SIGTERM); any left after a short grace are killed by pid, so a dropped proxy carries nothing.
impl Drop for ForwardProxy {
    fn drop(&mut self) {
        let children = child_pids(self.proc.pid(), self.program);
        if children.is_empty() {
            return;
        }
        self.proc.signal(libc::SIGTERM);
        for _ in 0..40 {
            if !self.proc.is_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in children.into_iter().filter(|pid| pid_alive(*pid)) {
            let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

impl ForwardProxy {
    /// tinyproxy asking for [`PROXY_USER`]/[`PROXY_PASSWORD`] (Basic), allowing CONNECT to any port,
    /// adding its `Via` header to what it forwards.
    pub async fn tinyproxy(dir: &Path) -> ForwardProxy {
        let port = free_port();
        let config = dir.join(format!("tinyproxy-{port}.conf"));
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Connect\nMaxClients 64\n\
                 BasicAuth {PROXY_USER} {PROXY_PASSWORD}\nAllow 127.0.0.1\n"
            ),
        )
        .expect("writing tinyproxy's configuration");
        let args = vec!["-d".to_owned(), "-c".to_owned(), config.display().to_string()];
        ForwardProxy::start("tinyproxy", &args, port, dir).await
    }

    /// microsocks (SOCKS5) asking for [`PROXY_USER`]/[`PROXY_PASSWORD`].
    pub async fn microsocks(dir: &Path) -> ForwardProxy {
        let port = free_port();
        let args: Vec<String> = ["-i", "127.0.0.1", "-p", &port.to_string(), "-u", PROXY_USER, "-P", PROXY_PASSWORD]
            .iter()
            .map(|a| a.to_string())
            .collect();
        ForwardProxy::start("microsocks", &args, port, dir).await
    }

    /// Dante's server speaking SOCKS4 (and 5) without authentication, for loopback clients only.
    pub async fn dante(dir: &Path) -> ForwardProxy {
        let port = free_port();
        let config = dir.join(format!("danted-{port}.conf"));
        std::fs::write(
            &config,
            format!(
                "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
                 socksmethod: none\nclientmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
                 client pass {{\n  from: 127.0.0.0/8 to: 0.0.0.0/0\n}}\n\
                 socks pass {{\n  from: 127.0.0.0/8 to: 127.0.0.0/8\n}}\n"
            ),
        )
        .expect("writing Dante's configuration");
        let args = vec!["-f".to_owned(), config.display().to_string(), "-N".to_owned(), "1".to_owned()];
        ForwardProxy::start("danted", &args, port, dir).await
    }

    async fn start(program: &'static str, args: &[String], port: u16, dir: &Path) -> ForwardProxy {
        let mut proc = Proc::spawn_path(Path::new(program), args, &[], dir, program);
        eventually(&format!("{program} to listen on {port}"), START_TIMEOUT, || {
            assert!(proc.is_running(), "{program} exited: {}{}", proc.stdout(), proc.stderr());
            async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop) }
        })
        .await;
        ForwardProxy { port, proc, program }
    }

    /// Everything the proxy logged so far.
    pub fn log(&self) -> String {
        self.proc.stdout() + &self.proc.stderr()
    }
}
