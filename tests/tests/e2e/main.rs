//! Every end-to-end test, in one test binary with a module per suite (the file it was before:
//! `cargo test -p flipbit-tests -- live::` runs what `--test live` ran). One binary links kube,
//! hickory and libgit2 once instead of once per suite.
//!
//! Its tests share one process and run on parallel threads, so none may rely on being alone:
//! each suite has its own address block (127.<block>.x.x), DNS ports and fixed ports (see the
//! suites' docs), the seed example's fixed addresses are taken in turn (`demo::start` holds a
//! lock), Samba DCs one at a time (a lock in `samba`), and a test that must change process-wide
//! state runs itself in a process of its own (`flipbit_tests::alone`). A fixture stops what it
//! started when dropped, on a panic too (`flipbit_tests::process`).

mod ad_dns;
mod addresses;
mod apiserver;
mod apply_nginx;
mod bench_smoke;
mod bundle;
mod dns_apply;
mod dns_client;
mod example;
mod features;
mod generator_cli;
mod git_transport;
mod gitops;
mod golden_tools;
mod haproxy;
mod haproxy_events;
mod hardening;
mod image;
mod layouts;
mod leaks;
mod live;
mod package;
mod render_cache;
mod scale_smoke;
mod shared_listeners;
mod signing;
mod status_writes;
