//! `facegate serve`.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use facegate_server::config::{SANDBOX_TENANT, SANDBOX_TOKEN};
use facegate_server::AppState;
use facegate_store::BucketSource;

use crate::config::{Config, EngineArgs, FileConfig, Flags, ServerArgs, ServiceArgs, StoreArgs};
use crate::runtime::build_service;

/// `serve` takes the flags of every section.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: ServeArgs, file: &FileConfig) -> anyhow::Result<()> {
    let flags = Flags {
        server: Some(&args.server),
        engine: Some(&args.engine),
        service: Some(&args.service),
        store: Some(&args.store),
    };
    let config = Config::resolve(file, flags)?;
    config.validate_for_serving()?;
    let (service, backend) = build_service(&config, config.engine.serve_intra_op_threads())?;
    crate::audit_log::open(&config.store.data_dir.join("audit.log"))?;
    if config.store.encryption_key_file.is_none() {
        tracing::warn!("templates and face images are stored unencrypted; see --encryption-key-file");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if config.server.sandbox {
        runtime
            .block_on(service.ensure_tenant_with_token(SANDBOX_TENANT, SANDBOX_TOKEN))
            .context("creating the sandbox tenant")?;
        tracing::warn!(
            tenant = SANDBOX_TENANT,
            "sandbox tenant enabled with the miiCloud document's public example token; for local trials only"
        );
    }
    let renamed_tenants = backend.renamed_tenants();
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let served = runtime.block_on(async move {
        let listen = config.server.listen;
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let bucket = bulk_source(&config)?;
        tracing::info!(source = bucket.location(), "bulk registration source");
        bucket.move_renamed_areas(&renamed_tenants);
        let state = AppState::new(service, config.settings(), Some(std::sync::Arc::new(bucket)));
        tracing::info!(%addr, "facegate listening");
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown_signal().await;
            let _ = signalled_tx.send(());
        };
        let deadline = async move {
            if signalled_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            served = facegate_server::serve(listener, state, shutdown) => served.context("serving")?,
            () = deadline => tracing::warn!(
                grace_secs = grace.as_secs(),
                "in-flight requests did not finish within the shutdown grace period; stopping anyway"
            ),
        }
        anyhow::Ok(())
    });
    // Past the deadline, work still running (a long inference, the bulk runner) is abandoned
    // rather than waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served?;
    backend.checkpoint();
    tracing::info!("shut down");
    Ok(())
}

fn bulk_source(config: &Config) -> anyhow::Result<BucketSource> {
    let source = match config.server.bulk_source.as_deref() {
        Some(url) if url.starts_with("s3://") => BucketSource::s3(url, config.server.bulk_s3_endpoint.as_deref()),
        Some(dir) => BucketSource::local(std::path::Path::new(dir)),
        None => BucketSource::local(&config.store.data_dir.join("bucket")),
    };
    source.context("setting up the bulk registration source")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
