//! A real headless Chromium, driven over WebDriver, against a tiny HTTP server on loopback:
//! it fills and submits a form, and keeps a `Secure; HttpOnly; SameSite=Strict` cookie set
//! over plain `http://127.0.0.1` (loopback counts as a secure context), sending it back.
//! Skips when Chromium is not installed, except under `CI=true`/`OSCARFLOW_REQUIRE_BROWSER=1`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use tokio::net::TcpListener;

use common::http_emu::serve;
use common::webdriver::Driver;

const COOKIE: &str = "s=1; Secure; HttpOnly; SameSite=Strict; Path=/";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> String {
    format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body style=\"font: 20px sans-serif; margin: 40px\">{body}</body></html>")
}

/// `GET /form`: the form; `POST /form`: the submitted name, and the cookie;
/// `GET /whoami`: the `Cookie` header the browser sent.
async fn handle(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut resp = Response::builder().header("content-type", "text/html; charset=utf-8");
    let cookie_header = req
        .headers()
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let html = match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/form") => page(
            "Sign in",
            "<h1>Sign in</h1><form method=\"post\" action=\"/form\">\
             <label>Name <input id=\"name\" name=\"name\" type=\"text\"></label> \
             <button id=\"go\" type=\"submit\">Send</button></form>",
        ),
        (Method::POST, "/form") => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let name = url::form_urlencoded::parse(&body)
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            resp = resp.header("set-cookie", COOKIE);
            page(
                "Welcome",
                &format!(
                    "<h1>Welcome</h1><p id=\"echo\">Hello, {}</p><a id=\"who\" href=\"/whoami\">who am I</a>",
                    escape(&name)
                ),
            )
        }
        (Method::GET, "/whoami") => page(
            "Who",
            &format!("<p id=\"sent\">{}</p>", escape(&cookie_header)),
        ),
        _ => {
            resp = resp.status(404);
            page("Not found", "<p>not found</p>")
        }
    };
    resp.body(Full::new(Bytes::from(html))).unwrap()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_fills_a_form_and_keeps_a_secure_httponly_cookie_on_loopback() {
    let started = Instant::now();
    let Some(driver) = Driver::start().await else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    serve(listener, None, Arc::new(|| {}), handle);

    let browser = driver.session().await;
    browser.goto(&format!("{base}/form")).await;
    assert_eq!(browser.title().await, "Sign in");
    assert!(browser.source().await.contains("id=\"name\""));

    let name = browser.find("#name").await;
    name.send_keys("placeholder").await;
    name.clear().await;
    name.send_keys("Ada Lovelace & <Co>").await;
    assert_eq!(name.attr("type").await.as_deref(), Some("text"));
    assert_eq!(name.attr("data-missing").await, None);
    browser.find("form").await.find("#go").await.click().await;

    let echo = browser.wait_for("#echo", Duration::from_secs(10)).await;
    assert_eq!(echo.text().await, "Hello, Ada Lovelace & <Co>");
    assert_eq!(browser.url().await, format!("{base}/form"));
    assert_eq!(browser.title().await, "Welcome");
    assert!(browser.try_find("#name").await.is_none());
    assert_eq!(browser.find_all("a").await.len(), 1);

    // The cookie set over plain HTTP on loopback is kept with every attribute...
    let cookies = browser.cookies().await;
    let s = cookies.iter().find(|c| c.name == "s").unwrap_or_else(|| {
        panic!("the Secure cookie was dropped on http://127.0.0.1: {cookies:?}")
    });
    assert_eq!(s.value, "1");
    assert!(s.secure, "{s:?}");
    assert!(s.http_only, "{s:?}");
    assert_eq!(s.same_site.as_deref(), Some("Strict"), "{s:?}");
    assert_eq!(s.path.as_deref(), Some("/"), "{s:?}");
    // ...hidden from scripts (HttpOnly)...
    let script_cookies = browser.execute("return document.cookie", vec![]).await;
    assert_eq!(script_cookies, serde_json::json!(""));
    // ...and sent back on the next same-site navigation.
    browser.find("#who").await.click().await;
    assert_eq!(
        browser
            .wait_for("#sent", Duration::from_secs(10))
            .await
            .text()
            .await,
        "s=1"
    );

    // No alert is open: both report so instead of failing.
    assert_eq!(browser.alert_text().await, None);
    assert!(!browser.accept_alert().await);
    browser
        .execute("setTimeout(() => alert('hi'), 0)", vec![])
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(browser.alert_text().await.as_deref(), Some("hi"));
    assert!(browser.dismiss_alert().await);

    browser.goto(&format!("{base}/form")).await;
    browser.find("#name").await.send_keys("Ada Lovelace").await;
    let shot = target_dir().join("browser/smoke.png");
    browser.screenshot(&shot).await;
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", shot.display());

    browser.delete_cookies().await;
    assert!(browser.cookies().await.is_empty());
    browser.close().await;
    eprintln!(
        "browser smoke: {:.1} s, screenshot {}",
        started.elapsed().as_secs_f64(),
        shot.display()
    );
}
