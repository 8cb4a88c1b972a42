//! One logging convention for every binary: `-v`/`-vv`/`-vvv` and `-q`/`-qq` step
//! from the tool's default level, `--log FILTER` (or `RUST_LOG`) gives a full filter,
//! logs go to stderr, in colour only on a terminal (and never with `NO_COLOR`).

use std::io::IsTerminal;

use clap::ArgAction;

/// The levels `-v` and `-q` step through.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// More log output on stderr, one level per -v (-v info, -vv debug, -vvv trace)
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
    /// Less log output, one level per -q (-q errors only, -qq nothing)
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Log filter in tracing's syntax, e.g. `debug` or `info,libshv=trace`; overrides
    /// -v/-q and the RUST_LOG environment variable
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
}

impl LogArgs {
    /// The filter these flags give for a tool whose default level is `default`
    /// (`"info"` for the daemons, `"warn"` for the interactive tools).
    pub fn filter(&self, default: &str) -> String {
        if let Some(f) = &self.log {
            return f.clone();
        }
        if self.verbose == 0 && self.quiet == 0 {
            if let Ok(f) = std::env::var("RUST_LOG") {
                if !f.trim().is_empty() {
                    return f;
                }
            }
        }
        let base = LEVELS.iter().position(|l| *l == default).unwrap_or(2);
        let i = (base + usize::from(self.verbose))
            .saturating_sub(usize::from(self.quiet))
            .min(LEVELS.len() - 1);
        LEVELS[i].to_string()
    }

    /// Installs the global subscriber; an invalid filter is an error naming it.
    pub fn init(&self, default: &str) -> anyhow::Result<()> {
        let filter = self.filter(default);
        let env = tracing_subscriber::EnvFilter::try_new(&filter)
            .map_err(|e| anyhow::anyhow!("invalid log filter '{filter}': {e}"))?;
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(colour)
            .with_env_filter(env)
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: u8, q: u8, log: Option<&str>) -> LogArgs {
        LogArgs {
            verbose: v,
            quiet: q,
            log: log.map(str::to_string),
        }
    }

    #[test]
    fn counts_step_from_the_default() {
        assert_eq!(args(1, 0, None).filter("warn"), "info");
        assert_eq!(args(2, 0, None).filter("warn"), "debug");
        assert_eq!(args(9, 0, None).filter("info"), "trace");
        assert_eq!(args(0, 1, None).filter("warn"), "error");
        assert_eq!(args(0, 9, None).filter("info"), "off");
        assert_eq!(
            args(3, 0, Some("libshv=debug")).filter("info"),
            "libshv=debug"
        );
    }
}
