//! The web dashboard: the static files of `dashboard/dist` (built by `npm run build` in
//! `dashboard/`), served at `/` for every path no route of the API claims.
//!
//! Release builds embed the files in the binary, so a deployment is one file; debug builds read
//! them from `dashboard/dist` at each request, so a rebuilt dashboard shows without rebuilding
//! the server. A build without the directory serves a short page saying how to build it.
//!
//! The build writes a `.br` and a `.gz` copy beside each text file; the one the browser accepts
//! is sent as is, so nothing is compressed per request. Paths without an extension are the
//! single-page app's own routes and get `index.html`; hashed files under `assets/` never
//! change and are cached for a year, everything else is revalidated.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;

/// Release builds: the files as they were when the server was compiled.
#[cfg(not(debug_assertions))]
#[derive(rust_embed::Embed)]
#[folder = "../dashboard/dist"]
#[allow_missing = true]
struct Assets;

/// Debug builds read the build directory at each request. Not through rust-embed's own debug
/// mode: it compares each file's canonical path with the folder's as canonicalised at compile
/// time, which keeps the `..` when `dist/` did not exist yet, so a server compiled before the
/// first `npm run build` would never find a file.
#[cfg(debug_assertions)]
const DIST_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboard/dist");

/// The content of a file of the build. `path` comes from [`resolve`], which refuses `..` and
/// empty segments, plus a fixed encoding suffix.
fn load(path: &str) -> Option<Vec<u8>> {
    #[cfg(debug_assertions)]
    {
        let file = std::path::Path::new(DIST_DIR).join(path);
        if !file.is_file() {
            return None;
        }
        std::fs::read(file).ok()
    }
    #[cfg(not(debug_assertions))]
    {
        Assets::get(path).map(|file| file.data.into_owned())
    }
}

fn embedded(path: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        std::path::Path::new(DIST_DIR).join(path).is_file()
    }
    #[cfg(not(debug_assertions))]
    {
        Assets::get(path).is_some()
    }
}

/// What the dashboard's pages may load: only this server's own scripts, styles and API (the
/// live stream's WebSocket included), never a frame of another site, never a plugin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The served copy of a file: its encoding, when it is a precompressed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Gzip,
    Identity,
}

impl Encoding {
    fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => ".br",
            Encoding::Gzip => ".gz",
            Encoding::Identity => "",
        }
    }

    fn header(self) -> Option<&'static str> {
        match self {
            Encoding::Brotli => Some("br"),
            Encoding::Gzip => Some("gzip"),
            Encoding::Identity => None,
        }
    }
}

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A file of the build.
    File(String),
    /// A route of the app itself: `index.html` answers it.
    AppRoute,
    /// Nothing (an API path no route claimed, or a file that is not there).
    Missing,
}

/// Resolves `path` (the URI path) against the files `exists` reports.
pub fn resolve(path: &str, exists: impl Fn(&str) -> bool) -> Target {
    let relative = path.trim_start_matches('/');
    if relative == "v1" || relative.starts_with("v1/") {
        return Target::Missing;
    }
    if relative.is_empty() {
        return Target::AppRoute;
    }
    // Never a way out of the build directory, whatever the embedding does with `..`.
    if relative
        .split('/')
        .any(|part| part == ".." || part.is_empty())
    {
        return Target::Missing;
    }
    if exists(relative) {
        return Target::File(relative.to_owned());
    }
    let last = relative.rsplit('/').next().unwrap_or(relative);
    if last.contains('.') {
        Target::Missing
    } else {
        Target::AppRoute
    }
}

