//! End-to-end in a real browser: the sessions component in the host, driven
//! through headless Chromium over WebDriver (chromedriver, started here).
//! What HTTP-level tests cannot show: the browser keeps and sends the cookie,
//! renders a name holding markup as text, hides the cookie from scripts, and
//! shows the stored values in the forms it navigates back to.

mod common;

use std::fs::File;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::App;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any single wait (driver start, element, URL) may take.
const WAIT: Duration = Duration::from_secs(15);
/// How long the whole browser session may take.
const WHOLE_FLOW: Duration = Duration::from_secs(120);

/// A name that is markup: it must come back as text, never run.
const NAME: &str = "<script>alert(1)</script> Ada";
const JOB: &str = "Engineer & \"poet\"";

/// A chromedriver process on a free local port, killed when dropped (also
/// when the test panics).
struct Chromedriver {
    child: Child,
    port: u16,
    /// Holds the driver's log and the browser profile.
    dir: tempfile::TempDir,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: this test needs a real browser; \
                 install it with `apt-get install chromium chromium-driver`"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = File::create(dir.path().join("chromedriver.log")).unwrap();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start ({e}): `apt-get install chromium chromium-driver`"));
        let mut driver = Chromedriver { child, port, dir };
        driver.wait_until_listening();
        driver
    }

    fn wait_until_listening(&mut self) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + WAIT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "chromedriver exited ({status}) before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver is not listening after {WAIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// The WebDriver capabilities: headless Chromium with a fresh profile.
    fn capabilities(&self) -> serde_json::Map<String, serde_json::Value> {
        let profile = self.dir.path().join("profile");
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let millis = WAIT.as_millis() as u64;
        match serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "timeouts": { "pageLoad": millis, "script": millis },
        }) {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The browser's view of the app at `base`.
struct Browser<'a> {
    client: &'a Client,
    base: String,
}

