//! The host's PostgreSQL schema: one migrator for the outbox's tables and the
//! store's, so one `_sqlx_migrations` table versions the whole database that
//! replicas share. The outbox and the store each run it on their first use
//! that reaches the database (idempotent; sqlx's advisory lock lets one
//! replica at a time apply a migration).

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// Every migration in `migrations/postgres/`, embedded. Listed by hand rather
/// than with `sqlx::migrate!`: that macro compiles sqlx's PostgreSQL driver
/// (rustls and ring among it) a second time, for the compiler, in every first
/// build. Version, description and SQL are what `migrate!` takes from each
/// file, so the checksums that earlier versions recorded in
/// `_sqlx_migrations` match; `tests::the_embedded_migrations_are_the_folder`
/// keeps this list and the folder the same.
pub(crate) fn migrator() -> Migrator {
    let migration = |version, description: &'static str, sql: &'static str| {
        Migration::new(
            version,
            description.into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(
            1,
            "outbox",
            include_str!("../migrations/postgres/0001_outbox.sql"),
        ),
        migration(
            2,
            "store",
            include_str!("../migrations/postgres/0002_store.sql"),
        ),
        migration(
            3,
            "trace context",
            include_str!("../migrations/postgres/0003_trace_context.sql"),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The list above against what `sqlx::migrate!` would embed: the folder,
    /// read the way sqlx reads it. A new migration file fails this until it is
    /// listed. (An edited file changes both sides alike: editing a migration a
    /// database already ran is refused by sqlx when it runs, as before.)
    #[tokio::test]
    async fn the_embedded_migrations_are_the_folder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
        let folder = Migrator::new(dir)
            .await
            .expect("reading the migrations folder");
        let summary = |m: &Migrator| {
            m.iter()
                .map(|m| {
                    let checksum = m.checksum.to_vec();
                    (
                        m.version,
                        m.description.to_string(),
                        m.migration_type,
                        checksum,
                        m.no_tx,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(summary(&migrator()), summary(&folder));
        assert!(
            folder.iter().count() > 0,
            "no migrations read from the folder"
        );
    }
}
