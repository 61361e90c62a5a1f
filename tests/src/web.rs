//! The web page in a real browser (host tier): headless Chromium, driven through Debian's
//! chromedriver with WebDriver (fantoccini), signs in at a fake OIDC provider, opens the held
//! request, clicks approve or deny, and the held process on this host resumes or gets EPERM.
//!
//! [`Chrome`] owns chromedriver and the browser: chromedriver runs in a process group of its
//! own with `HOME` and `TMPDIR` in a temporary directory, so that dropping the guard (a failed
//! case included) ends the WebDriver session, kills the group and removes every file the
//! browser wrote. [`WebSide`] is the fixture's OIDC provider on its own Tokio runtime.
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_server::testing::oidc::{CLIENT_ID, CLIENT_SECRET, FakeIdp};
use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::harness::{ensure, stdout};
use crate::server::{Case, said, told};

const WAIT: Duration = Duration::from_secs(20);
/// The provider's user: not in the server config; its group `oncall` maps to `sre`.
pub const WEB_USER: &str = "erin@example.com";

/// The fixture's web side: the OIDC provider (on a runtime of its own, since the scenarios are
/// synchronous) and the page's address.
pub struct WebSide {
    pub rt: tokio::runtime::Runtime,
    pub idp: FakeIdp,
    /// `http://127.0.0.1:PORT` (the server's `http_listen`).
    pub public_url: String,
    pub listen: String,
}

impl WebSide {
    /// Starts the provider and picks the page's port.
    pub fn start() -> anyhow::Result<WebSide> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let idp = rt.block_on(FakeIdp::start(
            serde_json::json!({"email": WEB_USER, "groups": ["oncall"]}),
        ))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        Ok(WebSide {
            rt,
            idp,
            public_url: format!("http://{listen}"),
            listen,
        })
    }

    /// The server config's lines for the page (and writes the client secret into `sdir`).
    pub fn config(&self, sdir: &std::path::Path) -> anyhow::Result<String> {
        std::fs::write(sdir.join("oidc.secret"), CLIENT_SECRET)?;
        Ok(format!(
            "http_listen: {}\nweb:\n  public_url: {}\n  oidc:\n    issuer: {}\n    client_id: {CLIENT_ID}\n    \
             client_secret_file: oidc.secret\n    groups:\n      oncall: sre\n",
            self.listen,
            self.public_url,
            self.idp.issuer()
        ))
    }
}

/// chromedriver and its headless Chromium; both end when this is dropped.
pub struct Chrome {
    driver: Option<Child>,
    pub client: Option<Client>,
    dir: tempfile::TempDir,
}