impl Browser<'_> {
    fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("{}{path}", self.base)).unwrap()
    }

    /// Waits until the browser shows `path` and its heading is there.
    async fn on(&self, path: &str, title: &str) {
        let url = self.url(path);
        if let Err(e) = self.client.wait().at_most(WAIT).for_url(&url).await {
            let now = self.client.current_url().await.map(|u| u.to_string());
            panic!("not at {url} within {WAIT:?} ({e}); at {now:?}");
        }
        let h1 = self.find("h1").await;
        assert_eq!(h1.text().await.unwrap(), title, "the heading of {path}");
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` within {WAIT:?}: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// The `value` property: what the input holds now, not its attribute.
    async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// Clicks the submit button of the form posting to `action`.
    async fn submit(&self, action: &str) {
        let button = self
            .find(&format!(r#"form[action="{action}"] button[type="submit"]"#))
            .await;
        button.click().await.unwrap();
    }

    async fn previous(&self) {
        let link = self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::LinkText("previous"))
            .await
            .expect("a \"previous\" link");
        link.click().await.unwrap();
    }

    async fn no_alert_is_open(&self) {
        match self.client.get_alert_text().await {
            Err(e) if e.is_no_such_alert() => {}
            Ok(text) => panic!("an alert is open: {text:?}"),
            Err(e) => panic!("unexpected error asking for an alert: {e}"),
        }
    }

    async fn script(&self, js: &str) -> serde_json::Value {
        self.client.execute(js, vec![]).await.unwrap()
    }
}

/// The whole visit, as a person would make it.
async fn visit(browser: &Browser<'_>) {
    browser
        .client
        .goto(browser.url("/").as_str())
        .await
        .unwrap();
    browser.on("/", "Welcome").await;
    assert_eq!(browser.value("#v1").await, "");
    browser.type_into("#v1", NAME).await;
    browser.submit("/2").await;

    // The name is shown as text, exactly as typed: escaped, not executed.
    browser.on("/2", "Tell me more").await;
    assert_eq!(browser.text("#name").await, NAME);
    browser.no_alert_is_open().await;
    let dom = browser
        .script("const n = document.getElementById('name'); return [n.children.length, document.scripts.length];")
        .await;
    assert_eq!(
        dom,
        serde_json::json!([0, 0]),
        "the markup became no element"
    );
    assert_eq!(browser.value("#v2").await, "");
    browser.type_into("#v2", JOB).await;
    browser.submit("/S").await;

    browser.on("/S", "Ready to submit?").await;
    assert_eq!(browser.text("#name").await, NAME);
    assert_eq!(browser.text("#job").await, JOB);
    browser.no_alert_is_open().await;

    // "previous" pages are prefilled with what was stored.
    browser.previous().await;
    browser.on("/2", "Tell me more").await;
    assert_eq!(browser.value("#v2").await, JOB);
    assert_eq!(browser.text("#name").await, NAME);
    browser.previous().await;
    browser.on("/", "Welcome").await;
    assert_eq!(browser.value("#v1").await, NAME);

    // Forward again through the prefilled forms, then submit.
    browser.submit("/2").await;
    browser.on("/2", "Tell me more").await;
    assert_eq!(browser.text("#name").await, NAME);
    browser.submit("/S").await;
    browser.on("/S", "Ready to submit?").await;
    assert_eq!(browser.text("#name").await, NAME);
    assert_eq!(browser.text("#job").await, JOB);
    browser.submit("/F").await;
    browser.on("/F", "Thank you").await;
    let submitted = browser.text("#submitted").await;
    assert!(
        submitted.starts_with("Your answers were submitted at "),
        "{submitted:?}"
    );

    // The cookie is HttpOnly: scripts cannot see it, the browser keeps it.
    let visible = browser.script("return document.cookie;").await;
    let visible = visible.as_str().expect("document.cookie is a string");
    assert!(
        !visible.contains("session="),
        "scripts see the session cookie: {visible:?}"
    );
    let cookie = browser
        .client
        .get_named_cookie("session")
        .await
        .expect("the browser holds the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Lax")
    );
    assert_eq!(cookie.path(), Some("/"));
    assert_ne!(
        cookie.secure(),
        Some(true),
        "not Secure over plain http by default"
    );
    let id = cookie.value();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{id:?}"
    );
    let all = browser.client.get_all_cookies().await.unwrap();
    assert_eq!(all.len(), 1, "only the session cookie: {all:?}");
}

#[test]
fn a_real_browser_goes_through_the_flow() {
    let app = App::start(&[]);
    let driver = Chromedriver::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(driver.capabilities());
        let client = tokio::time::timeout(WAIT * 2, builder.connect(&driver.url()))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no browser session within {:?}:\n{}",
                    WAIT * 2,
                    driver.log()
                )
            })
            .unwrap_or_else(|e| panic!("no browser session ({e}):\n{}", driver.log()));
        let browser = Browser {
            client: &client,
            base: format!("http://{}", app.addr),
        };
        // Always end the browser session (closing Chromium), then report.
        let outcome =
            CatchUnwind(Box::pin(tokio::time::timeout(WHOLE_FLOW, visit(&browser)))).await;
        let _ = tokio::time::timeout(WAIT, client.close()).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the browser flow took longer than {WHOLE_FLOW:?}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });

    // One browser, one session: one record, holding what was typed.
    let records = app.session_records();
    assert_eq!(records.len(), 1, "{records:?}");
    let stored = String::from_utf8_lossy(&records[0].1);
    assert!(
        stored.contains("Ada") && stored.contains("Engineer"),
        "{stored}"
    );
}

/// A future's panic as a value, so that the browser session is closed
/// before the panic goes on (what `futures`' `catch_unwind` does; the crate
/// no longer depends on `futures`).
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The future is dropped, not polled again, after a panic: whatever
        // state the panic left it in is never observed.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
