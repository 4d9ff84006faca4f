//! The ZooKeeper authentication and TLS flags, shared by `run` and
//! `status`, and their value parsers: a credential never appears in
//! an error message, a PEM path is checked at parse time (its content is
//! read again at every connect). The settings they resolve to are
//! [`ZkSecurity`].

use std::path::PathBuf;

use clap::Args;

use crate::flags::InvalidValue;
use crate::zk::security::{AccessError, Credentials, TlsFiles, ZkSecurity};

/// ZooKeeper authentication and TLS, shared by `run` and `status`.
#[derive(Debug, Clone, Default, Args)]
pub struct ZkSecurityArgs {
    /// File holding ZooKeeper digest credentials `user:password` (one
    /// line; must not be readable by other users). With credentials, every
    /// node the daemon creates is writable only by this user (and
    /// ZooKeeper's super user) and readable by everyone. Read at start.
    #[arg(long, env = "ELECTION_ZK_AUTH_FILE", value_parser = parse_auth_file, conflicts_with = "zk_auth", value_name = "PATH")]
    pub zk_auth_file: Option<Credentials>,

    /// ZooKeeper digest credentials `user:password`, for environments that
    /// inject secrets as variables (prefer --zk-auth-file: a flag is
    /// visible in `ps`). Never logged.
    #[arg(long, env = "ELECTION_ZK_AUTH", hide_env_values = true, value_parser = CredentialsParser, value_name = "USER:PASSWORD")]
    pub zk_auth: Option<Credentials>,

    /// PEM file of the CA that signs the ZooKeeper servers' certificates;
    /// turns TLS on for every server (the plain port is not used). Server
    /// host names in --zk-servers must match their certificates.
    #[arg(long, env = "ELECTION_ZK_TLS_CA_FILE", value_parser = parse_pem_file, value_name = "PATH")]
    pub zk_tls_ca_file: Option<PathBuf>,

    /// PEM client certificate, for servers that require one (`ssl.clientAuth=need`).
    #[arg(long, env = "ELECTION_ZK_TLS_CERT_FILE", value_parser = parse_pem_file, requires_all = ["zk_tls_key_file", "zk_tls_ca_file"], value_name = "PATH")]
    pub zk_tls_cert_file: Option<PathBuf>,

    /// PEM private key of --zk-tls-cert-file.
    #[arg(long, env = "ELECTION_ZK_TLS_KEY_FILE", value_parser = parse_pem_file, requires = "zk_tls_cert_file", value_name = "PATH")]
    pub zk_tls_key_file: Option<PathBuf>,
}

impl ZkSecurityArgs {
    /// The resolved settings.
    pub fn security(&self) -> ZkSecurity {
        ZkSecurity {
            credentials: self.zk_auth_file.clone().or_else(|| self.zk_auth.clone()),
            tls: self.zk_tls_ca_file.as_ref().map(|ca| TlsFiles {
                ca: ca.clone(),
                identity: self
                    .zk_tls_cert_file
                    .clone()
                    .zip(self.zk_tls_key_file.clone()),
            }),
        }
    }
}

/// Credentials read from a file (see [`Credentials::from_file`]).
pub fn parse_auth_file(s: &str) -> Result<Credentials, AccessError> {
    Credentials::from_file(std::path::Path::new(s))
}

/// Parses inline credentials; unlike clap's usual message, its error
/// never repeats the value (it may be a password).
#[derive(Debug, Clone, Copy)]
pub struct CredentialsParser;

impl clap::builder::TypedValueParser for CredentialsParser {
    type Value = Credentials;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Credentials, clap::Error> {
        let name = arg.map(|a| a.to_string()).unwrap_or_default();
        value
            .to_str()
            .ok_or(AccessError::Malformed("be UTF-8"))
            .and_then(Credentials::parse)
            .map_err(|e| {
                clap::Error::raw(
                    clap::error::ErrorKind::ValueValidation,
                    format!("invalid value for '{name}': {e}\n"),
                )
                .with_cmd(cmd)
            })
    }
}

/// A readable file holding at least one PEM block. The content is read
/// again at every connect (rotation), this only catches a wrong path early.
pub fn parse_pem_file(s: &str) -> Result<PathBuf, InvalidValue> {
    let text = crate::zk::security::read_pem(std::path::Path::new(s)).map_err(|e| match e {
        AccessError::Read { source, .. } => InvalidValue::Unreadable {
            path: s.to_owned(),
            source,
        },
        other => InvalidValue::Unreadable {
            path: s.to_owned(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    if !text.contains("-----BEGIN ") {
        return Err(InvalidValue::NoPem(s.to_owned()));
    }
    Ok(PathBuf::from(s))
}
