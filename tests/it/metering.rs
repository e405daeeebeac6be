//! Metering by the streamer's time (issue 16.1, 15.5): a credit buys a period
//! of the streamer's time, so going live again inside it costs nothing — after
//! a Stop, a crashed tab at balance 0, a kill -9 or a SIGTERM of the control
//! node — and the rows a killed node left open are closed (`crashed`) when it
//! starts again. On SQLite and PostgreSQL.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dreamstream::accounts::Accounts;
use dreamstream::client::ApiSession;
use dreamstream::db::entities::{credit_ledger, stream};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::cluster::{Proc, free_port};
use crate::helpers::*;

/// The ledger's stream charges of `user_id`, oldest first.
async fn stream_charges(db: &sea_orm::DatabaseConnection, user_id: i64) -> Vec<String> {
    credit_ledger::Entity::find()
        .filter(credit_ledger::Column::UserId.eq(user_id))
        .filter(credit_ledger::Column::Reason.eq("stream"))
        .order_by_asc(credit_ledger::Column::Id)
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.reference)
        .collect()
}

/// Every stream row, oldest first.
async fn stream_rows(db: &sea_orm::DatabaseConnection) -> Vec<stream::Model> {
    stream::Entity::find()
        .order_by_asc(stream::Column::Id)
        .all(db)
        .await
        .unwrap()
}

/// Opens a broadcaster and waits for its `hello` (the stream is live).
async fn go_live(url: &str) -> Conn {
    let mut b = connect(url).await;
    assert!(
        next_json(&mut b, "hello", Duration::from_secs(10))
            .await
            .is_some(),
        "live"
    );
    b
}

on_both_databases!(
    stop_and_go_live_again_inside_a_paid_period_charges_once,
    |db| async move {
        let app = spawn_app_on(db, |_| {}).await;
        let key = app.streamer("mia", 1).await;
        let mut s = ApiSession::open(&app.address).await.unwrap();
        s.register_or_login("mia", "streamer-password")
            .await
            .unwrap();
        let (_, me) = s.get("/api/me").await.unwrap();
        assert_eq!(me["paid_seconds_left"], 0, "{me}");
        let url = format!("{}/ws/broadcast/mia?key={key}", app.ws);
        for attempt in 0..3 {
            let mut b = go_live(&url).await;
            // The streamer is told the time left at once.
            let credits = next_json(&mut b, "credits", Duration::from_secs(5))
                .await
                .expect("a credits event");
            assert_eq!(credits["balance"], 0, "{credits}");
            let left = credits["seconds_left"].as_u64().unwrap();
            assert!((590..=600).contains(&left), "attempt {attempt}: {credits}");
            let (code, _) = s
                .post("/api/streams/mia/stop", &serde_json::json!({}))
                .await
                .unwrap();
            assert!(code.is_success(), "{code}");
            let deadline = Instant::now() + Duration::from_secs(10);
            let mia = dreamstream_actors::Username::parse("mia").unwrap();
            while app.state.control.get(&mia).await.is_some() {
                assert!(Instant::now() < deadline, "stopped");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let user = app.state.accounts.get("mia").await.unwrap();
        assert_eq!(app.state.accounts.balance(user.id).await.unwrap(), 0);
        let charges = stream_charges(&app.state.db, user.id).await;
        assert_eq!(charges.len(), 1, "{charges:?}");
        // The page learns the paid time from the server, not from the balance.
        let (_, me) = s.get("/api/me").await.unwrap();
        let left = me["paid_seconds_left"].as_u64().unwrap();
        assert!((580..=600).contains(&left), "{me}");
        // Someone with neither credit nor paid time is refused, by the server.
        let broke = app.streamer("broke", 0).await;
        let answer = raw_upgrade(&app.address, &format!("/ws/broadcast/broke?key={broke}")).await;
        assert!(answer.starts_with("HTTP/1.1 402"), "{answer}");
    }
);

/// A control node process on `dir` (and `database_url`), passthrough worker.
fn control_node(dir: &Path, port: u16, database_url: Option<&str>, run: usize) -> Proc {
    let mut cmd = Command::new(bin("dreamstream"));
    cmd.args(["serve", "--local-workers", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .env("DREAMSTREAM_WORKER__PROCESSOR", "passthrough")
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL");
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    let proc = Proc::spawn(cmd, dir.join(format!("control-{run}.log")));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the control node did not listen: {}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    proc
}

on_both_databases!(
    a_killed_or_stopped_control_node_charges_once_and_closes_what_it_left_open,
    |db| async move {
        let dir = tempfile::tempdir().unwrap();
        let pg = match db {
            Db::Postgres => Some(PgDatabase::create().await),
            Db::Sqlite => None,
        };
        let database_url = pg.as_ref().map(|p| p.url.clone());
        // The account, made on the database the node will use.
        let mut settings = test_settings(dir.path());
        settings.database_url = database_url.clone().map(Into::into);
        let database = dreamstream::db::connect(&settings.db()).await.unwrap();
        let accounts = Accounts::new(database.clone(), 0);
        let user = accounts.register("kim", "streamer-password").await.unwrap();
        accounts.grant(user.id, 1).await.unwrap();
        let key = dreamstream::accounts::keys::rotate(&database, user.id)
            .await
            .unwrap();

        let port = free_port();
        let url = format!("ws://127.0.0.1:{port}/ws/broadcast/kim?key={key}");
        let mut node = control_node(dir.path(), port, database_url.as_deref(), 1);
        let _b = go_live(&url).await;
        assert_eq!(
            accounts.balance(user.id).await.unwrap(),
            0,
            "the start paid"
        );

        // kill -9 mid-stream; the broadcaster reconnects to the new process.
        node.kill9();
        drop(_b);
        let mut node = control_node(dir.path(), port, database_url.as_deref(), 2);
        let log = node.log_text();
        let _b = go_live(&url).await;
        let rows = stream_rows(&database).await;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].end_reason.as_deref(), Some("crashed"), "{log}");
        assert!(rows[0].ended_at.is_some());
        assert!(rows[1].ended_at.is_none(), "the new stream is live");

        // SIGTERM (a deploy): the stream ends `shutdown`, and comes back free.
        node.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < deadline, "exited");
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(_b);
        node.kill9();
        let _node = control_node(dir.path(), port, database_url.as_deref(), 3);
        let _b = go_live(&url).await;
        let rows = stream_rows(&database).await;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].end_reason.as_deref(), Some("shutdown"));
        assert!(rows[2].ended_at.is_none());
        // Exactly one credit for all three.
        assert_eq!(stream_charges(&database, user.id).await.len(), 1);
        assert_eq!(accounts.balance(user.id).await.unwrap(), 0);
        assert_eq!(
            rows.iter().map(|r| r.credits_charged).sum::<i64>(),
            1,
            "{rows:?}"
        );
    }
);
