//! Sessions that end on the server: each user has a session version, copied
//! into their session cookie at login and compared on every authenticated
//! request. Logging out, "log out everywhere" and a password change bump it,
//! so every cookie issued before stops working, with either session store.

use sea_orm_migration::prelude::*;

use crate::m20261122_000002_accounts::Users;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UsersSessions {
    SessionVersion,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(
                        ColumnDef::new(UsersSessions::SessionVersion)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(UsersSessions::SessionVersion)
                    .to_owned(),
            )
            .await
    }
}
