//! How the server reaches NATS: the seed servers, the credentials and TLS, parsed from the
//! configuration and checked at start. A file that is missing, unreadable or not what it should
//! be is an error at start that names the file and the problem, never a retry loop; a secret
//! (password, token, nkey seed, creds) never appears in a log line, an error, `/metrics` or
//! `--help` (`Debug` prints `<redacted>`).

use std::fmt;
use std::path::{Path, PathBuf};

use async_nats::ConnectOptions;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A secret string: kept for the connection, shown to nobody.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the server authenticates to NATS: at most one way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NatsAuth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
    /// A file holding an nkey seed (`SU…`).
    NkeySeedFile(PathBuf),
    /// A creds file: a user JWT and its nkey seed (operator mode).
    CredsFile(PathBuf),
}

/// TLS to NATS. Without `ca`, the system's roots verify the servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsTls {
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for servers that verify clients (mTLS).
    pub client: Option<(PathBuf, PathBuf)>,
    /// Refuse a server that does not offer TLS (also implied by `tls://` seeds).
    pub required: bool,
}

/// Everything needed to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSettings {
    /// The seed servers, without credentials; the client also learns the cluster's other servers
    /// from them.
    pub servers: Vec<String>,
    pub auth: NatsAuth,
    pub tls: NatsTls,
}

/// Why the NATS settings cannot be used. Never holds a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("CELLOS_NATS_URL: no server given")]
    NoServer,
    #[error("CELLOS_NATS_URL: server {index} is not a NATS URL (nats://host:port or tls://host:port)")]
    BadUrl { index: usize },
    #[error("CELLOS_NATS_URL: the servers carry different credentials; give them once")]
    MixedCredentials,
    #[error("NATS credentials given more than one way ({0}); choose one")]
    TwoWays(String),
    #[error("--nats-tls-cert and --nats-tls-key go together")]
    CertWithoutKey,
    #[error("{what} {path}: {problem}")]
    File {
        what: &'static str,
        path: String,
        problem: String,
    },
}

/// Credentials carried by a URL: `user:password@` or `token@`.
fn url_credentials(url: &url::Url) -> Option<NatsAuth> {
    let user = percent_decode(url.username());
    match url.password() {
        Some(password) => Some(NatsAuth::UserPassword {
            user,
            password: Secret::new(percent_decode(password)),
        }),
        None if !user.is_empty() => Some(NatsAuth::Token(Secret::new(user))),
        None => None,
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl NatsSettings {
    /// Parses a comma-separated list of seeds. Credentials in the URLs are taken out of them (so
    /// that the server list can be logged) and become the authentication; they must agree.
    pub fn from_urls(urls: &str) -> Result<NatsSettings, SettingsError> {
        let mut servers = Vec::new();
        let mut auth: Option<NatsAuth> = None;
        for (index, raw) in urls.split(',').map(str::trim).enumerate() {
            if raw.is_empty() {
                continue;
            }
            let with_scheme = if raw.contains("://") {
                raw.to_owned()
            } else {
                format!("nats://{raw}")
            };
            let mut url = url::Url::parse(&with_scheme).map_err(|_| SettingsError::BadUrl { index })?;
            if !matches!(url.scheme(), "nats" | "tls") || url.host_str().is_none() {
                return Err(SettingsError::BadUrl { index });
            }
            if let Some(found) = url_credentials(&url) {
                if auth.as_ref().is_some_and(|a| *a != found) {
                    return Err(SettingsError::MixedCredentials);
                }
                auth = Some(found);
            }
            url.set_username("").map_err(|_| SettingsError::BadUrl { index })?;
            url.set_password(None).map_err(|_| SettingsError::BadUrl { index })?;
            servers.push(url.as_str().trim_end_matches('/').to_owned());
        }
        if servers.is_empty() {
            return Err(SettingsError::NoServer);
        }
        Ok(NatsSettings {
            servers,
            auth: auth.unwrap_or_default(),
            tls: NatsTls::default(),
        })
    }

    /// Adds credentials given apart from the URLs; two ways at once is an error.
    pub fn with_auth(mut self, auth: NatsAuth) -> Result<NatsSettings, SettingsError> {
        match (&self.auth, &auth) {
            (_, NatsAuth::None) => {}
            (NatsAuth::None, _) => self.auth = auth,
            (had, _) => {
                return Err(SettingsError::TwoWays(format!(
                    "{} and {}",
                    had.kind(),
                    auth.kind()
                )))
            }
        }
        Ok(self)
    }

    /// The client's options: credentials and TLS files read and checked now.
    pub fn connect_options(&self) -> Result<ConnectOptions, SettingsError> {
        let mut options = ConnectOptions::new();
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.expose().to_owned())
            }
            NatsAuth::Token(token) => options.token(token.expose().to_owned()),
            NatsAuth::NkeySeedFile(path) => {
                let seed = read_text("nkey seed file", path)?;
                let seed = seed.trim().to_owned();
                nkeys::KeyPair::from_seed(&seed).map_err(|_| file_error(
                    "nkey seed file",
                    path,
                    "does not hold an nkey seed",
                ))?;
                options.nkey(seed)
            }
            NatsAuth::CredsFile(path) => {
                let creds = read_text("creds file", path)?;
                options.credentials(&creds).map_err(|_| file_error(
                    "creds file",
                    path,
                    "is not a NATS creds file (a user JWT and an nkey seed)",
                ))?
            }
        };
        if let Some(ca) = &self.tls.ca {
            check_certificates("TLS CA file", ca)?;
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client {
            check_certificates("TLS certificate file", cert)?;
            // The key's own text is never part of the error.
            PrivateKeyDer::from_pem_file(key)
                .map_err(|_| file_error("TLS key file", key, "holds no readable PEM private key"))?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let tls_urls = self.servers.iter().any(|s| s.starts_with("tls://"));
        if self.tls.required || tls_urls {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

impl NatsAuth {
    /// What kind of credentials, for messages (never their value).
    pub fn kind(&self) -> &'static str {
        match self {
            NatsAuth::None => "none",
            NatsAuth::UserPassword { .. } => "user and password",
            NatsAuth::Token(_) => "token",
            NatsAuth::NkeySeedFile(_) => "nkey seed file",
            NatsAuth::CredsFile(_) => "creds file",
        }
    }
}

/// Checks that `path` holds at least one PEM certificate, all of them readable.
fn check_certificates(what: &'static str, path: &Path) -> Result<(), SettingsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(what, path, &e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, &e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "holds no PEM certificate"));
    }
    Ok(())
}

fn file_error(what: &'static str, path: &Path, problem: &str) -> SettingsError {
    SettingsError::File {
        what,
        path: path.display().to_string(),
        problem: problem.to_owned(),
    }
}

/// A file's text; the error says why it could not be read (never what it holds).
fn read_text(what: &'static str, path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map_err(|e| file_error(what, path, &e.to_string()))
}

#[cfg(test)]
mod tests;
