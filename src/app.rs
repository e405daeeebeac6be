//! Building and running the control node: `Application::build(settings)` binds
//! (port 0 in tests), connects and migrates the database, starts the actors and
//! the in-process workers, and serves HTTP.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context;
use gpu_node::processor::Processor;
use gpu_node::{NeuralStyle, NeuralStyleConfig};

use crate::accounts::Accounts;
use crate::accounts::DbBilling;
use crate::accounts::oauth::ProviderConfig;
use crate::control::ControlPlane;
use crate::db::{self, DbStreamLog};
use crate::limits::{MemoryLimiter, RateLimiter, RedisLimiter};
use crate::settings::{LocalProcessor, Settings};
use crate::telemetry;
use crate::web::session::SessionConfig;
use crate::web::{AppState, routes};
use dreamstream_actors::store::Stores;

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    pub state: web::Data<AppState>,
}

/// Loads the in-process workers' processors (off the async runtime: loading and
/// warming up the networks takes a moment).
async fn local_processors(settings: &Settings) -> anyhow::Result<Vec<Arc<dyn Processor>>> {
    let (n, threads) = (settings.local_workers, settings.worker.threads);
    if settings.worker.processor == LocalProcessor::Passthrough {
        return Ok((0..n)
            .map(|_| Arc::new(gpu_node::passthrough::Passthrough) as Arc<dyn Processor>)
            .collect());
    }
    tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|_| {
                let p = NeuralStyle::load(&NeuralStyleConfig {
                    threads,
                    ..Default::default()
                })?;
                p.warm_up()?;
                Ok(Arc::new(p) as Arc<dyn Processor>)
            })
            .collect::<Result<Vec<_>, gpu_node::ProcessError>>()
    })
    .await
    .context("the worker loader panicked")?
    .context("failed to load the neural-style processor")
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        telemetry::init_logs(settings.log_format);
        let db = db::connect(&settings.db()).await?;
        let accounts = Accounts::new(db.clone(), settings.credits.signup_bonus);
        let redis = match &settings.redis_url {
            Some(url) => Some(crate::limits::connect_redis(url).await?),
            None => None,
        };
        // Distinct viewers and peaks; a stream's final numbers are kept with its row.
        let stats = crate::stats::Stats::start(
            &settings.audience,
            &settings.data_dir,
            db.clone(),
            redis.clone(),
        )
        .await?;
        // What this node left open when it last died is over (`crashed`).
        let stream_log = DbStreamLog::new(db.clone(), crate::db::node_id(&settings.data_dir)?);
        let closed = stream_log
            .close_unfinished()
            .await
            .context("failed to close the streams left open by the last run")?;
        if closed > 0 {
            tracing::warn!(
                streams = closed,
                "closed streams left open by the last run (crashed)"
            );
        }
        let store = Stores {
            log: Arc::new(crate::stats::store::AudienceStore::new(
                Arc::new(stream_log),
                stats.clone(),
                db.clone(),
            )),
            billing: Arc::new(DbBilling::new(accounts.clone())),
            requests: Arc::new(crate::community::DbStyleRequests::new(db.clone())),
        };
        let limiter: Arc<dyn RateLimiter> = match &redis {
            Some(conn) => Arc::new(RedisLimiter::new(conn.clone(), &settings.redis_prefix)),
            None => Arc::new(MemoryLimiter::default()),
        };
        let sessions = SessionConfig::load(&settings).await?;
        let oauth = settings
            .oauth
            .iter()
            .map(|(name, p)| ProviderConfig::resolve(name, p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let trusted_proxies = settings.trusted_nets()?;
        let payments = crate::payments::Payments::new(settings.payments())?;
        let processors = local_processors(&settings).await?;
        let control = Arc::new(ControlPlane::start(settings.control(), store, processors).await?);
        let media = crate::media::Media::start(&settings.media)?;
        stats.watch(&control);
        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("failed to listen on {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        tracing::info!(address = %listener.local_addr()?, local_workers = settings.local_workers, "serving");
        let state = web::Data::new(AppState {
            config: crate::web::WebConfig::from_settings(&settings)?,
            control,
            db,
            accounts,
            limiter,
            redis,
            trusted_proxies,
            oauth,
            payments,
            audience: stats.clone(),
            metrics: telemetry::metrics(),
            broadcasters: Default::default(),
            viewers: Default::default(),
            tabs: Default::default(),
            media,
            v1: Default::default(),
        });
        let data = state.clone();
        let stats = web::Data::from(stats);
        let send_buffer = state.config.stream.socket_send_buffer;
        let connections = Arc::new(crate::web::conn_limits::ConnCounter::default());
        let per_ip = state.config.http.max_connections_per_ip;
        let proxies = state.trusted_proxies.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(stats.clone())
                .wrap(sessions.middleware())
                .wrap(middleware::NormalizePath::trim())
                .wrap(middleware::from_fn(telemetry::observe_http))
                .wrap(middleware::from_fn(crate::web::conn_limits::body_deadline))
                .wrap(middleware::from_fn(crate::web::conn_limits::connection_cap))
                .wrap(middleware::from_fn(crate::web::headers::security_headers))
                .configure(routes)
        })
        .on_connect(move |conn, data| {
            // A fixed, small send buffer per connection (see stream.socket_send_buffer).
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                // Counted per client address while open (web/conn_limits.rs).
                if let Ok(peer) = tcp.peer_addr()
                    && !proxies.iter().any(|n| n.contains(&peer.ip()))
                {
                    data.insert(connections.open(peer.ip(), per_ip));
                }
                let sock = socket2::SockRef::from(tcp);
                let _ = sock.set_send_buffer_size(send_buffer);
                let _ = sock.set_tcp_nodelay(true);
                // Our own descriptor of the socket, for a viewer's direct
                // writes (web/ws/direct.rs); closed with the connection.
                match std::os::fd::AsFd::as_fd(tcp).try_clone_to_owned() {
                    Ok(fd) => {
                        data.insert(crate::web::ws::direct::ConnSocket::new(fd));
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot duplicate a connection's socket"),
                }
            }
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(5)
        .run();
        Ok(Self {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM, then drains: streams are told they end,
    /// in-flight jobs finish, connections close. Returns an error (the
    /// process exits non-zero, systemd restarts it) if the control plane
    /// fails beyond repair.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let state = self.state.clone();
        let stopper = handle.clone();
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: ending streams and draining workers");
            state.control.shutdown(Duration::from_secs(10)).await;
            stopper.stop(true).await;
        });
        let control = self.state.control.clone();
        tokio::select! {
            served = self.server => served.context("the HTTP server failed")?,
            why = control.failed() => {
                tracing::error!(why, "the control plane failed; stopping");
                handle.stop(false).await;
                anyhow::bail!("the control plane failed: {why}");
            }
        }
        Ok(())
    }

    /// Serves in the background (tests).
    pub fn spawn(self) -> web::Data<AppState> {
        let state = self.state.clone();
        actix_web::rt::spawn(self.server);
        state
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
