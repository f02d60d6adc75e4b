//! The Unix socket's folder and peers.
//!
//! The agent makes the folder itself (mode 0750, group `--grpc-socket-group`), refuses an existing one
//! it does not own or that group or others can write (whoever can write the folder can swap the socket),
//! and binds the socket with mode 0660. Each connecting process is checked with SO_PEERCRED against
//! `--grpc-socket-allow-uid` (default: the agent's own uid and root).
//!
//! Without `--grpc-socket`, a supervising agent puts its socket in a folder no other user can predict or
//! pre-create: `$RUNTIME_DIRECTORY` (systemd's RuntimeDirectory=), `$XDG_RUNTIME_DIR/hgw`, `/run/hgw` when
//! running as root, else `{--state-dir}/run`.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

/// The socket's file name inside its folder.
pub const SOCKET_NAME: &str = "agent.sock";

/// Why the socket's folder cannot be used. Shown as one line, exit code 64.
#[derive(Debug, thiserror::Error)]
pub enum SocketDirError {
    #[error("gRPC socket folder {path}: owned by uid {owner}, not by this agent (uid {me}); refusing it")]
    NotOwned { path: String, owner: u32, me: u32 },
    #[error(
        "gRPC socket folder {path}: group or others may write it (mode {mode:o}), so another user could swap the socket; refusing it"
    )]
    Writable { path: String, mode: u32 },
    #[error("gRPC socket folder {path}: not a folder")]
    NotDir { path: String },
    #[error("gRPC socket folder {path}: {problem}")]
    Io { path: String, problem: String },
    #[error("--grpc-socket-group `{0}`: no such group")]
    Group(String),
    #[error(
        "no private place for the gRPC socket: set --grpc-socket PATH (or RUNTIME_DIRECTORY, XDG_RUNTIME_DIR or --state-dir)"
    )]
    NoDefault,
}

/// The default socket path of a supervising agent started without `--grpc-socket`.
pub fn default_socket(env: &HashMap<String, String>, state_dir: Option<&Path>) -> Result<PathBuf, SocketDirError> {
    let var = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| v.starts_with('/'));
    let dir = if let Some(dirs) = var("RUNTIME_DIRECTORY") {
        PathBuf::from(dirs.split(':').next().unwrap_or(dirs))
    } else if let Some(xdg) = var("XDG_RUNTIME_DIR") {
        PathBuf::from(xdg).join("hgw")
    } else if Uid::effective().is_root() {
        PathBuf::from("/run/hgw")
    } else if let Some(state) = state_dir {
        state.join("run")
    } else {
        return Err(SocketDirError::NoDefault);
    };
    Ok(dir.join(SOCKET_NAME))
}

/// Resolves `--grpc-socket-group` (a name or a numeric gid).
pub fn resolve_group(group: &str) -> Result<Gid, SocketDirError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(Gid::from_raw(gid));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid),
        _ => Err(SocketDirError::Group(group.to_owned())),
    }
}

/// Creates the socket's folder (0750, `group`) or checks an existing one, before anything binds.
pub fn prepare_dir(socket: &Path, group: Option<Gid>) -> Result<(), SocketDirError> {
    let dir = match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let io =
        |problem: std::io::Error| SocketDirError::Io { path: dir.display().to_string(), problem: problem.to_string() };
    match std::fs::symlink_metadata(&dir) {
        Ok(_) => check_dir(&dir)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::DirBuilder::new().create(&dir).map_err(io)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).map_err(io)?;
            // Made by us a moment ago: check anyway (a racing user could have made it first).
            check_dir(&dir)?;
        }
        Err(error) => return Err(io(error)),
    }
    if let Some(gid) = group {
        nix::unistd::chown(&dir, None, Some(gid)).map_err(|e| io(e.into()))?;
    }
    Ok(())
}

fn check_dir(dir: &Path) -> Result<(), SocketDirError> {
    let path = dir.display().to_string();
    // symlink_metadata: a symlink planted by someone else is refused as "not a folder".
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| SocketDirError::Io { path: path.clone(), problem: e.to_string() })?;
    if !meta.is_dir() {
        return Err(SocketDirError::NotDir { path });
    }
    let me = Uid::effective().as_raw();
    if meta.uid() != me {
        return Err(SocketDirError::NotOwned { path, owner: meta.uid(), me });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(SocketDirError::Writable { path, mode: meta.mode() & 0o7777 });
    }
    Ok(())
}

/// After binding: the socket file is 0660 (owner and group) and carries `group`.
pub fn secure_socket(socket: &Path, group: Option<Gid>) -> std::io::Result<()> {
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = group {
        nix::unistd::chown(socket, None, Some(gid))?;
    }
    Ok(())
}

/// The uids allowed on the socket: those given, else this process's own and root.
pub fn allowed_uids(given: &[u32]) -> Vec<u32> {
    if given.is_empty() {
        let mut uids = vec![Uid::effective().as_raw(), 0];
        uids.dedup();
        uids
    } else {
        given.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_avoid_predictable_shared_folders() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(
            default_socket(&env(&[("RUNTIME_DIRECTORY", "/run/hgw-agent"), ("XDG_RUNTIME_DIR", "/run/user/1")]), None)
                .unwrap(),
            PathBuf::from("/run/hgw-agent/agent.sock")
        );
        assert_eq!(
            default_socket(&env(&[("XDG_RUNTIME_DIR", "/run/user/1")]), None).unwrap(),
            PathBuf::from("/run/user/1/hgw/agent.sock")
        );
        let fallback = default_socket(&HashMap::new(), Some(Path::new("/var/lib/hgw"))).unwrap();
        assert!(fallback == Path::new("/run/hgw/agent.sock") || fallback == Path::new("/var/lib/hgw/run/agent.sock"));
        assert!(!fallback.starts_with("/tmp"));
    }

    #[test]
    fn folders_others_can_write_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let fresh = base.path().join("fresh");
        prepare_dir(&fresh.join(SOCKET_NAME), None).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o750);

        let open = base.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare_dir(&open.join(SOCKET_NAME), None).unwrap_err();
        assert!(matches!(err, SocketDirError::Writable { .. }), "{err}");
        // /tmp itself is world-writable (sticky): a socket directly in it is refused.
        assert!(prepare_dir(Path::new("/tmp/hgw-direct.sock"), None).is_err());
    }
}
