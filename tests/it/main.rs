//! Integration tests: one binary, real sockets on 127.0.0.1, in-process upstreams.
#![allow(unreachable_pub, missing_docs)]

mod cache;
mod credentials;
mod demo;
mod jwt;
mod lifecycle;
mod limits;
mod no_secrets;
mod oauth2;
mod observability;
mod policy;
mod proxy;
mod ratelimit;
mod reload;
mod resilience;
mod streaming;
mod support;
mod tls_listener;
mod traces;
mod translate;
mod upstream_tls;

pub(crate) use lifecycle::{signal as lifecycle_signal, wait_exit as lifecycle_wait};
