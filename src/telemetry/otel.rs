//! OpenTelemetry traces over OTLP/HTTP (protobuf): one server span per request, one client span per
//! upstream attempt, W3C trace context in and out.
//!
//! Export is batched on the tokio runtime (the async-runtime batch processor: the SDK's default
//! batch exporter runs on its own thread without a reactor and silently exports nothing). The
//! exporter uses the gateway's own rustls HTTP client, so https collectors work with the system
//! roots. A slow or dead collector never blocks a request: spans queue in a bounded buffer and are
//! dropped when it is full.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpError};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::credentials::Secret;

/// Trace export settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// OTLP/HTTP traces endpoint, e.g. `http://collector:4318/v1/traces`.
    pub endpoint: Uri,
    /// Extra request headers (values are secrets: API keys of hosted collectors).
    pub headers: Vec<(String, Secret)>,
    /// Fraction of new traces sampled (parent-based: a caller's decision is kept).
    pub sampling: f64,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// Export timeout.
    pub timeout: Duration,
}

/// The HTTP client the OTLP exporter uses (hyper + rustls).
#[derive(Debug, Clone)]
struct ExportClient(Client<HttpsConnector<HttpConnector>, Full<Bytes>>);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let res = self.0.request(Request::from_parts(parts, Full::new(body))).await?;
        let (parts, body) = res.into_parts();
        let body = Limited::new(body, 4 * 1024 * 1024).collect().await?.to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}

/// The tracer and propagator of a running gateway.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Tracing {
    /// Starts the exporter and batch processor; must run inside the tokio runtime.
    pub fn start(s: &TracingSettings) -> Result<Tracing, String> {
        let mut roots = rustls::RootCertStore::empty();
        let (_added, _ignored) = roots.add_parsable_certificates(crate::upstream::native_roots().iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = ExportClient(Client::builder(TokioExecutor::new()).build(connector));
        let headers: HashMap<String, String> =
            s.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())).collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(s.endpoint.to_string())
            .with_headers(headers)
            .with_timeout(s.timeout)
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(s.sampling))))
            .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(s.service_name.clone()).build())
            .build();
        let tracer = provider.tracer("interlock");
        Ok(Tracing { provider, tracer, propagator: TraceContextPropagator::new() })
    }

    /// Starts the server span of a request, continuing the caller's trace if it sent one.
    pub fn server_span(&self, method: &http::Method, headers: &http::HeaderMap) -> Context {
        use opentelemetry::propagation::TextMapPropagator as _;
        let parent = self.propagator.extract(&HeaderExtractor(headers));
        let span = self
            .tracer
            .span_builder(method.as_str().to_owned())
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// Starts the client span of an upstream attempt and writes its `traceparent` into `headers`.
    pub fn client_span(&self, server: &Context, method: &http::Method, headers: &mut http::HeaderMap) -> Context {
        use opentelemetry::propagation::TextMapPropagator as _;
        let span = self
            .tracer
            .span_builder(method.as_str().to_owned())
            .with_kind(SpanKind::Client)
            .start_with_context(&self.tracer, server);
        let cx = server.with_span(span);
        headers.remove("traceparent");
        headers.remove("tracestate");
        self.propagator.inject_context(&cx, &mut HeaderInjector(headers));
        cx
    }

    /// Starts a client span for a call the gateway makes on its own behalf (an OAuth2 token
    /// request), as a child of the request that needed it.
    pub fn side_call_span(&self, parent: &Context, name: &'static str) -> Context {
        let span = self.tracer.span_builder(name).with_kind(SpanKind::Client).start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    /// Starts an internal span (work the gateway does in-process, such as a translation) under the
    /// request's span.
    pub fn internal_span(&self, parent: &Context, name: &'static str) -> Context {
        let span =
            self.tracer.span_builder(name).with_kind(SpanKind::Internal).start_with_context(&self.tracer, parent);
        parent.with_span(span)
    }

    /// Flushes queued spans (on shutdown), bounded in time.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(5));
    }
}

/// Sets `attrs` on the span in `cx` and ends it.
pub fn end(cx: &Context, attrs: Vec<KeyValue>, error: bool) {
    let span = cx.span();
    span.set_attributes(attrs);
    if error {
        span.set_status(opentelemetry::trace::Status::error(""));
    }
    span.end();
}

/// The 32-hex trace id of a span context.
pub fn trace_id(cx: &Context) -> String {
    cx.span().span_context().trace_id().to_string()
}

/// Shared handle.
pub type SharedTracing = Option<Arc<Tracing>>;
