//! A small W3C WebDriver client for browser tests: [`Driver`] runs `chromedriver` on a free
//! loopback port, [`Session`] is one headless Chromium, [`Element`] one element of its page.
//!
//! Failures panic with context (the command, the CSS selector, the start of the page's
//! text): this is test code, and a readable panic is the best report.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

/// The key under which W3C WebDriver carries an element's id (the "web element identifier"
/// of the specification); drivers in the older JSON Wire mode used `ELEMENT`.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A program on `PATH` (or an absolute path) that exists.
fn which(name: &str) -> Option<PathBuf> {
    if Path::new(name).is_absolute() {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether a missing browser must fail the test rather than skip it.
fn browser_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("OSCARFLOW_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

/// An error answered by the driver: its W3C `error` code and `message`.
#[derive(Debug)]
pub struct WdError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

/// A running `chromedriver`, killed on drop.
pub struct Driver {
    child: Child,
    port: u16,
    browser: PathBuf,
    http: reqwest::Client,
}

impl Driver {
    /// Starts `chromedriver` and waits (20 s at most) until `/status` reports ready. `None`
    /// (with the reason on stderr) when chromedriver or Chromium is not installed, unless
    /// `CI=true` or `OSCARFLOW_REQUIRE_BROWSER=1`: then it panics.
    pub async fn start() -> Option<Driver> {
        let tools = which("chromedriver").zip(
            [
                "/usr/bin/chromium",
                "chromium",
                "chromium-browser",
                "google-chrome",
            ]
            .into_iter()
            .find_map(which),
        );
        let Some((chromedriver, browser)) = tools else {
            let why = "chromedriver and Chromium are needed (Debian: apt-get install chromium chromium-driver)";
            assert!(
                !browser_required(),
                "{why}; CI=true or OSCARFLOW_REQUIRE_BROWSER=1 require them"
            );
            eprintln!("skipping: {why}");
            return None;
        };
        let port = super::free_port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        let mut driver = Driver {
            child,
            port,
            browser,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = format!("http://127.0.0.1:{port}/status");
            let ready = send(&driver.http, Method::GET, &status, None).await;
            if ready.is_ok_and(|v| v["ready"] == json!(true)) {
                return Some(driver);
            }
            if let Ok(Some(exit)) = driver.child.try_wait() {
                panic!(
                    "{} exited before it was ready: {exit}",
                    chromedriver.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver on port {port} not ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new headless Chromium session in a 1280×1000 window (its viewport, which screenshots
    /// show, is 1280×857), deleted on drop or by [`Session::close`].
    pub async fn session(&self) -> Session<'_> {
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": args, "binary": self.browser},
        }}});
        let url = format!("http://127.0.0.1:{}/session", self.port);
        let v = send(&self.http, Method::POST, &url, Some(caps))
            .await
            .unwrap_or_else(|e| panic!("cannot start a Chromium session: {e:?}"));
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"));
        Session {
            driver: self,
            id: id.to_string(),
            open: true,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One command: the `value` of the answer, or the driver's error.
async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WdError> {
    // POST commands without parameters still take an empty JSON object.
    let body = body.or_else(|| (method == Method::POST).then(|| json!({})));
    let mut req = http.request(method, url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let failed = |e: reqwest::Error| WdError {
        status: 0,
        error: "transport".into(),
        message: e.to_string(),
    };
    let resp = req.send().await.map_err(failed)?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(failed)?;
    let mut v: Value = serde_json::from_slice(&bytes).map_err(|e| WdError {
        status,
        error: "not JSON".into(),
        message: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
    })?;
    let value = v["value"].take();
    if (200..300).contains(&status) {
        return Ok(value);
    }
    let text = |k: &str| value[k].as_str().unwrap_or_default().to_string();
    Err(WdError {
        status,
        error: text("error"),
        message: text("message"),
    })
}

/// A cookie as the browser holds it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: Option<String>,
    pub domain: Option<String>,
    #[serde(default)]
    pub secure: bool,
    #[serde(default)]
    pub http_only: bool,
    pub same_site: Option<String>,
}

/// One browser (a W3C session).
pub struct Session<'d> {
    driver: &'d Driver,
    id: String,
    open: bool,
}

impl Session<'_> {
    /// A command on this session (`path` relative to `/session/<id>`).
    pub async fn cmd(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        let url = format!(
            "http://127.0.0.1:{}/session/{}{path}",
            self.driver.port, self.id
        );
        send(&self.driver.http, method, &url, body).await
    }

    async fn must(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let what = format!("{method} {path}");
        self.cmd(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"))
    }

    async fn get(&self, path: &str) -> Value {
        self.must(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.must(Method::POST, path, Some(body)).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        string(self.get("/url").await)
    }

    pub async fn title(&self) -> String {
        string(self.get("/title").await)
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        string(self.get("/source").await)
    }

    /// The first 600 characters of the page's visible text, for failure messages.
    pub async fn page_text(&self) -> String {
        let v = self.cmd(Method::POST, "/execute/sync", Some(json!({
            "script": "return document.body ? document.body.innerText : document.documentElement.outerHTML",
            "args": [],
        }))).await;
        let text = v
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        text.chars().take(600).collect()
    }

    /// The first element matching `css`; panics naming `css` and showing the page's text.
    pub async fn find(&self, css: &str) -> Element<'_> {
        match self.try_find(css).await {
            Some(e) => e,
            None => panic!(
                "no element matches {css:?} on {}; page text:\n{}",
                self.url().await,
                self.page_text().await
            ),
        }
    }

    /// The first element matching `css`, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element<'_>> {
        self.find_in("", css).await
    }

    /// Every element matching `css` (possibly none).
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let body = json!({"using": "css selector", "value": css});
        let v = self.post("/elements", body).await;
        let list = v
            .as_array()
            .unwrap_or_else(|| panic!("elements for {css:?}: not a list: {v}"));
        list.iter().map(|e| self.element(e, css)).collect()
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await
    }

    /// Polls every 100 ms until an element matches `css`; panics after `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no element matched {css:?} within {timeout:?} on {}; page text:\n{}",
                    self.url().await,
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the viewport to `path`, creating its folders.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is not base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// The cookies visible to the current page (including HttpOnly ones).
    pub async fn cookies(&self) -> Vec<Cookie> {
        let v = self.get("/cookie").await;
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("cookies {v}: {e}"))
    }

    pub async fn delete_cookies(&self) {
        self.must(Method::DELETE, "/cookie", None).await;
    }

    /// Runs `script` (a function body: `return …`; `arguments[i]` are `args`) in the page.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        let body = json!({"script": script, "args": args});
        self.post("/execute/sync", body).await
    }

    /// The open alert's text, if one is open.
    pub async fn alert_text(&self) -> Option<String> {
        self.cmd(Method::GET, "/alert/text", None)
            .await
            .ok()
            .map(string)
    }

    /// Accepts the open alert; `false` when none is open.
    pub async fn accept_alert(&self) -> bool {
        self.cmd(Method::POST, "/alert/accept", None).await.is_ok()
    }

    /// Dismisses the open alert; `false` when none is open.
    pub async fn dismiss_alert(&self) -> bool {
        self.cmd(Method::POST, "/alert/dismiss", None).await.is_ok()
    }

    /// Ends the session (closing Chromium).
    pub async fn close(mut self) {
        self.open = false;
        let _ = self.cmd(Method::DELETE, "", None).await;
    }

    /// The first match of `css` under the element `under` (`""`: the document).
    async fn find_in(&self, under: &str, css: &str) -> Option<Element<'_>> {
        let body = json!({"using": "css selector", "value": css});
        match self
            .cmd(Method::POST, &format!("{under}/element"), Some(body))
            .await
        {
            Ok(v) => Some(self.element(&v, css)),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("finding {css:?}: {e:?}"),
        }
    }

    fn element(&self, v: &Value, css: &str) -> Element<'_> {
        let id = (v[ELEMENT_KEY].as_str())
            .or_else(|| v["ELEMENT"].as_str())
            .unwrap_or_else(|| panic!("{css:?}: no element id in {v}"));
        Element {
            session: self,
            id: id.to_string(),
            css: css.to_string(),
        }
    }
}

