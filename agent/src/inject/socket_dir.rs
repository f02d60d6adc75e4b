//! `hgw-agent prepare-socket-dir`: makes the node folder that holds the agent's socket belong to the
//! image's user with tight permissions, from an init container (the image has no shell, and the kubelet
//! creates a hostPath folder as root, mode 0755).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

/// hgw-agent prepare-socket-dir: create PATH if missing, chown it to OWNER and chmod it to MODE.
#[derive(Debug, Parser)]
#[command(name = "hgw-agent prepare-socket-dir", version)]
pub struct SocketDirCli {
    /// The folder (a hostPath mount in the agent DaemonSet).
    #[arg(long, env = "HGW_SOCKET_DIR")]
    pub path: PathBuf,
    /// `uid:gid` to own it (the image's user: 65532:65532).
    #[arg(long, env = "HGW_SOCKET_DIR_OWNER", default_value = "65532:65532")]
    pub owner: String,
    /// Octal mode: 750 lets the owner in and the group (sidecars run with the same gid) reach the socket.
    #[arg(long, env = "HGW_SOCKET_DIR_MODE", default_value = "750")]
    pub mode: String,
}

/// What cannot be done, named.
#[derive(Debug, thiserror::Error)]
pub enum SocketDirError {
    #[error("--owner {0:?}: expected uid:gid")]
    Owner(String),
    #[error("--mode {0:?}: expected an octal mode such as 750")]
    Mode(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Parses `uid:gid` and an octal mode (at most 0o777: no setuid, setgid or sticky bits).
pub fn parse(owner: &str, mode: &str) -> Result<(u32, u32, u32), SocketDirError> {
    let (uid, gid) = owner
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .ok_or_else(|| SocketDirError::Owner(owner.to_owned()))?;
    let mode = u32::from_str_radix(mode, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| SocketDirError::Mode(mode.to_owned()))?;
    Ok((uid, gid, mode))
}

/// Creates the folder if needed, then sets its owner and mode.
pub fn prepare(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), SocketDirError> {
    let io = |source| SocketDirError::Io { path: path.display().to_string(), source };
    std::fs::create_dir_all(path).map_err(io)?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(())
}

pub fn run(cli: SocketDirCli) -> ExitCode {
    let (uid, gid, mode) = match parse(&cli.owner, &cli.mode) {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("hgw-agent: invalid configuration: {error}");
            return ExitCode::from(64);
        }
    };
    match prepare(&cli.path, uid, gid, mode) {
        Ok(()) => {
            eprintln!("hgw-agent prepare-socket-dir: {} owned by {uid}:{gid}, mode {mode:o}", cli.path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("hgw-agent prepare-socket-dir: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_mode_are_checked() {
        assert_eq!(parse("65532:65532", "750").unwrap(), (65532, 65532, 0o750));
        assert!(parse("65532", "750").is_err());
        assert!(parse("a:b", "750").is_err());
        assert!(parse("1:1", "4750").is_err());
        assert!(parse("1:1", "789").is_err());
    }

    #[test]
    fn the_folder_is_created_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/hgw");
        let uid = std::fs::metadata(dir.path()).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
        let gid = std::fs::metadata(dir.path()).map(|m| std::os::unix::fs::MetadataExt::gid(&m)).unwrap();
        prepare(&path, uid, gid, 0o750).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o750);
    }
}
