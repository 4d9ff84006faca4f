//! Who may touch the election in ZooKeeper, and how the connection is
//! protected: digest credentials, the ACL of every node the daemon
//! creates, and TLS to the servers.
//!
//! Without credentials the daemon creates its nodes open to everyone
//! (`world:anyone` ALL), as before. With credentials (`--zk-auth-file` or
//! `ELECTION_ZK_AUTH`, `user:password`) the session authenticates with the
//! `digest` scheme and every node of the election it creates (the election
//! path, candidates, `fencing`, `writer`) carries
//!
//! ```text
//! digest:<user>:<base64(sha1(user:password))>  ALL
//! world:anyone                                 READ
//! ```
//!
//! except the missing parents above the election path it creates
//! (`/election` for `/election/<release>`), which other releases share:
//! those get `world:anyone` READ|CREATE ([`ZkSecurity::parent_acl`]).
//!
//! An explicit digest id rather than the `auth` scheme (`creator_all`):
//! `auth` grants ALL to *every* identity of the creating session, which
//! with TLS client certificates would include the certificate's identity
//! too. World READ keeps `election status`, `zkCli get` and monitoring
//! working without credentials; the data readable that way is what the
//! docs/design.md#access-control lists (replica names, host, pid, the token floor). An
//! operator's super identity (`superDigest` on the servers) bypasses ACLs.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use zookeeper_client::{Acl, AuthId, Connector, Permission, TlsOptions};

/// Why credentials or TLS files cannot be used. Never repeats a password.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Inline credentials are malformed.
    #[error("credentials must {0}")]
    Malformed(&'static str),
    /// A file cannot be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A credentials file others can read.
    #[error("`{path}` is accessible to other users (mode {mode:o}); `chmod o-rwx` it")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A credentials file with malformed content.
    #[error("`{path}`: credentials must {reason}")]
    MalformedFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A PEM file the TLS library rejects.
    #[error("`{what}`: {source}")]
    Pem {
        /// The file(s).
        what: String,
        /// The error.
        #[source]
        source: zookeeper_client::Error,
    },
}

/// Digest credentials `user:password`. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:<redacted>)", self.user)
    }
}

