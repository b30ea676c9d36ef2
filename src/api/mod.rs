//! The HTTP API: `/healthz`, `/metrics`.
