//! `dreamstream admin ...`: accounts and credits from the terminal, against
//! the same database as `serve` (the SQLite file in `--data-dir`, or
//! `DATABASE_URL`).

use clap::Subcommand;

use crate::accounts::Accounts;
use crate::settings::Settings;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create an account with a password; prints the new user's id.
    CreateUser {
        name: String,
        #[arg(long, env = "DREAMSTREAM_NEW_PASSWORD", hide_env_values = true)]
        password: String,
        /// Make the account an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Make an account an administrator.
    MakeAdmin { name: String },
    /// Add credits to an account (a negative N takes some back, never below zero).
    GrantCredits {
        name: String,
        #[arg(allow_negative_numbers = true)]
        n: i64,
    },
    /// Show an account: id, balance, admin flag.
    ShowUser {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Make a named API key for `/v1/*` (`Authorization: Bearer`); prints
    /// the key, once (only its hash is stored).
    CreateApiKey {
        name: String,
        /// What the key is for (unique among the user's live keys).
        #[arg(long = "name", value_name = "NAME")]
        key_name: String,
    },
    /// Revoke one of a user's API keys (by name or id): refused from now on.
    RevokeApiKey {
        name: String,
        #[arg(
            long = "name",
            value_name = "NAME",
            conflicts_with = "id",
            required_unless_present = "id"
        )]
        key_name: Option<String>,
        #[arg(long)]
        id: Option<i64>,
    },
    /// The dashboard's numbers: streams, distinct IPs, peaks, users, credits,
    /// payments (from the database, and Redis with `REDIS_URL`).
    Stats {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: AdminCommand, settings: Settings) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let db = crate::db::connect(&settings.db()).await?;
        if let AdminCommand::Stats { json } = cmd {
            return print_stats(&settings, db, json).await;
        }
        let accounts = Accounts::new(db, settings.credits.signup_bonus);
        match cmd {
            AdminCommand::CreateUser {
                name,
                password,
                admin,
            } => {
                let user = accounts.register(&name, &password).await?;
                if admin {
                    accounts.set_admin(user.username.as_str(), true).await?;
                }
                println!("{}", user.id);
            }
            AdminCommand::MakeAdmin { name } => {
                let user = accounts.set_admin(&name, true).await?;
                println!("{} is an administrator", user.username);
            }
            AdminCommand::GrantCredits { name, n } => {
                let user = accounts.get(&name).await?;
                let balance = accounts.grant(user.id, n).await?;
                println!("{}: {n:+} credits, balance {balance}", user.username);
            }
            AdminCommand::ShowUser { name, json } => {
                let user = accounts.get(&name).await?;
                let balance = accounts.balance(user.id).await?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": user.id,
                            "username": user.username,
                            "balance": balance,
                            "is_admin": user.is_admin,
                        })
                    );
                } else {
                    println!(
                        "{} (id {}): {balance} credits{}",
                        user.username,
                        user.id,
                        if user.is_admin { ", administrator" } else { "" }
                    );
                }
            }
            AdminCommand::CreateApiKey { name, key_name } => {
                let user = accounts.get(&name).await?;
                let (_, key) =
                    crate::accounts::keys::create_api_key(accounts.db(), user.id, &key_name)
                        .await?;
                println!("{key}");
            }
            AdminCommand::RevokeApiKey { name, key_name, id } => {
                use crate::accounts::keys::{KeyRef, revoke_api_key};
                let user = accounts.get(&name).await?;
                let which = match (&key_name, id) {
                    (_, Some(id)) => KeyRef::Id(id),
                    (Some(n), None) => KeyRef::Name(n),
                    (None, None) => anyhow::bail!("give --name or --id"),
                };
                let row = revoke_api_key(accounts.db(), user.id, which).await?;
                println!(
                    "{}: API key {:?} (id {}, {}…) is revoked",
                    user.username, row.name, row.id, row.prefix
                );
            }
            AdminCommand::Stats { .. } => unreachable!("handled above"),
        }
        anyhow::Ok(())
    })
}

/// `admin stats`: the numbers the dashboard shows, read from storage (a
/// running server's live streams are the open rows; its workers are not known
/// here).
async fn print_stats(
    settings: &Settings,
    db: sea_orm::DatabaseConnection,
    json: bool,
) -> anyhow::Result<()> {
    use crate::stats::summary::Overview;
    use crate::web::admin::fmt;

    let redis = match &settings.redis_url {
        Some(url) => Some(crate::limits::connect_redis(url).await?),
        None => None,
    };
    let stats =
        crate::stats::Stats::open(&settings.audience, &settings.data_dir, db.clone(), redis)
            .await?;
    let o = Overview::collect(&db, &stats, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&o)?);
        return Ok(());
    }
    let a = &o.audience;
    let now = o.generated_at_ms;
    let peak_when = a
        .peak
        .at_ms
        .map(|t| format!(" ({})", fmt::when(t)))
        .unwrap_or_default();
    println!(
        "DreamStream at {} (audience from {})",
        fmt::when(now),
        a.backend
    );
    println!();
    println!("  live streams         {}", fmt::int(o.live.len() as u64));
    if a.backend == "redis" {
        println!("  watching now         {}", fmt::int(a.viewers_now));
    } else {
        println!("  watching now         (only the running server knows: see /admin)");
    }
    println!(
        "  most at once         {}{peak_when}",
        fmt::int(a.peak.viewers)
    );
    println!(
        "  streams created      {} today · {} in 7 days · {} all time",
        fmt::int(o.streams_created.today),
        fmt::int(o.streams_created.week),
        fmt::int(o.streams_created.all)
    );
    println!(
        "  distinct IPs         {} today · {} in 7 days · {} all time",
        fmt::int(a.unique_ips_today),
        fmt::int(a.unique_ips_7d),
        fmt::int(a.unique_ips_all)
    );
    println!(
        "  tune-ins             {} today · {} all time",
        fmt::int(a.tune_ins_today),
        fmt::int(a.tune_ins_all)
    );
    println!(
        "  users                {} ({} admins) · {} credits held · {} burned today, {} all time",
        fmt::int(o.users.total),
        fmt::int(o.users.admins),
        fmt::int(o.users.credits_outstanding),
        fmt::int(o.users.credits_burned_today),
        fmt::int(o.users.credits_burned_all)
    );
    if !o.live.is_empty() {
        println!();
        println!("Live streams");
        for s in &o.live {
            println!(
                "  {:<24} since {} · {} watching · peak {} · {} distinct IPs · {} credits",
                s.username,
                fmt::when(s.started_at_ms),
                fmt::int(s.viewers),
                fmt::int(s.peak.viewers),
                fmt::int(s.unique_ips),
                fmt::int(s.credits_burned)
            );
        }
    }
    if !o.top_streams.is_empty() {
        println!();
        println!("Most watched");
        for s in &o.top_streams {
            println!(
                "  {:<24} peak {} at {} · {} distinct IPs",
                s.username,
                fmt::int(s.peak_viewers),
                s.peak_at
                    .map(|t| fmt::when(t.timestamp_millis()))
                    .unwrap_or_else(|| "?".into()),
                fmt::int(s.unique_viewers)
            );
        }
    }
    if !o.payments.is_empty() {
        println!();
        println!("Recent payments");
        for p in &o.payments {
            println!(
                "  {:<24} {} credits · {} · {} · {}",
                p.username,
                fmt::int(p.credits),
                fmt::money(p.amount_cents, &p.currency),
                p.status,
                fmt::when(p.created_at_ms)
            );
        }
    }
    Ok(())
}
