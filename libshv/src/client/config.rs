//! What a client connects with: the URL, login, timeouts and frame size, from a URL or
//! a command line.

use std::time::Duration;

use crate::codec::DEFAULT_MAX_FRAME;
use crate::login::{Credentials, LoginParams};
use crate::url::RpcUrl;
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub url: RpcUrl,
    pub login: LoginParams,
    /// Timeout of `call`.
    pub timeout: Duration,
    /// Send `.app:ping` when nothing was sent for this long.
    pub heartbeat: Option<Duration>,
    pub max_frame: usize,
}

impl ClientConfig {
    /// Credentials and device options taken from the URL; SHA1 login unless `shapass`
    /// is absent and the caller asks otherwise.
    pub fn from_url(url: RpcUrl) -> Self {
        let credentials = if let Some(t) = &url.token {
            Credentials::Token(t.clone())
        } else if let Some(h) = &url.shapass {
            Credentials::Sha1(h.clone())
        } else if let Some(p) = &url.password {
            Credentials::Plain(p.clone())
        } else if let Ok(p) = std::env::var("SHV_PASSWORD") {
            Credentials::Plain(p)
        } else {
            Credentials::None
        };
        let login = LoginParams {
            user: url.user.clone(),
            credentials,
            use_sha1: true,
            device_id: url.device_id.clone(),
            mount_point: url.mount_point.clone(),
            idle_timeout: None,
            user_agent: Some(format!("libshv-rs/{}", env!("CARGO_PKG_VERSION"))),
            broker: false,
        };
        ClientConfig {
            url,
            login,
            timeout: Duration::from_secs(10),
            heartbeat: Some(Duration::from_secs(60)),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// A command line's connection options that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CommandLineError {
    #[error(transparent)]
    Url(#[from] crate::url::UrlError),
    #[error("cannot read {0}: {1}")]
    PasswordFile(String, std::io::Error),
}

impl ClientConfig {
    /// What every command-line tool does with its URL, `--password-file` and `--plain`.
    pub fn from_command_line(
        url: &str,
        password_file: Option<&std::path::Path>,
        plain: bool,
    ) -> Result<Self, CommandLineError> {
        let mut config = ClientConfig::from_url(RpcUrl::parse(url)?);
        if let Some(f) = password_file {
            config
                .password_from_file(f)
                .map_err(|e| CommandLineError::PasswordFile(f.display().to_string(), e))?;
        }
        config.login.use_sha1 = !plain;
        Ok(config)
    }

    /// Takes the password from the first line of a file (`--password-file`), so that it
    /// need not sit on a command line.
    pub fn password_from_file(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        let text = std::fs::read_to_string(path)?;
        self.login.credentials = Credentials::Plain(text.lines().next().unwrap_or("").to_string());
        Ok(())
    }
}
