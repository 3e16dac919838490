#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod args;
mod backend;
mod circuits;
mod codec;
mod conn;
mod control;
mod limiter;
mod offsets;
mod queue;
mod replies;
mod scripts;
#[cfg(feature = "test-server")]
mod test_server;
mod workers;

pub use backend::{RedisBackend, RedisBackendBuilder, CLUSTER_SHARDS, IDLE_SHARD, MAX_SHARDS};
pub use deadpool_redis;
pub use deadpool_redis::redis;
pub use limiter::{RedisBackOff, RedisLimiter};
#[cfg(feature = "test-server")]
pub use test_server::{reserve_port, RedisCluster, RedisServer, RedisServerBuilder, ReservedPort};
pub use wds_core;
