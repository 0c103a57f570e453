//! Flipbit's decisions, free of I/O: which Services are exposed, which nodes carry them, which
//! addresses they hold, and the exact text of every generated file. The generator and the applier
//! wire I/O around this crate; its tests need no cluster, no Git and no nginx.

pub mod allocate;
pub mod annotations;
pub mod config;
pub mod decide;
pub mod dns;
pub mod endpoints;
pub mod engine;
pub mod exposure;
pub mod flavor;
pub mod fleet;
pub mod format;
pub mod grammar;
pub mod holds;
pub mod host_addresses;
pub mod ledger;
pub mod message;
pub mod model;
pub mod names;
pub mod nodes;
pub mod pool;
pub mod problem;
pub mod render;
pub mod repo_paths;
pub mod rollout;
mod settled;
pub mod sink;
pub mod text;
pub mod timing;
pub mod traffic;
pub mod validate;
