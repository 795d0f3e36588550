//! The page at `/`: one self-contained HTML file (markup, style and script
//! inline; compiled into the binary) that speaks, streams and clones through
//! the public API only. Served without the API key (it holds no data; the
//! page asks for the key and sends it with its API calls). `--no-ui` leaves
//! it out.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page (`server/ui/index.html`).
pub const PAGE: &str = include_str!("../ui/index.html");

/// `GET /`: the page.
pub fn router() -> Router {
    Router::new().route("/", get(page))
}

async fn page() -> Response {
    let mut r = PAGE.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Everything is inline: nothing else may load (no network, no CDN).
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; \
             img-src 'self' data: blob:; media-src 'self' blob: data:; connect-src 'self'; \
             worker-src blob:",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