impl Chrome {
    /// Starts chromedriver on a free loopback port and opens a session.
    /// `size`: the window (a phone is 390×844).
    pub fn start(rt: &tokio::runtime::Runtime, size: (u32, u32)) -> anyhow::Result<Chrome> {
        let driver_bin = which("chromedriver").context(
            "chromedriver is not installed (Debian packages chromium and chromium-driver; \
             `cargo xtask setup` installs them)",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("airlock-chrome")
            .tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .env("HOME", dir.path())
            .env("TMPDIR", dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("driver.log"))?)
            // Its own group: killing the group ends the browser even without a DELETE.
            .process_group(0)
            .spawn()
            .context("starting chromedriver")?;
        let mut c = Chrome {
            driver: Some(driver),
            client: None,
            dir,
        };
        let url = format!("http://127.0.0.1:{port}");
        let profile = c.dir.path().join("profile");
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", format!("--window-size={},{}", size.0, size.1),
                format!("--user-data-dir={}", profile.display()),
            ]}
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let t0 = Instant::now();
        let client = loop {
            let r = rt.block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&url),
            );
            match r {
                Ok(cl) => break cl,
                Err(e) if t0.elapsed() > Duration::from_secs(15) => {
                    let log = std::fs::read_to_string(c.dir.path().join("driver.log"))
                        .unwrap_or_default();
                    bail!("no WebDriver session: {e}; chromedriver log: {log}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        c.client = Some(client);
        Ok(c)
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session")
    }

    /// Ends the session (the browser exits) before the guard kills what is left.
    pub fn close(mut self, rt: &tokio::runtime::Runtime) {
        if let Some(cl) = self.client.take() {
            let _ = rt.block_on(cl.close());
        }
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        if let Some(mut d) = self.driver.take() {
            // The group chromedriver leads (its browser included), by its PID: ours.
            unsafe {
                libc::kill(-(d.id() as i32), libc::SIGKILL);
            }
            let _ = d.wait();
        }
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

/// With `AIRLOCK_WEB_SCREENSHOTS=DIR`, saves what the browser shows as DIR/NAME.png (to look
/// at the page's layout after a run).
async fn screenshot(cl: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("AIRLOCK_WEB_SCREENSHOTS")
        && let Ok(png) = cl.screenshot().await
    {
        let _ = std::fs::write(PathBuf::from(dir).join(format!("{name}.png")), png);
    }
}

/// Waits until `css` is on the page; returns its text.
async fn wait_for(cl: &Client, css: &str) -> anyhow::Result<String> {
    let el = cl
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("no {css} on the page"))?;
    Ok(el.text().await?)
}

/// Waits until the text of `css` contains `want` (the page updates itself).
async fn wait_text(cl: &Client, css: &str, want: &str) -> anyhow::Result<String> {
    let t0 = Instant::now();
    loop {
        let text = match cl.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(want) {
            return Ok(text);
        }
        if t0.elapsed() > WAIT {
            let url = cl
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let src = cl.source().await.unwrap_or_default();
            bail!("{css} never said {want:?} (last: {text:?}) at {url}: {src}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens the request's page (a link as Slack or Teams would send), signs in through the
/// provider, and lands back on the request.
async fn open_signed_in(cl: &Client, public_url: &str, id: &str) -> anyhow::Result<()> {
    cl.goto(&format!("{public_url}/requests/{id}")).await?;
    // Signed out: the sign-in page, which sends us to the provider and back.
    cl.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#sso"))
        .await
        .context("no single sign-on link on the sign-in page")?
        .click()
        .await?;
    cl.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#idp-sign-in"))
        .await
        .context("the provider's page did not show")?
        .click()
        .await?;
    let me = wait_for(cl, "#me").await?;
    ensure(me == WEB_USER, || format!("signed in as {me:?}"))?;
    let url = cl.current_url().await?;
    ensure(url.path() == format!("/requests/{id}"), || {
        format!("after sign-in the browser is at {url}, not the request")
    })?;
    wait_for(cl, &format!("#req-{id}")).await.map(drop)
}

/// The page scenarios (host tier only: the browser runs on this host).
pub const CASES: &[(&str, Case)] = &[
    ("web_page_approve_click_resumes_the_held_exec", |c| {
        let web = c.fx.web.as_ref().context("no web side in the fixture")?;
        let child = c.spawn(&c.fx.held, "web-ok")?;
        let id = c.wait_pending_at_server("held-tool")?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let chrome = Chrome::start(&web.rt, (1280, 900))?;
        let r = web.rt.block_on(async {
            let cl = chrome.client();
            open_signed_in(cl, &web.public_url, &id).await?;
            // The page shows the whole context of what is held.
            let card = wait_for(cl, &format!("#req-{id}")).await?;
            for want in ["e2e-host", "e2esrv", "held-tool", "e2e remote", "web-ok"] {
                ensure(card.contains(want), || {
                    format!("the card lacks {want:?}: {card}")
                })?;
            }
            screenshot(cl, "desktop-request").await;
            cl.find(Locator::Css(&format!("#req-{id} button.approve")))
                .await?
                .click()
                .await?;
            let done = wait_text(cl, &format!("#req-{id} .outcome"), "approved once").await;
            screenshot(cl, "desktop-approved").await;
            done
        });
        chrome.close(&web.rt);
        r?;
        let o = child.finish(WAIT)?;
        ensure(stdout(&o).ends_with("web-ok") && o.status.success(), || {
            format!("approved on the page: {}", said(&o))
        })?;
        told(&o, &id, &format!(": approved by {WEB_USER} via server"))
    }),
    ("web_page_deny_click_gives_the_held_exec_eperm", |c| {
        let web = c.fx.web.as_ref().context("no web side in the fixture")?;
        let child = c.spawn(&c.fx.held, "must-not-run")?;
        let id = c.wait_pending_at_server("held-tool")?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // A phone-sized window: the page must fit it without sideways scrolling.
        let chrome = Chrome::start(&web.rt, (390, 844))?;
        let r = web.rt.block_on(async {
            let cl = chrome.client();
            open_signed_in(cl, &web.public_url, &id).await?;
            let widths = cl
                .execute(
                    "return [document.documentElement.scrollWidth, window.innerWidth];",
                    vec![],
                )
                .await?;
            let (sw, iw) = (
                widths[0].as_u64().unwrap_or(0),
                widths[1].as_u64().unwrap_or(0),
            );
            ensure(sw <= iw, || {
                format!("on a phone the page is {sw}px wide in a {iw}px window")
            })?;
            screenshot(cl, "phone-request").await;
            let reason = cl
                .find(Locator::Css(&format!("#req-{id} input.reason")))
                .await?;
            reason.send_keys("not from a browser test").await?;
            cl.find(Locator::Css(&format!("#req-{id} button.deny")))
                .await?
                .click()
                .await?;
            wait_text(cl, &format!("#req-{id} .outcome"), "denied").await
        });
        chrome.close(&web.rt);
        r?;
        let o = child.finish(WAIT)?;
        ensure(stdout(&o).ends_with("errno=1"), || {
            format!("denied on the page: {}", said(&o))
        })?;
        told(
            &o,
            &id,
            &format!(": denied by {WEB_USER} via server: not from a browser test"),
        )
    }),
    ("web_page_shows_a_new_request_without_a_reload", |c| {
        let web = c.fx.web.as_ref().context("no web side in the fixture")?;
        let first = c.spawn(&c.fx.held, "live-1")?;
        let id1 = c.wait_pending_at_server("held-tool")?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let chrome = Chrome::start(&web.rt, (1280, 900))?;
        let second = std::cell::RefCell::new(None);
        let r = web.rt.block_on(async {
            let cl = chrome.client();
            open_signed_in(cl, &web.public_url, &id1).await?;
            cl.goto(&format!("{}/", web.public_url)).await?;
            wait_for(cl, &format!("#req-{id1}")).await?;
            // The script is connected to the event stream before the new request opens.
            cl.wait()
                .at_most(WAIT)
                .for_element(Locator::Css("html[data-live-ready]"))
                .await?;
            *second.borrow_mut() = Some(c.spawn(&c.fx.held, "live-2")?);
            let id2 = c.wait_pending_at_server("held-tool")?["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            // No reload: the list updates itself from the event stream.
            wait_for(cl, &format!("#req-{id2}")).await?;
            for id in [&id1, &id2] {
                cl.find(Locator::Css(&format!("#req-{id} button.approve")))
                    .await?
                    .click()
                    .await?;
                cl.goto(&format!("{}/", web.public_url)).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
        chrome.close(&web.rt);
        let done1 = first.finish(WAIT);
        let done2 = second.into_inner().map(|s| s.finish(WAIT));
        r?;
        ensure(stdout(&done1?).ends_with("live-1"), || "first".into())?;
        match done2 {
            Some(o) => ensure(stdout(&o?).ends_with("live-2"), || "second".into()),
            None => bail!("the second agent never started"),
        }
    }),
];
