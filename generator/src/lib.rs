//! flipbit-generator: reads the cluster (a live API server or a folder of manifests), lets
//! `flipbit-core` decide, and commits the result to the state repo.

pub mod allocator;
pub mod cli;
pub mod convert;
pub mod cycle;
pub mod history;
pub mod live;
pub mod manifests;
pub mod offline;
pub mod render_cache;
pub mod report;
pub mod validate;
