//! What every SHV command-line tool of this workspace shares, so that they behave
//! alike: the logging flags (`-v`/`-q`/`--log`), one-line error reports with hints and
//! exit codes, and named hosts from the client config file.

pub mod hosts;
pub mod log;
#[cfg(feature = "tunnel")]
pub mod login;
pub mod report;

pub use hosts::resolve_url;
pub use log::LogArgs;
#[cfg(feature = "tunnel")]
pub use login::{launch_error, LaunchError, LoginArgs};
pub use report::{exit_code, fail, report, Failure, UsageError};

/// The client config for a tool's URL argument (a URL or a named host, see [`hosts`]),
/// `--password-file` (which wins over the host's) and `--plain`.
pub fn client_config(
    url_or_host: &str,
    password_file: Option<&std::path::Path>,
    plain: bool,
) -> anyhow::Result<libshv::ClientConfig> {
    let target = resolve_url(url_or_host)?;
    let file = password_file.or(target.password_file.as_deref());
    Ok(libshv::ClientConfig::from_command_line(
        &target.url,
        file,
        plain,
    )?)
}
