//! flipbit-applier: brings this LB host's nginx or HAProxy to the state repo's head, safely.

pub mod apply;
pub mod balancer;
pub mod cli;
pub mod dns;
pub mod dns_step;
pub mod fragment;
pub mod haproxy;
pub mod logtail;
pub mod nginx;
pub mod release;
pub mod signatures;
