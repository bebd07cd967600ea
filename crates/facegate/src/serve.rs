//! `facegate serve`.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use facegate_core::service::{BulkRunner, BULK_STOP_GRACE};
use facegate_core::StaleTemplates;
use facegate_server::config::{SANDBOX_TENANT, SANDBOX_TOKEN};
use facegate_server::AppState;

use crate::config::{Config, EngineArgs, FileConfig, Flags, IndexArgs, ServerArgs, ServiceArgs, StoreArgs};
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
    index: IndexArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(args: ServeArgs, file: &FileConfig) -> anyhow::Result<()> {
    let flags = Flags {
        server: Some(&args.server),
        engine: Some(&args.engine),
        service: Some(&args.service),
        index: Some(&args.index),
        store: Some(&args.store),
    };
    let config = Config::resolve(file, flags)?;
    config.validate_for_serving()?;
    let (service, backend) = build_service(&config, config.engine.serve_intra_op_threads())?;
    let stale = service.check_stale_templates().context("counting the templates of other models")?;
    check_stale_templates(&stale, &service.model_info().model_id, config.server.allow_stale_templates)?;
    crate::audit_log::open_in(&config.store.data_dir)?;
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
        reopen_audit_log_on_hangup()?;
        let listen = config.server.listen;
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let metrics_listener = match config.server.metrics_listen {
            Some(at) => {
                let metrics = tokio::net::TcpListener::bind(at).await.with_context(|| format!("binding {at}"))?;
                tracing::info!(metrics_listen = %metrics.local_addr()?, "serving Prometheus metrics at /metrics");
                Some(metrics)
            }
            None => None,
        };
        let bucket = crate::runtime::bulk_source(&config)?;
        tracing::info!(source = bucket.location(), "bulk registration source");
        bucket.move_renamed_areas(&renamed_tenants);
        // Jobs left unfinished by an earlier run resume here, and other nodes' writes to a shared
        // gallery reach this node's index; both stop after the requests do.
        let bulk = BulkRunner { source: std::sync::Arc::new(bucket), config: config.bulk_config() };
        let background = service.start_background_work(Some(bulk));
        let state = AppState::new(service, config.settings());
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
            served = facegate_server::serve(listener, metrics_listener, state, shutdown) => served.context("serving")?,
            () = deadline => tracing::warn!(
                grace_secs = grace.as_secs(),
                "in-flight requests did not finish within the shutdown grace period; stopping anyway"
            ),
        }
        background.stop(BULK_STOP_GRACE).await;
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

/// Refuses to serve while a subject has no template of the active model (`model_id`): search
/// would silently stop finding them. `allow` (`--allow-stale-templates`) starts anyway, loudly.
/// Samples left with an old template by a reindex that could not re-embed them, of subjects
/// found by their other samples, are only warned about.
fn check_stale_templates(stale: &StaleTemplates, model_id: &str, allow: bool) -> anyhow::Result<()> {
    if stale.is_empty() {
        return Ok(());
    }
    let models = stale.models.join(", ");
    if stale.unsearchable_subjects() == 0 {
        tracing::warn!(
            samples = stale.stale_samples(),
            %models,
            "face samples keep templates of another model, which search leaves out; their subjects are found by \
             their other samples. `facegate reindex` tries them again"
        );
        return Ok(());
    }
    let lost: Vec<String> = stale
        .tenants
        .iter()
        .filter(|t| t.unsearchable_subjects > 0)
        .map(|t| {
            let s = if t.unsearchable_subjects == 1 { "" } else { "s" };
            format!("{} subject{s} of tenant {:?}", t.unsearchable_subjects, t.tenant_name)
        })
        .collect();
    let message = format!(
        "the store holds templates made by {models}, and the active model pack is {model_id}: search would not \
         find {} (they have no template of {model_id}). Run `facegate reindex` with this server stopped (the same \
         data directory or database, key and model pack) to re-embed their stored face images with the active \
         pack, or start with the pack that made them (--pack NAME; `facegate packs` lists the installed ones), or \
         with --allow-stale-templates to serve without them",
        lost.join(", ")
    );
    if !allow {
        anyhow::bail!(message);
    }
    tracing::warn!(
        unsearchable_subjects = stale.unsearchable_subjects(),
        stale_samples = stale.stale_samples(),
        "STARTING WITH SUBJECTS SEARCH CANNOT FIND (--allow-stale-templates): {message}"
    );
    Ok(())
}

/// Reopens `audit.log` on each SIGHUP, the logrotate convention (`docs/security.md`). Registered
/// before the listener is bound, so from the first request on a SIGHUP never ends the process
/// (its default action) but only starts a new file.
fn reopen_audit_log_on_hangup() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match crate::audit_log::reopen() {
                    Ok(Some(path)) => tracing::info!(path = %path.display(), "SIGHUP: reopened the audit log"),
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: could not reopen the audit log; \
                        still writing to the file open before"),
                }
            }
        });
    }
    Ok(())
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
