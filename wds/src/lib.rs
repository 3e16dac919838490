#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use wds_core::*;

/// The in-memory backend ([`wds_memory`]).
#[cfg(feature = "memory")]
pub mod memory {
    pub use wds_memory::*;
}

/// The durable embedded backend ([`wds_sqlite`]).
#[cfg(feature = "sqlite")]
pub mod sqlite {
    pub use wds_sqlite::*;
}

/// The Redis backend and shared rate limiter ([`wds_redis`]).
#[cfg(feature = "redis")]
pub mod redis {
    pub use wds_redis::*;
}

/// The webhook sink ([`wds_http`]).
#[cfg(feature = "http")]
pub mod http {
    pub use wds_http::*;
}
