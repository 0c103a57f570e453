//! The post-apply probe (docs/design.md §5.6): after a reload, this host connects to its own
//! listeners.
