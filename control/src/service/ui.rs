//! The dashboard: the page at `/` and its two assets, built from
//! `control/ui/src` (`control/ui/build.mjs`) and embedded in the binary, so
//! the service needs no CDN and works offline. Every data call the page
//! makes is the API the CLI uses, with the token the person signs in with.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The page: scripts and styles only from this origin, no inline code,
/// data only from this API, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The embedded assets: (path, content type, bytes).
pub const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../ui/dist/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/dist/app.js"),
    ),
    (
        "/ui/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/dist/app.css"),
    ),
];

/// The asset at `path`, with the page's security headers.
pub(super) fn asset(path: &str) -> Response {
    let Some((_, kind, bytes)) = ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let mut response = (*bytes).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, *kind),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Small, and a new binary may bring new ones: always revalidated.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_fit_their_budget_and_the_page_loads_nothing_inline() {
        let total: usize = ASSETS.iter().map(|(_, _, b)| b.len()).sum();
        assert!(
            total <= 300 * 1024,
            "the dashboard's assets are {total} bytes, over the 300 KiB budget"
        );
        let page = String::from_utf8_lossy(ASSETS[0].2);
        assert!(
            !page.contains("<script>") && !page.contains("style="),
            "the CSP allows no inline script or style"
        );
    }
}
