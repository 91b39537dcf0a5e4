//! `skiff`: the one binary. Wiring only — each subcommand parses flags, validates them into a
//! config that cannot hold an invalid state, and starts the components from the library crates.
//!
//! * `server`: the store, the API server and the controllers.
//! * `image`: the node's image store (pull, import, ls, rm).
//! * `shim`: the per-pod container shim, re-executed by the agent.

mod cluster_dns;
mod config;
mod image_cli;
mod node;

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::config::{Cli, Command, ServerConfig};

fn main() -> std::process::ExitCode {
    // The shim forks and must do so before any thread exists: dispatch it before anything else.
    let mut argv = std::env::args();
    if argv.nth(1).as_deref() == Some("shim") {
        return runtime::container::shim_main(argv);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Shim { args } => runtime::container::shim_main(args),
        Command::Agent(flags) => {
            init_tracing(&flags.log_level);
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("skiff agent: cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match rt.block_on(run_agent(flags)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("skiff agent: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Image(cmd) => match image_cli::run(cmd) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("skiff image: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Server(flags) => {
            let config = match ServerConfig::from_flags(flags) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("skiff server: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            init_tracing(&config.log_level);
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(config.worker_threads).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("skiff server: cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match rt.block_on(run_server(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("skiff server: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        // hickory logs every DNS request at info.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},hickory_server=warn,hickory_proto=warn")));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn run_server(config: ServerConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", config.data_dir.display()))?;
    let shutdown = CancellationToken::new();
    let store = store::open(&config.backend, &config.store)
        .await
        .with_context(|| format!("cannot open the datastore ({})", config.backend_description()))?;
    let compactor = store::spawn_compactor(store.clone(), &config.store, shutdown.clone());

    let server = apiserver::ApiServer::bind_with_services(
        apiserver::ApiServerConfig { listen: config.listen, watch_cache_events: 10_000 },
        config.services.clone(),
        store.clone(),
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("cannot listen on --listen {}", config.listen))?;
    let addr = server.local_addr()?;
    let metrics = server.state().metrics.clone();
    metrics.register(scheduler::register_metrics);
    let kubeconfig = config.data_dir.join("kubeconfig.yaml");
    write_kubeconfig(&kubeconfig, &format!("http://{addr}"))?;
    tracing::info!(
        address = %addr,
        datastore = %config.backend_description(),
        kubeconfig = %kubeconfig.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "skiff server is listening; use: export KUBECONFIG={}",
        kubeconfig.display()
    );

    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    // The controllers talk to this API server over loopback like any other client.
    let client = kube::Client::try_from(kube::Config::new(
        format!("http://{addr}").parse().context("the API server address is not a URL")?,
    ))
    .context("cannot build the controllers' API client")?;
    let client_for_node = client.clone();
    let controllers_ctx = controllers::Context {
        client,
        config: config.controllers.clone(),
        shutdown: shutdown.clone(),
    };
    let scheduler = tokio::spawn(run_scheduler(controllers_ctx.clone()));
    let controllers = tokio::spawn(controllers::run_all(controllers_ctx));
    // Cluster DNS on the built-in node's address, behind kube-system/kube-dns.
    let dns = config.node.clone().and_then(|flags| {
        let service_ip = flags.cluster_dns.split(',').next()?.trim().parse::<std::net::IpAddr>().ok()?;
        let node_name = flags.node_name.clone().unwrap_or_else(|| crate::config::hostname().to_lowercase());
        let node_ip = flags.node_ip.unwrap_or_else(node::detect_node_ip);
        let (client, shutdown, metrics) = (client_for_node.clone(), shutdown.clone(), metrics.clone());
        let domain = flags.cluster_domain.trim_end_matches('.').to_string();
        Some(tokio::spawn(async move {
            if let Err(e) = cluster_dns::run(client, node_name, node_ip, service_ip, domain, &metrics, shutdown).await {
                tracing::error!("{e:#}");
            }
        }))
    });
    // The Ingress controller on the built-in node's address.
    let ingress = config.node.clone().zip(config.ingress_ports).map(|(flags, (http, https))| {
        let node_ip = flags.node_ip.unwrap_or_else(node::detect_node_ip);
        let (client, shutdown, metrics) = (client_for_node.clone(), shutdown.clone(), metrics.clone());
        tokio::spawn(async move {
            let config = ingress::IngressConfig {
                http_listen: std::net::SocketAddr::new(node_ip, http),
                https_listen: Some(std::net::SocketAddr::new(node_ip, https)),
                status_addresses: vec![node_ip],
                ..Default::default()
            };
            match ingress::IngressServer::bind(client, config).await {
                Ok(server) => {
                    metrics.register(|r| server.metrics().register(r));
                    tracing::info!(http = %server.http_addr(), https = ?server.https_addr(), "ingress controller is serving");
                    if let Err(e) = server.serve(shutdown).await {
                        tracing::error!(error = %e, "the ingress controller failed");
                    }
                }
                Err(e) => tracing::error!(error = %e, "the ingress controller could not start (--ingress-http-port / --ingress-https-port, or --disable-ingress)"),
            }
        })
    });
    let node = config.node.clone().map(|flags| {
        let (client, shutdown, data_dir) = (client_for_node.clone(), shutdown.clone(), config.data_dir.clone());
        tokio::spawn(async move {
            if let Err(e) = node::run(flags, &data_dir, client, shutdown.clone()).await {
                tracing::error!("{e:#}");
                // A server whose built-in node cannot run is still a working control plane.
            }
        })
    });
    let result = server.serve().await;
    shutdown.cancel();
    if let Some(node) = node {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), node).await;
    }
    if let Some(ingress) = ingress {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ingress).await;
    }
    if let Some(dns) = dns {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), dns).await;
    }
    signals.abort();
    // Controllers release their leader Lease on the way out; the API server is gone by now, so
    // give them a moment and no more.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let _ = tokio::join!(controllers, scheduler);
    })
    .await;
    let _ = compactor.await;
    drop(store);
    tracing::info!("skiff server stopped");
    result.context("the API server failed")
}

