//! Real Chromium, headless, driven through Debian's chromedriver (WebDriver) with fantoccini.
//! `scripts/test` installs both; a missing one fails the test rather than skipping it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::postgres::free_port;
use super::process::Process;

/// How long a browser step waits for the page to show what it expects.
const PATIENCE: Duration = Duration::from_secs(10);

/// One chromedriver process; every browser of a test is a session on it.
pub struct Chromedriver {
    /// In its own process group: dropping it also ends every Chromium it started, even when a
    /// failed test never closed its sessions.
    _process: Process,
    url: String,
}

impl Chromedriver {
    pub async fn start() -> Self {
        let port = free_port();
        let process = Process::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let driver = Self {
            _process: process,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    /// A new headless browser with its own profile (its own storage).
    pub async fn browser(&self, name: &str) -> Browser {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1100,800"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("chromedriver opens a Chromium session");
        Browser {
            client,
            name: name.to_owned(),
        }
    }
}

pub struct Browser {
    pub client: Client,
    pub name: String,
}

impl Browser {
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.wait_for(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.wait_for(css).await.click().await.unwrap();
    }

    /// The element, once it exists and is shown.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && element.is_displayed().await.unwrap_or(false)
            {
                return element;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {css} never shown",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the visible text of `css` contains `needle`; the text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.text(css).await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {css} never showed {needle:?}; it shows {text:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of `css`, or "" when it is absent.
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Saves a screenshot under `target/browser-failures/` (for a failed test); the path.
    pub async fn screenshot(&self, test: &str) -> Option<std::path::PathBuf> {
        let png = self.client.screenshot().await.ok()?;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-failures");
        std::fs::create_dir_all(&dir).ok()?;
        let path = dir.join(format!("{test}-{}.png", self.name));
        std::fs::write(&path, png).ok()?;
        Some(path)
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
