//! Users: registration (password or OAuth), login, admin flag, credits.

use dreamstream_actors::Username;
use dreamstream_actors::ids::UsernameError;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, SqlErr, TransactionTrait,
};

use super::ledger::{Entry, Ledger, Reason, Reference, Written};
use super::password;
use crate::db::entities::{oauth_identity, user};

/// A user as the rest of the program sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub id: i64,
    pub username: Username,
    pub is_admin: bool,
    pub has_password: bool,
    /// The version a session must carry to count (see [`Accounts::end_sessions`]).
    #[serde(skip)]
    pub session_version: i64,
}

impl TryFrom<user::Model> for User {
    type Error = AccountError;
    fn try_from(m: user::Model) -> Result<Self, AccountError> {
        Ok(User {
            id: m.id,
            username: Username::parse(&m.username)?,
            is_admin: m.is_admin,
            has_password: m.password_hash.is_some(),
            session_version: m.session_version,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    InvalidUsername(#[from] UsernameError),
    #[error("the username {0} is taken")]
    UsernameTaken(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("wrong username or password")]
    BadCredentials,
    #[error("no user named {0}")]
    NoSuchUser(String),
    #[error("storage failed: {0}")]
    Db(#[from] DbErr),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The accounts service (cheap to clone).
#[derive(Clone)]
pub struct Accounts {
    db: DatabaseConnection,
    pub ledger: Ledger,
    signup_bonus: i64,
}

impl Accounts {
    pub fn new(db: DatabaseConnection, signup_bonus: i64) -> Self {
        Self {
            ledger: Ledger::new(db.clone()),
            db,
            signup_bonus,
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// A new account with a password.
    pub async fn register(&self, raw_name: &str, pass: &str) -> Result<User, AccountError> {
        let username = Username::parse(raw_name)?;
        password::check_new(pass).map_err(AccountError::WeakPassword)?;
        let hash = password::hash(pass.to_string()).await?;
        self.insert(username, Some(hash), None).await
    }

    /// A new account for an OAuth identity (first OAuth login).
    pub async fn register_oauth(
        &self,
        raw_name: &str,
        provider: &str,
        subject: &str,
        email: Option<String>,
    ) -> Result<User, AccountError> {
        let username = Username::parse(raw_name)?;
        self.insert(username, None, Some((provider, subject, email)))
            .await
    }

    async fn insert(
        &self,
        username: Username,
        password_hash: Option<String>,
        identity: Option<(&str, &str, Option<String>)>,
    ) -> Result<User, AccountError> {
        let txn = self.db.begin().await?;
        let email = identity.as_ref().and_then(|i| i.2.clone());
        let has_password = password_hash.is_some();
        // A plain INSERT (no RETURNING row to decode): the new id is all we need.
        let inserted = user::Entity::insert(user::ActiveModel {
            username: Set(username.to_string()),
            email: Set(email),
            password_hash: Set(password_hash),
            is_admin: Set(false),
            created_at: Set(chrono::Utc::now()),
            ..Default::default()
        })
        .exec(&txn)
        .await;
        let id = match inserted {
            Ok(r) => r.last_insert_id,
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                return Err(AccountError::UsernameTaken(username.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        if let Some((provider, subject, _)) = identity {
            oauth_identity::ActiveModel {
                user_id: Set(id),
                provider: Set(provider.to_string()),
                subject: Set(subject.to_string()),
                created_at: Set(chrono::Utc::now()),
                ..Default::default()
            }
            .insert(&txn)
            .await?;
        }
        txn.commit().await?;
        if self.signup_bonus > 0 {
            self.ledger
                .write(Entry {
                    user_id: id,
                    delta: self.signup_bonus,
                    reason: Reason::SignupBonus,
                    reference: Reference::Signup(id),
                })
                .await?;
        }
        tracing::info!(user = %username, id, "account created");
        Ok(User {
            id,
            username,
            is_admin: false,
            has_password,
            session_version: 0,
        })
    }

    /// The user with this name and password.
    pub async fn login(&self, raw_name: &str, pass: &str) -> Result<User, AccountError> {
        let row = match Username::parse(raw_name) {
            Ok(name) => self.find_row(&name).await?,
            Err(_) => None,
        };
        let hash = row.as_ref().and_then(|r| r.password_hash.clone());
        if password::verify(pass.to_string(), hash).await {
            row.ok_or(AccountError::BadCredentials)?.try_into()
        } else {
            Err(AccountError::BadCredentials)
        }
    }

    async fn find_row(&self, name: &Username) -> Result<Option<user::Model>, DbErr> {
        user::Entity::find()
            .filter(user::Column::Username.eq(name.as_str()))
            .one(&self.db)
            .await
    }

    pub async fn find(&self, name: &Username) -> Result<Option<User>, AccountError> {
        self.find_row(name).await?.map(User::try_from).transpose()
    }

    /// The user, or `NoSuchUser` (CLI and admin paths).
    pub async fn get(&self, raw_name: &str) -> Result<User, AccountError> {
        let name = Username::parse(raw_name)?;
        self.find(&name)
            .await?
            .ok_or_else(|| AccountError::NoSuchUser(name.to_string()))
    }

    pub async fn by_id(&self, id: i64) -> Result<Option<User>, AccountError> {
        user::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(User::try_from)
            .transpose()
    }

    /// The user linked to an OAuth identity.
    pub async fn by_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<User>, AccountError> {
        let Some(identity) = oauth_identity::Entity::find()
            .filter(oauth_identity::Column::Provider.eq(provider))
            .filter(oauth_identity::Column::Subject.eq(subject))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        self.by_id(identity.user_id).await
    }

    pub async fn set_admin(&self, raw_name: &str, admin: bool) -> Result<User, AccountError> {
        let u = self.get(raw_name).await?;
        user::Entity::update_many()
            .col_expr(
                user::Column::IsAdmin,
                sea_orm::sea_query::Expr::value(admin),
            )
            .filter(user::Column::Id.eq(u.id))
            .exec(&self.db)
            .await?;
        Ok(User {
            is_admin: admin,
            ..u
        })
    }

    /// Ends every session of the user made so far (logout, "log out
    /// everywhere", a password change): bumps the version sessions must
    /// carry. Returns the new version.
    pub async fn end_sessions(&self, user_id: i64) -> Result<i64, AccountError> {
        use sea_orm::sea_query::{Expr, ExprTrait};
        user::Entity::update_many()
            .col_expr(
                user::Column::SessionVersion,
                Expr::col(user::Column::SessionVersion).add(1),
            )
            .filter(user::Column::Id.eq(user_id))
            .exec(&self.db)
            .await?;
        let row = user::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| AccountError::NoSuchUser(user_id.to_string()))?;
        Ok(row.session_version)
    }

    /// Replaces the user's password after checking the current one (an
    /// account without a password, OAuth only, sets its first), and ends
    /// every session made so far. Returns the user with the new version.
    pub async fn change_password(
        &self,
        user_id: i64,
        current: &str,
        new: &str,
    ) -> Result<User, AccountError> {
        let row = user::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| AccountError::NoSuchUser(user_id.to_string()))?;
        if row.password_hash.is_some()
            && !password::verify(current.to_string(), row.password_hash.clone()).await
        {
            return Err(AccountError::BadCredentials);
        }
        password::check_new(new).map_err(AccountError::WeakPassword)?;
        let hash = password::hash(new.to_string()).await?;
        user::Entity::update_many()
            .col_expr(
                user::Column::PasswordHash,
                sea_orm::sea_query::Expr::value(hash),
            )
            .filter(user::Column::Id.eq(user_id))
            .exec(&self.db)
            .await?;
        let version = self.end_sessions(user_id).await?;
        let mut user = User::try_from(row)?;
        user.has_password = true;
        user.session_version = version;
        Ok(user)
    }

    pub async fn balance(&self, user_id: i64) -> Result<i64, AccountError> {
        Ok(self.ledger.balance(user_id).await?)
    }

    /// Adds (or with a negative `n`, removes) credits by hand (an
    /// administrator's grant); returns the new balance.
    pub async fn grant(&self, user_id: i64, n: i64) -> Result<i64, AccountError> {
        match self
            .ledger
            .write(Entry {
                user_id,
                delta: n,
                reason: Reason::AdminGrant,
                reference: Reference::Grant {
                    user: user_id,
                    nonce: uuid_like(),
                },
            })
            .await?
        {
            Written::Appended(b) | Written::Duplicate(b) => Ok(b),
            Written::Insufficient(b) => Err(AccountError::Internal(anyhow::anyhow!(
                "the balance is {b}: taking {} would make it negative",
                -n
            ))),
        }
    }
}

/// A random reference suffix for hand-made grants (each is its own row).
fn uuid_like() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}