impl Drop for Session<'_> {
    /// Best effort, without async: a plain `DELETE /session/<id>` on loopback.
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.driver.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let req = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.id, self.driver.port
            );
            if s.write_all(req.as_bytes()).is_ok() {
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
    }
}

fn string(v: Value) -> String {
    v.as_str()
        .map(String::from)
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// One element of a session's page.
pub struct Element<'s> {
    session: &'s Session<'s>,
    id: String,
    /// The selector it was found with, for failure messages.
    css: String,
}

impl<'s> Element<'s> {
    /// A command on this element (`path` relative to `/element/<id>`), panicking with context.
    async fn must(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let path = format!("/element/{}{path}", self.id);
        match self.session.cmd(method, &path, body).await {
            Ok(v) => v,
            Err(e) => panic!("{path} on {:?}: {e:?}", self.css),
        }
    }

    pub async fn click(&self) {
        self.must(Method::POST, "/click", None).await;
    }

    /// Types `text` into the element.
    pub async fn send_keys(&self, text: &str) {
        let body = json!({ "text": text });
        self.must(Method::POST, "/value", Some(body)).await;
    }

    pub async fn clear(&self) {
        self.must(Method::POST, "/clear", None).await;
    }

    /// The rendered (visible) text.
    pub async fn text(&self) -> String {
        string(self.must(Method::GET, "/text", None).await)
    }

    /// The attribute `name` as written in the HTML, if present.
    pub async fn attr(&self, name: &str) -> Option<String> {
        let path = format!("/attribute/{name}");
        self.must(Method::GET, &path, None)
            .await
            .as_str()
            .map(String::from)
    }

    /// The first match of `css` inside this element; panics when none.
    pub async fn find(&self, css: &str) -> Element<'s> {
        let under = format!("/element/{}", self.id);
        match self.session.find_in(&under, css).await {
            Some(e) => e,
            None => panic!(
                "no element matches {css:?} inside {:?}; page text:\n{}",
                self.css,
                self.session.page_text().await
            ),
        }
    }
}
