//! A headless Chromium for one test, driven through WebDriver: `chromedriver` on a free port
//! (its own process group, killed when the test ends), a fresh profile in a temporary directory,
//! and a `fantoccini` client on a small tokio runtime. Chromium and chromedriver are Debian's
//! `chromium` and `chromium-driver`, which `.ci/tools.sh` installs; without them every browser
//! test fails saying so (it never passes without having run).

use crate::support::{bin_dir, free_port, wait_until};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a page gets to show something: generous, the machine may be loaded.
pub(crate) const PAGE: Duration = Duration::from_secs(20);

/// An executable on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Chromium and chromedriver, or a failure that says how to install them.
pub(crate) fn tools() -> (PathBuf, PathBuf) {
    let chromium = which("chromium").or_else(|| which("chromium-browser"));
    let driver = which("chromedriver");
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => panic!(
            "the dashboard's browser tests need Debian's chromium and chromium-driver (found chromium: {}, \
             chromedriver: {}): run `. .ci/tools.sh` (as root) to install them, then run the tests again",
            c.map_or("no".into(), |p| p.display().to_string()),
            d.map_or("no".into(), |p| p.display().to_string()),
        ),
    }
}

/// Where the tests save their screenshots: `target/dashboard-screenshots/`.
pub(crate) fn screenshot_dir() -> PathBuf {
    let target = bin_dir().parent().map(Path::to_path_buf).unwrap_or_else(bin_dir);
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/dashboard-screenshots");
    dir
}

pub(crate) struct Browser {
    pub rt: tokio::runtime::Runtime,
    pub client: Option<Client>,
    driver: Child,
    /// Chromium's profile directory: also the marker that finds its processes at the end.
    profile: tempfile::TempDir,
}

impl Browser {
    /// A window of `width`×`height` CSS pixels.
    pub(crate) fn start_sized(width: u32, height: u32) -> Browser {
        let (chromium, chromedriver) = tools();
        let profile = tempfile::Builder::new().prefix("cortex-chromium-").tempdir().expect("profile dir");
        let port = free_port();
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).expect("chromedriver log");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let mut b = Browser { rt, client: None, driver, profile };
        wait_until(Duration::from_secs(20), "chromedriver listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let user_data = b.profile.path().join("profile");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // The tests run as root (as in CI), where Chromium refuses to start sandboxed.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-features=Translate,OptimizationHints,MediaRouter",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", user_data.display()),
                ],
            },
        });
        let Value::Object(mut caps) = caps else { unreachable!() };
        // A desktop window is at least 500 px wide: narrower is a phone, emulated as one.
        if width < 500 {
            caps["goog:chromeOptions"]["mobileEmulation"] =
                json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0, "touch": true}});
        }
        let url = format!("http://127.0.0.1:{port}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client =
            b.rt.block_on(ClientBuilder::new(connector).capabilities(caps).connect(&url))
                .unwrap_or_else(|e| panic!("start a Chromium session through chromedriver: {e}"));
        b.client = Some(client);
        b
    }

    pub(crate) fn c(&self) -> &Client {
        self.client.as_ref().expect("a browser session")
    }

    pub(crate) fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs a script in the page (`arguments[i]` are `args`) and returns its value.
    pub(crate) fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt.block_on(self.c().execute(script, args)).unwrap_or_else(|e| panic!("run script {script:?}: {e}"))
    }

    /// The text of the first element matching `css`, or None.
    pub(crate) fn text(&self, css: &str) -> Option<String> {
        let v = self
            .js("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", vec![json!(css)]);
        v.as_str().map(str::to_string)
    }

    /// Waits until `cond` holds of the text of the first element matching `css`; returns it.
    pub(crate) fn wait_text(&self, css: &str, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = None;
        let deadline = Instant::now() + PAGE;
        loop {
            last = self.text(css).or(last);
            if last.as_deref().is_some_and(&cond) {
                return last.unwrap_or_default();
            }
            if Instant::now() >= deadline {
                self.screenshot("timeout");
                panic!("timed out after {PAGE:?} waiting for {what} in {css}; its text was: {last:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until the script returns true.
    pub(crate) fn wait_js(&self, what: &str, script: &str) {
        self.wait_js_for(PAGE, what, script);
    }

    pub(crate) fn wait_js_for(&self, timeout: Duration, what: &str, script: &str) {
        let deadline = Instant::now() + timeout;
        while self.js(script, vec![]) != Value::Bool(true) {
            if Instant::now() >= deadline {
                self.screenshot("timeout");
                panic!("timed out after {timeout:?} waiting for {what} ({script})");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Clicks the first element matching `css` (as a user would: WebDriver's click).
    /// A live update may replace the element between finding and clicking it (a stale
    /// reference): then it is found again, as a person would aim again.
    pub(crate) fn click(&self, css: &str) {
        let deadline = Instant::now() + PAGE;
        loop {
            let got = self.rt.block_on(async {
                let el = self.c().wait().at_most(PAGE).for_element(Locator::Css(css)).await?;
                el.click().await
            });
            match got {
                Ok(()) => return,
                Err(e) if e.is_stale_element_reference() && Instant::now() < deadline => {}
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Types into the first element matching `css`.
    pub(crate) fn type_into(&self, css: &str, text: &str) {
        self.rt
            .block_on(async {
                let el = self.c().wait().at_most(PAGE).for_element(Locator::Css(css)).await?;
                el.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Accepts a `confirm()` the page opened (the dashboard asks before Cancel and Restart).
    pub(crate) fn accept_dialog(&self) {
        let deadline = Instant::now() + PAGE;
        while self.rt.block_on(self.c().accept_alert()).is_err() {
            assert!(Instant::now() < deadline, "no confirmation dialog appeared");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The text of an open alert/confirm dialog, if any.
    pub(crate) fn open_dialog(&self) -> Option<String> {
        self.rt.block_on(self.c().get_alert_text()).ok()
    }

    /// Saves a screenshot as `target/dashboard-screenshots/<name>.png`; returns its path.
    pub(crate) fn screenshot(&self, name: &str) -> PathBuf {
        let path = screenshot_dir().join(format!("{name}.png"));
        match self.rt.block_on(self.c().screenshot()) {
            Ok(png) => std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display())),
            Err(e) => eprintln!("screenshot {name}: {e}"),
        }
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), client.close()).await });
        }
        // chromedriver and what it started: TERM the group, a grace period, then KILL.
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.driver.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
        // A Chromium process that left the group (its zygotes may): found by this test's own
        // profile directory on its command line, never by name.
        let marker = self.profile.path().to_string_lossy().into_owned();
        for pid in processes_with(&marker) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The PIDs whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}