impl Credentials {
    /// Parses `user:password` (one trailing newline allowed, as files have).
    /// The error never repeats the input.
    pub fn parse(s: &str) -> Result<Credentials, AccessError> {
        let s = s.strip_suffix('\n').unwrap_or(s);
        let s = s.strip_suffix('\r').unwrap_or(s);
        let (user, password) = s.split_once(':').ok_or(AccessError::Malformed(
            "have the form `user:password` (no `:` found)",
        ))?;
        if user.is_empty() || password.is_empty() {
            return Err(AccessError::Malformed(
                "have the form `user:password` (empty user or password)",
            ));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(AccessError::Malformed(
                "be one line without control characters",
            ));
        }
        Ok(Credentials {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// Reads credentials from a file that others cannot read (like ssh's
    /// keys: mode `0600` or `0640`/`0440` for a group, never world-readable).
    pub fn from_file(path: &Path) -> Result<Credentials, AccessError> {
        use std::os::unix::fs::PermissionsExt as _;
        let read_error = |source| AccessError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_error)?;
        if meta.permissions().mode() & 0o007 != 0 {
            return Err(AccessError::Exposed {
                path: path.to_owned(),
                mode: meta.permissions().mode() & 0o777,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Credentials::parse(&text).map_err(|e| match e {
            AccessError::Malformed(reason) => AccessError::MalformedFile {
                path: path.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// The user name (safe to log).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The digest ACL id: `user:base64(sha1(user:password))`, what
    /// ZooKeeper's `DigestAuthenticationProvider.generateDigest` computes.
    pub fn digest_id(&self) -> String {
        digest_id(&self.user, &self.password)
    }
}

/// `user:base64(sha1(user:password))`.
pub fn digest_id(user: &str, password: &str) -> String {
    let sha = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{user}:{password}").as_bytes(),
    );
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(sha.as_ref())
    )
}

/// PEM files for TLS to ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) that sign the servers' certificates.
    pub ca: PathBuf,
    /// Client certificate and key, for servers with `ssl.clientAuth=need`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// Reads the files into client options. Read at every connect, so a
    /// rotated certificate (a Secret updated in place) is used by the next
    /// session without a restart.
    pub fn options(&self) -> Result<TlsOptions, AccessError> {
        let read = read_pem;
        let mut options = TlsOptions::new()
            .with_pem_ca(&read(&self.ca)?)
            .map_err(|source| AccessError::Pem {
                what: self.ca.display().to_string(),
                source,
            })?;
        if let Some((cert, key)) = &self.identity {
            options = options
                .with_pem_identity(&read(cert)?, &read(key)?)
                .map_err(|source| AccessError::Pem {
                    what: format!("{}`/`{}", cert.display(), key.display()),
                    source,
                })?;
        }
        Ok(options)
    }
}

/// The largest PEM file read (a CA bundle is tens of KiB).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads a PEM file: a regular file (symlinks followed, as in a mounted
/// Secret) of at most [`MAX_PEM_BYTES`]. Opened non-blocking and checked
/// with `fstat` before reading, so a FIFO is refused at once instead of
/// blocking the reader forever.
pub fn read_pem(path: &Path) -> Result<String, AccessError> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let error = |source| AccessError::Read {
        path: path.to_owned(),
        source,
    };
    let refuse = |what: String| error(std::io::Error::other(what));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(error)?;
    let meta = file.metadata().map_err(error)?;
    if !meta.is_file() {
        let kind = if meta.file_type().is_fifo() {
            "a FIFO"
        } else if meta.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        return Err(refuse(format!("not a regular file ({kind})")));
    }
    let mut text = String::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(error)?;
    if text.len() as u64 > MAX_PEM_BYTES {
        return Err(refuse(format!(
            "larger than {MAX_PEM_BYTES} bytes: not a PEM file"
        )));
    }
    Ok(text)
}

/// How the daemon authenticates to ZooKeeper and protects what it creates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZkSecurity {
    /// Digest credentials; `None`: unauthenticated, nodes open to all.
    pub credentials: Option<Credentials>,
    /// TLS to every server; `None`: plain TCP.
    pub tls: Option<TlsFiles>,
}

impl ZkSecurity {
    /// The ACL of every node the daemon creates.
    pub fn acl(&self) -> Vec<Acl> {
        match &self.credentials {
            None => vec![Acl::new(Permission::ALL, AuthId::anyone())],
            Some(c) => vec![
                Acl::new(Permission::ALL, AuthId::new("digest", &c.digest_id())),
                Acl::new(Permission::READ, AuthId::anyone()),
            ],
        }
    }

    /// The ACL of a missing parent of the election path, created on the
    /// way (`/election` for `/election/<release>`). Such a node is shared:
    /// the chart's default layout puts every release under `/election`.
    /// With credentials everyone may read it and create a child of their
    /// own (world READ|CREATE), so a release with other credentials, or
    /// none, can still create its election path next to ours; nobody but
    /// the super identity may delete a child (DELETE), write it, or change
    /// its ACL (ADMIN). CREATE there gives no right on our election path:
    /// ZooKeeper checks each node's own ACL. Without credentials, open to
    /// all like every other node.
    pub fn parent_acl(&self) -> Vec<Acl> {
        match &self.credentials {
            None => vec![Acl::new(Permission::ALL, AuthId::anyone())],
            Some(_) => vec![Acl::new(
                Permission::READ | Permission::CREATE,
                AuthId::anyone(),
            )],
        }
    }

    /// Adds credentials and TLS to a connector.
    pub fn apply(&self, mut connector: Connector) -> Result<Connector, AccessError> {
        if let Some(c) = &self.credentials {
            connector =
                connector.with_auth("digest", format!("{}:{}", c.user, c.password).as_bytes());
        }
        if let Some(tls) = &self.tls {
            connector = connector.with_tls(tls.options()?);
        }
        Ok(connector)
    }
}

/// Whether an ACL lets unauthenticated clients do more than read: a node
/// created open by an older version, which the daemon restricts when it
/// has credentials (and may: world ALL includes ADMIN).
pub fn is_open_to_world(acl: &[Acl]) -> bool {
    acl.iter().any(|a| {
        a.scheme() == "world"
            && a.id() == "anyone"
            && (a.permission() | Permission::READ) != Permission::READ
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_files_are_read_only_when_small_and_regular() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").unwrap();
        std::os::unix::fs::symlink(&pem, dir.path().join("link.pem")).unwrap();
        assert!(
            read_pem(&dir.path().join("link.pem")).is_ok(),
            "Secrets are symlinks"
        );
        let fifo = dir.path().join("fifo.pem");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = read_pem(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file (a FIFO)"), "{err}");
        let big = dir.path().join("big.pem");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_PEM_BYTES + 1)
            .unwrap();
        let err = read_pem(&big).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }

    #[test]
    fn digest_ids_match_zookeeper() {
        // What ZooKeeper 3.8's own tool prints: `java -cp zookeeper.jar
        // org.apache.zookeeper.server.auth.DigestAuthenticationProvider super:secret`.
        assert_eq!(
            digest_id("super", "secret"),
            "super:lK75jTNcA+U9vtVEw5vB51mj/w4="
        );
    }

    #[test]
    fn credentials_are_parsed_and_never_shown() {
        let c = Credentials::parse("election:s3cr:et\n").unwrap();
        assert_eq!(c.user(), "election");
        assert_eq!(c.password, "s3cr:et");
        assert!(!format!("{c:?}").contains("s3cr"));
        for bad in ["", "nopassword", ":pw", "user:", "a:b\nc"] {
            let err = Credentials::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("user:password") || err.contains("one line"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_world_readable_credentials_file_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "u:p\n").unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Credentials::from_file(file.path()).unwrap_err();
        assert!(
            matches!(err, AccessError::Exposed { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("other users"), "{err}");
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o440)).unwrap();
        assert_eq!(Credentials::from_file(file.path()).unwrap().user(), "u");
    }

    #[test]
    fn with_credentials_nodes_are_ours_and_world_readable() {
        let open = ZkSecurity::default().acl();
        assert!(is_open_to_world(&open));
        let secured = ZkSecurity {
            credentials: Some(Credentials::parse("u:p").unwrap()),
            tls: None,
        }
        .acl();
        assert!(!is_open_to_world(&secured));
        assert_eq!(secured[0].scheme(), "digest");
        assert_eq!(secured[0].id(), digest_id("u", "p"));
        assert_eq!(secured[0].permission(), Permission::ALL);
        assert_eq!(secured[1].permission(), Permission::READ);
        let parent = ZkSecurity {
            credentials: Some(Credentials::parse("u:p").unwrap()),
            tls: None,
        }
        .parent_acl();
        assert_eq!(parent.len(), 1);
        assert_eq!(
            parent[0].permission(),
            Permission::READ | Permission::CREATE
        );
        assert!(is_open_to_world(&parent), "others may create children");
        assert_eq!(ZkSecurity::default().parent_acl(), open);
        let none = [Acl::new(Permission::NONE, AuthId::anyone())];
        assert!(!is_open_to_world(&none));
        let write = [Acl::new(Permission::WRITE, AuthId::anyone())];
        assert!(is_open_to_world(&write));
    }
}
