//! Headless Chromium driven over WebDriver: the distribution's `chromium` and
//! `chromium-driver` (`.ci/run` installs them), through `fantoccini`. Each browser has
//! its own driver process and profile, and is stopped (with every process it started)
//! when dropped.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: [&str; 2] = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];
const DRIVER: [&str; 2] = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];
const MISSING: &str = "the console's browser tests need chromium and its WebDriver (Debian: apt-get install chromium chromium-driver; .ci/run installs them)";

/// The vendored accessibility checker.
const AXE: &str = include_str!("../vendor/axe-core/axe.min.js");

pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: tempfile::TempDir,
}

fn first_existing(paths: &[&'static str]) -> &'static str {
    paths
        .iter()
        .copied()
        .find(|path| std::path::Path::new(path).exists())
        .expect(MISSING)
}

impl Browser {
    /// A browser at 1280×900; with `javascript` false, one that runs no script at all
    /// (the console's actions must work there too).
    pub async fn start(javascript: bool) -> Self {
        let (binary, driver_binary) = (first_existing(&CHROMIUM), first_existing(&DRIVER));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: dropping the browser stops Chromium's processes too.
            .process_group(0)
            .spawn()
            .expect(MISSING);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let mut options = json!({
            "binary": binary,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        if !javascript {
            options["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("chromedriver started no browser session");
        Self {
            client,
            driver,
            profile,
        }
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Waits (up to 15 s) for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|_| panic!("no element {css} appeared"))
    }

    pub async fn find(&self, css: &str) -> Option<fantoccini::elements::Element> {
        self.client.find(Locator::Css(css)).await.ok()
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks the element matching `css`, finding it again if the page replaced it
    /// meanwhile (a live list redrawn between the finding and the click).
    pub async fn click(&self, css: &str) {
        for _ in 0..20 {
            match self.wait_for(css).await.click().await {
                Ok(()) => return,
                Err(error) if is_stale(&error) => continue,
                Err(error) => panic!("clicking {css}: {error}"),
            }
        }
        panic!("{css} kept being replaced");
    }

    /// The text of the element matching `css`, found again if the page replaced it.
    pub async fn text(&self, css: &str) -> String {
        for _ in 0..20 {
            match self.wait_for(css).await.text().await {
                Ok(text) => return text,
                Err(error) if is_stale(&error) => continue,
                Err(error) => panic!("reading {css}: {error}"),
            }
        }
        panic!("{css} kept being replaced");
    }

    /// Saves what the window shows as `name.png` with the test output
    /// (`target/tmp/console-screenshots/`); the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The page's serious and critical accessibility violations, by axe-core.
    pub async fn accessibility_violations(&self) -> Vec<Value> {
        self.client.execute(AXE, vec![]).await.unwrap();
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, {resultTypes: ['violations']})\
                    .then(r => done(r.violations))\
                    .catch(e => done([{id: 'axe-failed', impact: 'critical', help: String(e)}]));",
                vec![],
            )
            .await
            .unwrap();
        found
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect()
    }

    /// The session's cookies as a `Cookie` header.
    pub async fn cookie_header(&self) -> String {
        self.client
            .get_all_cookies()
            .await
            .unwrap()
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

fn is_stale(error: &fantoccini::error::CmdError) -> bool {
    matches!(
        error,
        fantoccini::error::CmdError::Standard(e)
            if e.error == fantoccini::error::ErrorStatus::StaleElementReference
    )
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the driver and the browser it started.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium leaves the driver's group; its processes name the profile.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.profile.path().display().to_string()])
            .status();
    }
}
