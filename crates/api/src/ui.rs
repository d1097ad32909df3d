//! The web UI: the static files of `ui/` at the workspace root, embedded in the binary and
//! served at `/` (the page) and `/ui/…` (everything), by the analyzer and by the agent alike.
//! The page talks to the API of the server that served it.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file: its path under `ui/` and its bytes.
pub struct Asset {
    pub path: &'static str,
    pub bytes: &'static [u8],
}

impl Asset {
    /// The content type, from the file's extension.
    pub fn mime(&self) -> &'static str {
        match self.path.rsplit('.').next().unwrap_or("") {
            "html" => "text/html; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "md" => "text/markdown; charset=utf-8",
            "txt" => "text/plain; charset=utf-8",
            _ => "application/octet-stream",
        }
    }
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        /// Every file of `ui/` (a test checks that none is missing).
        pub const ASSETS: &[Asset] = &[
            $(Asset {
                path: $path,
                bytes: include_bytes!(concat!("../../../ui/", $path)),
            }),*
        ];
    };
}

assets![
    "index.html",
    "style.css",
    "js/api.js",
    "js/captures.js",
    "js/history.js",
    "js/main.js",
    "js/metadata.js",
    "js/model.js",
    "js/view.js",
    "vendor/cytoscape.esm.min.js",
    "vendor/layout-base.js",
    "vendor/cose-base.js",
    "vendor/cytoscape-fcose.js",
    "vendor/LICENSES.txt",
    "vendor/README.md",
];

/// The embedded file at `path` (relative to `ui/`).
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(path: &str) -> Response {
    let Some(a) = asset(path) else {
        return (StatusCode::NOT_FOUND, "no such file in the web UI\n").into_response();
    };
    // The vendored libraries change only with their version; the UI's own files are checked
    // again at every load, so that an upgraded binary serves its new page at once.
    let cache = if a.path.starts_with("vendor/") {
        "public, max-age=86400"
    } else {
        "no-cache"
    };
    (
        [
            (header::CONTENT_TYPE, a.mime()),
            (header::CACHE_CONTROL, cache),
        ],
        a.bytes,
    )
        .into_response()
}

/// `/`, `/ui`, `/ui/` (the page) and `/ui/{path}` (its files).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { serve("index.html") }))
        .route("/ui", get(|| async { serve("index.html") }))
        .route("/ui/", get(|| async { serve("index.html") }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>| async move { serve(&path) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                files(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }

    #[test]
    fn every_file_of_ui_is_embedded_with_a_content_type() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui");
        let mut on_disk = Vec::new();
        files(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "ui/ and the ASSETS list differ");
        for a in ASSETS {
            assert_ne!(a.mime(), "application/octet-stream", "{}", a.path);
            assert!(!a.bytes.is_empty(), "{} is empty", a.path);
        }
    }

    #[test]
    fn the_page_loads_its_modules_from_ui() {
        let page = std::str::from_utf8(asset("index.html").unwrap().bytes).unwrap();
        for src in [
            "/ui/js/main.js",
            "/ui/style.css",
            "/ui/vendor/cytoscape-fcose.js",
        ] {
            assert!(page.contains(src), "index.html does not load {src}");
            assert!(asset(src.trim_start_matches("/ui/")).is_some());
        }
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset("").is_none());
    }
}
