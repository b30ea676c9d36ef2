//! `on_both_stores!`: one behaviour suite, run against SQLite and PostgreSQL alike. (Its own
//! file: `tests/orchestrator_support` includes `store.rs` again, and an exported macro must be
//! defined once per test crate.)

/// Runs a test body on both stores: `on_both_stores!(#[tokio::test] async fn name(b) { .. })`
/// makes `name::sqlite` and `name::postgres`, each calling the body with its `Backend`.
#[macro_export]
macro_rules! on_both_stores {
    (#[test] fn $name:ident($b:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body($b: $crate::common::store::Backend) $body
            #[test]
            fn sqlite() {
                body($crate::common::store::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                body($crate::common::store::Backend::Postgres)
            }
        }
    };
    (#[$attr:meta] async fn $name:ident($b:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn body($b: $crate::common::store::Backend) $body
            #[$attr]
            async fn sqlite() {
                body($crate::common::store::Backend::Sqlite).await
            }
            #[$attr]
            async fn postgres() {
                body($crate::common::store::Backend::Postgres).await
            }
        }
    };
}
