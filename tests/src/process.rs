//! Child processes for end-to-end tests: the real binaries, started with their output captured in
//! files (readable while they run and kept after a failure), and always killed when the test ends.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How often exits and files are polled: fast enough for tests, cheap on two cores.
const POLL: Duration = Duration::from_millis(20);

/// How many trailing stderr lines are printed when a test panics while a process is alive.
const STDERR_TAIL_LINES: usize = 40;

/// Path of a workspace binary (`hgw-agent`, `hgw-dataplane`, `hgw-cloudgate-sim`): in `$HGW_BIN_DIR`
/// if set, else in the directory above the running test executable (`target/debug/deps/..`), where
/// cargo puts the workspace's binaries.
///
/// # Panics
/// When the binary is missing: the tests need it built first.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("HGW_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("the test executable's path is known");
            let mut dir = exe.parent().expect("the test executable is in a directory").to_path_buf();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "binary `{name}` not found at {}: run `cargo build --workspace --bins` first \
         (or point HGW_BIN_DIR at the directory holding it)",
        path.display()
    );
    path
}

/// A child process, killed (SIGKILL) and reaped on drop; its stdout and stderr go to files in the
/// log directory, so tests can read them at any time and keep them for a post-mortem.
pub struct Proc {
    child: Mutex<Child>,
    pid: u32,
    label: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Proc {
    /// Starts the workspace binary `name` (see [`bin_path`]); `envs` are added to the inherited
    /// environment.
    ///
    /// # Panics
    /// When the binary is missing or cannot be started.
    pub fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)], log_dir: &Path) -> Proc {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Proc::spawn_path(&bin_path(name), &args, &envs, log_dir, name)
    }

    /// Starts any program; `label` names its log files (`LABEL.stdout`, `LABEL.stderr`, with a
    /// `-N` suffix when a process of the same label already logged in `log_dir`).
    ///
    /// # Panics
    /// When the log files or the process cannot be created.
    pub fn spawn_path(program: &Path, args: &[String], envs: &[(String, String)], log_dir: &Path, label: &str) -> Proc {
        std::fs::create_dir_all(log_dir).unwrap_or_else(|e| panic!("creating log dir {}: {e}", log_dir.display()));
        let (stdout_path, stderr_path) = log_paths(log_dir, label);
        let create = |path: &Path| File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(create(&stdout_path))
            .stderr(create(&stderr_path))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Proc { pid: child.id(), child: Mutex::new(child), label: label.to_owned(), stdout_path, stderr_path }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.stdout_path.clone()
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.stderr_path.clone()
    }

    /// Current contents of stdout (lossy UTF-8; empty if unreadable).
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Current contents of stderr (lossy UTF-8; empty if unreadable).
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends signal `sig` (e.g. `libc::SIGTERM`) unless the process was already reaped, in which
    /// case its pid may belong to someone else now. Goes through the `kill` command because the
    /// workspace forbids `unsafe` (which `libc::kill` needs).
    ///
    /// # Panics
    /// When `kill` cannot be run.
    pub fn signal(&self, sig: i32) {
        let mut child = self.child();
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running `kill -{sig} {}`: {e}", self.pid));
        // Failure means it exited between try_wait and kill: nothing left to signal.
        let _ = status;
    }

    /// Waits for the process to exit; `None` if it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child().try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Asks the process to stop (SIGTERM) and waits up to `grace`; then kills it (SIGKILL).
    /// Answers the exit status, which shows whether it exited by itself or was killed.
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_exit(grace).await {
            return Some(status);
        }
        let mut child = self.child();
        let _ = child.kill();
        child.wait().ok()
    }

    /// Whether the process is still alive (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child().try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let mut child = self.child();
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(child);
        if std::thread::panicking() {
            // The test failed: show what the process said, the quickest clue to why.
            let stderr = self.stderr();
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
            eprintln!(
                "---- {} (pid {}) stderr tail, full log at {} ----\n{}",
                self.label,
                self.pid,
                self.stderr_path.display(),
                tail.join("\n")
            );
        }
    }
}

