//! `qwen3-tts-server`: an OpenAI-compatible speech server over the
//! qwen3-tts runtime (see docs/server.md).
//!
//! Modules: [`config`] (flags), [`api`] (routes, request parsing, errors),
//! [`engine`] (the compute thread and its bounded queue: the one place that
//! runs the model), [`voices`] (stored voices), [`formats`] (audio
//! encodings), [`metrics`] (Prometheus), [`wyoming`] (the Wyoming front end),
//! [`ui`] (the page at `/`).

#![deny(unsafe_code)]

pub mod api;
pub mod config;
pub mod engine;
pub mod formats;
pub mod metrics;
pub mod ui;
pub mod voices;
pub mod wyoming;

use std::sync::Arc;
use std::time::Duration;

pub use config::Args;

/// Runs the server until SIGINT/SIGTERM: binds, prints
/// `listening on http://ADDR` on stderr (with `--wyoming-port`, after
/// `wyoming listening on tcp://ADDR`), loads the model on the engine
/// thread (`/health` says `loading`, then `ready`), serves; on a signal stops
/// accepting, finishes the requests in flight and returns.
pub async fn serve(args: Args) -> Result<(), String> {
    if args.list_devices {
        print!("{}", qwen3_tts::ggml::device::listing());
        return Ok(());
    }
    args.validate()?;
    let voices = voices::Voices::open(&args.voices_dir)
        .map_err(|e| format!("--voices-dir {}: {e}", args.voices_dir.display()))?;
    let addr = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let wyoming = match args.wyoming_port {
        Some(p) => Some(wyoming::bind(&args.host, p).await?),
        None => None,
    };
    let (engine, engine_thread) = engine::Engine::start(engine::EngineConfig {
        model: args.model().to_path_buf(),
        tokenizer: args.tokenizer().to_path_buf(),
        threads: args.threads.unwrap_or(0),
        max_queue: args.max_queue,
        max_batch: args.max_batch,
        max_part_chars: args.max_part_chars,
        kv_cache: args.kv_cache,
        voice_cache_bytes: args.voice_cache_mb << 20,
        device: args.resolved_device()?,
    })
    .map_err(|e| format!("cannot start the engine thread: {e}"))?;
    // Stored voices are warmed in the background once the model is loaded,
    // the quick ones (x-vector only: a prompt prefix) first.
    let mut stored = voices.list();
    stored.sort_by_key(|(_, v)| v.icl.is_some());
    for (id, v) in stored {
        engine.warm(voices::warm_request(&v), &id);
    }
    let state = Arc::new(api::AppState::new(
        engine,
        voices,
        args.api_key.clone(),
        args.max_input_chars,
        Duration::from_secs(args.request_timeout),
        metrics::install(),
    ));
    let app = if args.no_ui {
        api::router(state.clone())
    } else {
        api::router(state.clone()).merge(ui::router())
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(follow_voices(state.clone(), stop_rx.clone()));
    if let Some(w) = wyoming {
        // Printed before the HTTP line (which tells a supervisor that both are up).
        eprintln!("wyoming listening on tcp://{}", w.local_addr);
        tokio::spawn(w.serve(state.clone(), stop_rx.clone()));
    }
    eprintln!("listening on http://{local}");
    tracing::info!(
        "model {} (loading), voices in {}, batch {}, queue {}, input limit {} chars, timeout {} s{}",
        args.model().display(),
        args.voices_dir.display(),
        args.max_batch,
        args.max_queue,
        args.max_input_chars,
        args.request_timeout,
        if args.api_key.is_some() {
            ", API key required"
        } else {
            ""
        }
    );
    let engine = state.engine.clone();
    let load_failed = async move {
        loop {
            if let engine::State::Failed(_) = engine.state() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let draining = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown_signal() => drain(&draining).await,
                _ = load_failed => {},
            }
            drop(draining);
            let _ = stop_tx.send(true);
        })
        .await
        .map_err(|e| format!("server error: {e}"))?;
    let failed = match state.engine.state() {
        engine::State::Failed(e) => Some(e),
        _ => None,
    };
    tracing::info!("stopped accepting; finishing the engine's queue");
    drop(state);
    // The engine thread ends when its queue is drained and every handle is gone.
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    match failed {
        Some(e) => Err(format!("cannot load the model: {e}")),
        None => {
            tracing::info!("bye");
            Ok(())
        }
    }
}

/// How often the voices directory is rescanned for other servers' changes.
const VOICE_RESCAN: Duration = Duration::from_millis(500);

/// Keeps the stored voices in step with the directory (other servers share
/// it): new and replaced voices are warmed, removed ones forgotten.
async fn follow_voices(state: Arc<api::AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(VOICE_RESCAN) => {}
            _ = stop.changed() => return,
        }
        let s = state.clone();
        let Ok(changes) = tokio::task::spawn_blocking(move || s.voices.refresh()).await else {
            continue;
        };
        for change in changes {
            match change {
                voices::Change::Added(id, v) => {
                    tracing::info!("voice {id} appeared in the voices directory");
                    state.engine.warm(voices::warm_request(&v), &id);
                }
                voices::Change::Replaced(id, old, v) => {
                    tracing::info!("voice {id} was replaced in the voices directory");
                    state.engine.forget(&old);
                    state.engine.warm(voices::warm_request(&v), &id);
                }
                voices::Change::Removed(id, old) => {
                    tracing::info!("voice {id} was removed from the voices directory");
                    state.engine.forget(&old);
                }
            }
        }
    }
}

/// After SIGTERM: `/health` answers 503 `draining` and new work a
/// retryable 503 (a balancer moves it to another replica) until the
/// requests in flight are done; a second signal stops waiting.
async fn drain(state: &api::AppState) {
    state.start_draining();
    let busy = || state.engine.active() + state.engine.queue_depth();
    tracing::info!("draining: {} request(s) in flight", busy());
    let wait = async {
        // Two idle looks in a row: a request between its parsing and the
        // engine's queue is not missed.
        let mut idle = 0;
        while idle < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            idle = if busy() == 0 { idle + 1 } else { 0 };
        }
    };
    tokio::select! {
        _ = wait => tracing::info!("drained"),
        _ = shutdown_signal() => tracing::info!("second signal: not waiting for the requests in flight"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("signal received: shutting down");
}
