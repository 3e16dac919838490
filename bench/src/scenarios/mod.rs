//! The end-to-end scenarios, one file each, in the order they run: each
//! adds its rows to the [`Table`](crate::table::Table) of the run.

mod big;
mod ceiling;
mod cost;
mod e2e;
mod ratelimit;
mod scaling;
mod ttfd;

pub(crate) use ceiling::{bare_loop_process, Client, LoopSpec};
