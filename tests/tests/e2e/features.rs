//! What a Service asks for, served on every flavour and layout with real traffic: source ranges,
//! session affinity, timeouts and UDP sessions (`traffic`), tenant pools (`pools`), and
//! direct-to-pod backends (`pods`). A module per feature.

mod pods;
mod pools;
mod traffic;
