//! The grammar of exactly what the generator writes under `lb/<host>/`, next to the renderers:
//! the applier checks every file it stages against it and refuses a commit holding anything else,
//! because the state repo is untrusted input to an LB host whose load balancer runs as root (a
//! hand-pushed `log_format` + `access_log`, `include`, or a `listen` on the host's own port 22
//! passes `nginx -t`). `core/tests/grammar.rs` proves that whatever the renderers can produce
//! passes.
