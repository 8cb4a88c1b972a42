use clap::Parser;

/// shvrexec: not implemented yet (remote shell issue).
#[derive(Parser)]
#[command(version)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _ = Args::parse();
    anyhow::bail!("shvrexec is not implemented yet")
}
