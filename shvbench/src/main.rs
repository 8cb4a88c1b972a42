use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = shvbench::Cli::parse();
    let filter = cli
        .verbose
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter)?)
        .with_writer(std::io::stderr)
        .init();
    shvbench::run(cli).await
}
