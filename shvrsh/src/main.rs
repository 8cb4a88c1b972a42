use clap::Parser;

/// shvrsh: not implemented yet (remote shell issue).
#[derive(Parser)]
#[command(version)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _ = Args::parse();
    anyhow::bail!("shvrsh is not implemented yet")
}