/// The best copy of `file` the client accepts among those `exists` reports.
pub fn choose_encoding(
    accept_encoding: &str,
    file: &str,
    exists: impl Fn(&str) -> bool,
) -> Encoding {
    let accepts = |name: &str| {
        accept_encoding.split(',').any(|offer| {
            let mut parts = offer.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|param| {
                let param = param.trim().replace(' ', "");
                param == "q=0" || param == "q=0.0" || param == "q=0.00" || param == "q=0.000"
            });
            coding.eq_ignore_ascii_case(name) && !refused
        })
    };
    for encoding in [Encoding::Brotli, Encoding::Gzip] {
        let Some(name) = encoding.header() else {
            continue;
        };
        if accepts(name) && exists(&format!("{file}{}", encoding.suffix())) {
            return encoding;
        }
    }
    Encoding::Identity
}

/// How long a browser may keep `file`.
pub fn cache_control(file: &str) -> &'static str {
    if file.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

/// The fallback of the router: a file of the dashboard, its `index.html` for the app's own
/// routes, or the API's 404 for paths under `/v1`.
pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route").into_response();
    }
    let file = match resolve(uri.path(), embedded) {
        Target::File(file) => file,
        Target::AppRoute => "index.html".to_owned(),
        Target::Missing if uri.path().starts_with("/v1") => {
            return ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
                .into_response();
        }
        Target::Missing => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = choose_encoding(accept, &file, embedded);
    let Some(content) = load(&format!("{file}{}", encoding.suffix())) else {
        return not_built();
    };
    let mime = mime_guess::from_path(&file).first_or_octet_stream();
    let mut response = (StatusCode::OK, content).into_response();
    let response_headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
        response_headers.insert(header::CONTENT_TYPE, value);
    }
    response_headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control(&file)),
    );
    response_headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Some(name) = encoding.header() {
        response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(name));
    }
    response_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response_headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if file.ends_with(".html") {
        response_headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        response_headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// This server was built without the dashboard's files.
fn not_built() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "This atlasbridge-server was built without the dashboard: run `npm ci && npm run build` \
         in dashboard/, then build the server again (docs/dashboard.md).\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: &[&str] = &[
        "index.html",
        "index.html.br",
        "index.html.gz",
        "assets/index-3f2a.js",
        "assets/index-3f2a.js.gz",
        "favicon.svg",
    ];

    fn exists(path: &str) -> bool {
        FILES.contains(&path)
    }

    #[test]
    fn files_app_routes_and_api_paths_resolve_apart() {
        assert_eq!(resolve("/", exists), Target::AppRoute);
        assert_eq!(
            resolve("/assets/index-3f2a.js", exists),
            Target::File("assets/index-3f2a.js".into())
        );
        assert_eq!(resolve("/runtimes/ed25519:abc", exists), Target::AppRoute);
        assert_eq!(resolve("/audit", exists), Target::AppRoute);
        assert_eq!(resolve("/assets/gone-1234.js", exists), Target::Missing);
        assert_eq!(resolve("/v1/nothing", exists), Target::Missing);
        assert_eq!(resolve("/v1", exists), Target::Missing);
        assert_eq!(resolve("/../Cargo.toml", exists), Target::Missing);
        assert_eq!(resolve("/assets//x", exists), Target::Missing);
    }

    #[test]
    fn the_best_accepted_precompressed_copy_is_chosen() {
        let html = |accept: &str| choose_encoding(accept, "index.html", exists);
        assert_eq!(html("gzip, deflate, br, zstd"), Encoding::Brotli);
        assert_eq!(html("gzip"), Encoding::Gzip);
        assert_eq!(html("br;q=0, gzip"), Encoding::Gzip);
        assert_eq!(html("br; q=0, gzip;q=0"), Encoding::Identity);
        assert_eq!(html(""), Encoding::Identity);
        assert_eq!(
            choose_encoding("br, gzip", "assets/index-3f2a.js", exists),
            Encoding::Gzip
        );
        assert_eq!(
            choose_encoding("br, gzip", "favicon.svg", exists),
            Encoding::Identity
        );
    }

    #[test]
    fn only_hashed_assets_are_cached_for_long() {
        assert_eq!(
            cache_control("assets/index-3f2a.js"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(cache_control("index.html"), "no-cache");
        assert_eq!(cache_control("favicon.svg"), "no-cache");
    }
}
