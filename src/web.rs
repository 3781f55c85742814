//! The web client: its page, stylesheet and script modules (`app.js`; `e2e.js` and `hpke.js`
//! for the encryption, `keystore.js` for the keys), compiled into the binary and served from
//! `/`. Nothing is fetched from anywhere else, which the Content-Security-Policy enforces in the
//! browser.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

const INDEX: &str = include_str!("web/index.html");
const STYLE: &str = include_str!("web/style.css");
const ICON: &str = include_str!("web/favicon.svg");
/// The script modules, by path.
const MODULES: [(&str, &str); 4] = [
    ("/app.js", include_str!("web/app.js")),
    ("/e2e.js", include_str!("web/e2e.js")),
    ("/hpke.js", include_str!("web/hpke.js")),
    ("/keystore.js", include_str!("web/keystore.js")),
];

/// Same-origin only: scripts, styles, REST calls and the WebSocket (CSP 3 lets `'self'`
/// cover `ws:`/`wss:` to the page's own host).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

pub fn mount(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/style.css", web::get().to(style))
        .route(
            "/favicon.svg",
            web::get().to(|| async { asset("image/svg+xml", ICON) }),
        );
    for (path, source) in MODULES {
        cfg.route(
            path,
            web::get().to(move || async move { asset("text/javascript; charset=utf-8", source) }),
        );
    }
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // Revalidate every time: after an upgrade the page and its script must match.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}