fn log_paths(dir: &Path, label: &str) -> (PathBuf, PathBuf) {
    let mut n = 1;
    loop {
        let stem = if n == 1 { label.to_owned() } else { format!("{label}-{n}") };
        let out = dir.join(format!("{stem}.stdout"));
        let err = dir.join(format!("{stem}.stderr"));
        if !out.exists() && !err.exists() {
            return (out, err);
        }
        n += 1;
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
}

/// Runs a workspace binary to completion (for bad-configuration tests): answers its exit code
/// (`None` if killed by a signal or still running at `timeout`, when it is killed), stdout and stderr.
pub async fn run_to_exit(
    name: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    timeout: Duration,
) -> (Option<i32>, String, String) {
    let logs = tempfile::tempdir().expect("creating a temporary log dir");
    let mut proc = Proc::spawn(name, args, envs, logs.path());
    let code = proc.wait_exit(timeout).await.and_then(|s| s.code());
    let (stdout, stderr) = (proc.stdout(), proc.stderr());
    drop(proc);
    (code, stdout, stderr)
}

/// The pids of the live children of `parent` whose command name is `name` (from `/proc`; a child that
/// exited and awaits its reaper does not count).
pub fn child_pids(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(comm, state, ppid)| ppid == parent && comm == name && state != 'Z'))
        .collect()
}

/// Whether `pid` is a live process (a zombie, exited but not reaped, is not).
pub fn pid_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, state, _)| state != 'Z' && state != 'X')
}

/// `(comm, state, ppid)` from `/proc/PID/stat` (`comm` is in parentheses and may hold spaces).
fn proc_stat(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// A loopback port free right now (bound to `127.0.0.1:0`, then released), for flags that need a
/// known port before the process starts (`--dataplane-listen` shared by a pool).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Reads the JSON file a binary writes once bound (`--addr-file`), polling until it parses.
///
/// # Panics
/// When it does not parse within `timeout`.
pub async fn read_addr_file(path: &Path, timeout: Duration) -> serde_json::Value {
    let what = format!("address file {}", path.display());
    eventually(&what, timeout, || async {
        let text = tokio::fs::read_to_string(path).await.ok()?;
        serde_json::from_str(&text).ok()
    })
    .await
}

/// Polls `check` every 50 ms until it answers `Some(v)`.
///
/// # Panics
/// With `what` when `timeout` passes first.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, dir: &Path) -> Proc {
        Proc::spawn_path(
            Path::new("/bin/sh"),
            &["-c".to_owned(), script.to_owned()],
            &[("HGW_TEST_VAR".to_owned(), "hello".to_owned())],
            dir,
            "sh",
        )
    }

    #[tokio::test]
    async fn captures_output_and_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh("echo out $HGW_TEST_VAR; echo err >&2; exit 3", dir.path());
        let status = p.wait_exit(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(p.stdout(), "out hello\n");
        assert_eq!(p.stderr(), "err\n");
        assert!(!p.is_running());
        // A second process of the same label gets its own files.
        let q = sh("true", dir.path());
        assert_ne!(q.stdout_path(), p.stdout_path());
    }

    #[tokio::test]
    async fn terminate_escalates_to_kill() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh("trap '' TERM; while true; do sleep 0.05; done", dir.path());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(p.is_running());
        let status = p.terminate(Duration::from_millis(300)).await.unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn children_are_found_and_their_exit_seen() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh("sleep 30 & wait", dir.path());
        let parent = p.pid();
        let children = eventually("the sleep child", Duration::from_secs(5), || async {
            let found = child_pids(parent, "sleep");
            (!found.is_empty()).then_some(found)
        })
        .await;
        assert!(children.iter().all(|pid| pid_alive(*pid)));
        assert!(child_pids(parent, "no-such-name").is_empty());
        for pid in &children {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        eventually("the sleep child exits", Duration::from_secs(5), || async {
            children.iter().all(|pid| !pid_alive(*pid)).then_some(())
        })
        .await;
        p.terminate(Duration::from_secs(1)).await;
        drop(p);
        assert!(free_port() > 0);
    }

    #[tokio::test]
    async fn eventually_polls_until_some() {
        let mut n = 0;
        let v = eventually("n to reach 3", Duration::from_secs(2), || {
            n += 1;
            let n = n;
            async move { (n >= 3).then_some(n) }
        })
        .await;
        assert_eq!(v, 3);
    }
}
