//! Interlock: an API gateway and mesh proxy for the traffic between security tools.
//!
//! Tools point their API base URLs at Interlock; it routes each call to the vendor API, injects the
//! vendor credential the tool never holds, and answers every refusal with `application/problem+json`.
//!
//! A tour of the modules, in the order a request meets them:
//!
//! - [`listener`]: sockets, connection caps, the HTTP/1 framing sniffer, draining.
//! - [`proxy`]: the request path ([`proxy::handle`]): limits, path normalisation, routing, header
//!   rules, forwarding, upgrades.
//! - [`upstream`]: pooled clients (rustls) and the error type that records who failed.
//! - [`credentials`]: secret references and the injected credential.
//! - [`error`]: the one table from failures to problem+json answers.
//! - [`config`]: the `policies/` directory compiled into a typed snapshot, and hot reload.
//! - [`snapshot`]: a compiled config plus the runtime objects built from it.
//! - [`admin`]: health, readiness, reload and config status on a separate port.
//! - [`app`]: start-up and graceful shutdown; [`cli`]: the `interlock` command; [`demo`]: simulated
//!   vendors for `interlock demo`; [`telemetry`]: logs and counters.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cache;
pub mod certs;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod error;
pub mod identity;
pub mod listener;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod translate;
pub mod upstream;
