//! flipbit-applier: brings this LB host's nginx or HAProxy to the state repo's head, safely.

pub mod apply;
pub mod balancer;
pub mod binds;
pub mod cli;
pub mod dns;
pub mod dns_step;
pub mod failpoint;
pub mod fleet;
pub mod fragment;
pub mod haproxy;
pub mod journal;
pub mod lb_step;
pub mod logtail;
pub mod metrics;
pub mod nginx;
pub mod nginx_log;
pub mod outcome;
pub mod procnet;
pub mod quote;
pub mod release;
pub mod rollout;
pub mod selfcheck;
pub mod signatures;
pub mod stage;
pub mod status;
pub mod verify;