/// The scheduler, under its own leader Lease (upstream's kube-scheduler lease), restarted
/// after a pause if it fails while leading.
async fn run_scheduler(ctx: controllers::Context) {
    let work_ctx = ctx.clone();
    let result = controllers::leader::run_with_leadership(ctx, scheduler::LEADER_LEASE, move |leading| {
        let ctx = work_ctx.clone();
        async move {
            let mut pause = std::time::Duration::from_secs(1);
            while !leading.is_cancelled() {
                match scheduler::run(ctx.clone(), leading.child_token()).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "the scheduler failed; restarting");
                        tokio::select! {
                            _ = leading.cancelled() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(std::time::Duration::from_secs(30));
                    }
                }
            }
        }
    })
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "leader election failed; the scheduler is not running");
    }
}

async fn run_agent(flags: config::AgentFlags) -> anyhow::Result<()> {
    let url: http_url::Url = flags.server.parse().map_err(|e| anyhow::anyhow!("--server {:?}: {e}", flags.server))?;
    let client = kube::Client::try_from(kube::Config::new(url.0)).context("cannot build the API client")?;
    std::fs::create_dir_all(&flags.data_dir).with_context(|| format!("cannot create --data-dir {}", flags.data_dir.display()))?;
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    let result = node::run(flags.node, &flags.data_dir, client, shutdown).await;
    signals.abort();
    result
}

/// `--server` URLs: plain HTTP until TLS lands.
mod http_url {
    pub struct Url(pub http::Uri);
    impl std::str::FromStr for Url {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            if !s.starts_with("http://") {
                return Err("use http://HOST:PORT (the server speaks plain HTTP on loopback for now)".into());
            }
            s.parse::<http::Uri>().map(Url).map_err(|e| e.to_string())
        }
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::warn!("cannot install signal handlers; stop the server with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}

/// The admin kubeconfig. Plain HTTP on loopback only (TLS and authentication come later).
fn write_kubeconfig(path: &Path, server: &str) -> anyhow::Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: admin\n  user: {{}}\npreferences: {{}}\n"
    );
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
