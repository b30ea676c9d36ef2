//! The daemon's sources' health as last recorded, for `vigil status` without a daemon.

use super::StoreError;
use crate::sources::SourceState;

pub trait SourceStore: Send + Sync {
    /// Replaces the recorded state of the daemon's sources.
    fn put_source_states(&self, states: &[SourceState]) -> Result<(), StoreError>;
    fn source_states(&self) -> Result<Vec<SourceState>, StoreError>;
}
