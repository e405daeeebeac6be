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
}

pub fn run(cmd: AdminCommand, settings: Settings) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let db = crate::db::connect(&settings).await?;
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
                let balance = accounts.grant(user.id, n, "admin_grant").await?;
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
        }
        anyhow::Ok(())
    })
}
