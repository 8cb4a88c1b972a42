use clap::Parser;

/// shvagent: not implemented yet (remote shell issue).
#[derive(Parser)]
#[command(version)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _ = Args::parse();
    anyhow::bail!("shvagent is not implemented yet")
}
