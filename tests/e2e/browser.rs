//! The IPAM pages in a real browser: headless Chromium, driven over WebDriver by a
//! `chromedriver` this test starts and owns, against a real `weft serve`.
//!
//! One walk, as a new operator would take it: the first admin through the setup link from the
//! log, sign out and in, create a pool (after a bad CIDR is refused with its field error),
//! allocate two addresses, filter the table, page through the free addresses, reserve one with
//! a description and find that change in its history. Every page visited is saved as a PNG under
//! `<target>/screenshots/` (`NN-page.png`, full page, 1280 px wide), plus the addresses page at
//! phone width, for a person to look at; a failure adds `NN-FAILED.png`, the page it failed on.
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`;
//! `bash tests/run` installs them as root). Without them the test fails and says so: a
//! browser test that skips itself quietly is a test nobody runs.

use crate::support::{Server, free_port};
use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use fantoccini::elements::Element;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "ada";
const PASSWORD: &str = "correct horse battery staple";
const POOL: &str = "lan";
const CIDR: &str = "10.20.0.0/24";
/// Not a CIDR (a /33 of IPv4): the server must refuse it with a field error.
const BAD_CIDR: &str = "10.20.0.0/33";
const DESCRIPTION: &str = "printer, 2nd floor";
/// The desktop viewport of every screenshot but the phone one.
const DESKTOP: (u32, u32) = (1280, 900);
/// An ordinary phone's viewport in CSS pixels.
const PHONE: (u32, u32) = (390, 844);
const INSTALL_HINT: &str = "the browser test needs Chromium and its WebDriver: install them with \
     `apt-get install chromium chromium-driver` (as root, `bash tests/run` does it)";

/// How long a page may take to show what a step waits for.
const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_walks_the_ipam_pages_in_chromium() {
    let chromedriver = ChromeDriver::start()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let server = Server::start().await;
    // Picked up by the server's watch of its plugins folder while the walk goes on.
    server.install_plugin(
        "least-loaded",
        "least_loaded",
        "name = \"least-loaded\"\nversion = \"0.1.0\"\nworld = \"node-selector\"\ndescription = \"Fewest peers per weight\"\n",
    );
    let setup = server
        .setup_path()
        .expect("a setup link in the log of a server with no user");
    let shots = screenshot_dir().expect("a screenshot dir");
    println!("screenshots: {}", shots.display());
    let mut walk = Walk::open(&chromedriver, server.url(""), shots)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nchromedriver's log:\n{}", chromedriver.log_tail()));
    let outcome = walk.run(&setup).await;
    if outcome.is_err() {
        // What the browser showed when it went wrong is the first thing one wants to see.
        if let Err(e) = walk.shot("FAILED").await {
            eprintln!("no failure screenshot: {e:#}");
        }
    }
    let (step, shots) = (walk.step, walk.shots.clone());
    // Closed before chromedriver is killed (on drop), so Chromium shuts down cleanly.
    if let Err(e) = walk.client.close().await {
        eprintln!("closing the browser session: {e}");
    }
    if let Err(e) = outcome {
        panic!(
            "the browser walk failed after step {step} (screenshots in {}): {e:#}",
            shots.display()
        );
    }
}

/// `<target>/screenshots/`, emptied: `CARGO_TARGET_DIR` if set (relative to the workspace, as
/// cargo reads it), else the workspace's `target/`.
fn screenshot_dir() -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the crate sits in the workspace")?;
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    };
    let dir = target.join("screenshots");
    // Pictures from an earlier run would pass for this run's.
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The first executable file called `name` in `PATH`.
fn in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A `chromedriver` process on a free loopback port, with a throw-away Chromium profile. It
/// runs in a process group of its own, so that dropping this kills it and every browser process
/// it started, whether the test passed, failed or panicked.
struct ChromeDriver {
    child: Child,
    url: String,
    browser: PathBuf,
    /// The profile and the driver's log; removed on drop, after the processes are gone.
    dir: tempfile::TempDir,
}

impl ChromeDriver {
    async fn start() -> Result<ChromeDriver> {
        let driver_bin = in_path("chromedriver")
            .ok_or_else(|| anyhow!("chromedriver not found in PATH: {INSTALL_HINT}"))?;
        let browser = in_path("chromium")
            .ok_or_else(|| anyhow!("chromium not found in PATH: {INSTALL_HINT}"))?;
        let dir = tempfile::tempdir().context("a temp dir for chromedriver")?;
        let log = fs::File::create(dir.path().join("chromedriver.log"))?;
        let port = free_port();
        let child = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", driver_bin.display()))?;
        let mut driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            browser,
            dir,
        };
        driver.wait_ready().await?;
        Ok(driver)
    }

    /// Waits for `/status` to say ready (chromedriver answers it before it takes sessions).
    async fn wait_ready(&mut self) -> Result<()> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{}/status", self.url)).send().await
                && let Ok(body) = r.json::<Value>().await
                && body["value"]["ready"] == true
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("chromedriver exited ({status}):\n{}", self.log_tail());
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver not ready on {} within 20 s:\n{}",
                self.url,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What a new headless Chromium session is asked for.
    fn capabilities(&self) -> Result<Capabilities> {
        let profile = self.dir.path().join("profile");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.browser,
                "args": [
                    "--headless",
                    // CI runs as root, where Chromium's sandbox refuses to start.
                    "--no-sandbox",
                    "--disable-gpu",
                    // Containers often have a tiny /dev/shm.
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    "--no-first-run",
                    "--lang=en-US",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            // Console errors (a blocked style or script, a script error) are read after each
            // page.
            "goog:loggingPrefs": { "browser": "SEVERE" },
        });
        caps.as_object()
            .cloned()
            .context("capabilities are a JSON object")
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group this struct created (process_group(0) above).
        unsafe { libc::kill(-group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (a browser that outlived its driver) goes now.
        // SAFETY: as above.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// What the browser's console said about a page.
#[derive(Default)]
struct Console {
    /// Errors: a style or script the CSP blocked, a script error, a resource that failed.
    errors: Vec<String>,
    /// The page's own status when it was not a success (the browser logs it as an error).
    page_status: Option<u16>,
}

/// The walk through the pages in one browser session, one numbered step per page visited.
struct Walk {
    client: Client,
    /// chromedriver's own endpoint of this session, for what WebDriver has no command for:
    /// DevTools (full-page screenshots, phone emulation) and the console log.
    session_url: String,
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT` of the server.
    base: String,
    shots: PathBuf,
    /// The number of the last page seen (and of its screenshot).
    step: u32,
}

impl Walk {
    async fn open(driver: &ChromeDriver, base: String, shots: PathBuf) -> Result<Walk> {
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(driver.capabilities()?)
            .connect(&driver.url)
            .await
            .context("starting a Chromium session through chromedriver")?;
        let session = client
            .session_id()
            .await?
            .context("a WebDriver session id")?;
        let walk = Walk {
            client,
            session_url: format!("{}/session/{session}", driver.url),
            http: reqwest::Client::builder().no_proxy().build()?,
            base,
            shots,
            step: 0,
        };
        // The viewport exactly (a headless window of that size keeps some of it for the frame).
        walk.viewport(DESKTOP, false).await?;
        Ok(walk)
    }

    async fn run(&mut self, setup: &str) -> Result<()> {
        // The first admin, through the one-time link the server logged.
        self.goto(setup).await?;
        self.page("setup", setup).await?;
        self.fill("input[name=name]", ADMIN).await?;
        self.fill("input[name=password]", PASSWORD).await?;
        self.fill("input[name=confirm]", PASSWORD).await?;
        self.press("Create administrator").await?;
        self.page("dashboard-after-setup", "/").await?;
        self.expect_signed_in().await?;

        // Sign out, and back in through the login form.
        self.press("Sign out").await?;
        self.page("login", "/login").await?;
        self.fill("input[name=name]", ADMIN).await?;
        self.fill("input[name=password]", PASSWORD).await?;
        self.press("Sign in").await?;
        self.page("dashboard", "/").await?;
        self.expect_signed_in().await?;

        self.create_pool().await?;
        let first = self.allocate("web-1", "team-a").await?;
        let second = self.allocate("db-1", "team-b").await?;
        ensure!(
            first != second,
            "two allocations got the same address {first}"
        );
        self.filter_the_table().await?;
        self.reserve_a_free_address().await?;
        self.plugins().await?;
        self.nodes_and_peers().await?;
        self.phone_width().await
    }

    /// The nodes, peers and meshes pages, before any node: each says how to begin.
    async fn nodes_and_peers(&mut self) -> Result<()> {
        for (name, path, says) in [
            ("nodes", "/nodes", "No nodes yet"),
            ("peers", "/peers", "No peers yet"),
            ("meshes", "/meshes", "No meshes yet"),
        ] {
            self.goto(path).await?;
            self.page(name, path).await?;
            let empty = self.text("p.empty").await?;
            ensure!(empty.contains(says), "the {name} page shows {empty:?}");
        }
        self.goto("/meshes/new").await?;
        self.page("mesh-new", "/meshes/new").await?;
        let warning = self.text("p.error").await?;
        ensure!(
            warning.contains("There is no overlay pool"),
            "the new-mesh form shows {warning:?}"
        );
        Ok(())
    }

    /// The plugins page lists the installed plugin; reloading says how it went.
    async fn plugins(&mut self) -> Result<()> {
        self.goto("/plugins").await?;
        self.page("plugins", "/plugins").await?;
        let listed = self.text("section.plugin").await?;
        ensure!(
            listed.contains("least-loaded") && listed.contains("loaded"),
            "the plugins page shows {listed:?}"
        );
        self.press("Reload all").await?;
        self.page("plugins-reloaded", "/plugins").await?;
        self.expect_flash("Reloaded 1 plugin (0 refused)").await
    }

    async fn expect_signed_in(&self) -> Result<()> {
        let user = self.text(".who .user").await?;
        ensure!(user == ADMIN, "signed in as {user:?}, not {ADMIN:?}");
        self.find(".who .badge.role-admin").await?;
        Ok(())
    }

    /// Pools page, the new-pool form, a bad CIDR refused with its field error, then the pool.
    async fn create_pool(&mut self) -> Result<()> {
        self.click("header nav a[href='/pools']").await?;
        self.page("pools", "/pools").await?;
        self.find("header nav a[href='/pools'][aria-current=page]")
            .await?;
        self.click("a[href='/pools/new']").await?;
        self.page("pool-new", "/pools/new").await?;
        self.fill("input[name=name]", POOL).await?;
        self.fill("input[name=cidr]", BAD_CIDR).await?;
        self.fill("[name=description]", "office LAN").await?;
        self.press("Create pool").await?;

        // Refused: the form again, with the error next to the field and what was typed kept.
        self.page_with_status("pool-new-bad-cidr", "/pools", Some(422))
            .await?;
        let error = self.text("#cidr-error").await?;
        ensure!(!error.is_empty(), "#cidr-error is empty");
        let cidr = self.find("input[name=cidr]").await?;
        ensure!(
            cidr.attr("aria-invalid").await?.as_deref() == Some("true")
                && cidr.attr("aria-describedby").await?.as_deref() == Some("cidr-error"),
            "the CIDR field is not marked invalid and tied to #cidr-error"
        );
        ensure!(
            cidr.prop("value").await?.as_deref() == Some(BAD_CIDR),
            "the CIDR typed was not kept"
        );
        let name = self.find("input[name=name]").await?;
        ensure!(
            name.prop("value").await?.as_deref() == Some(POOL),
            "the name typed was not kept"
        );

        self.fill("input[name=cidr]", CIDR).await?;
        self.press("Create pool").await?;
        self.page("pools-created", "/pools").await?;
        self.expect_flash(&format!("Created pool {POOL}")).await?;
        let table = self.text("table").await?;
        ensure!(
            table.contains(POOL) && table.contains(CIDR),
            "the pools table does not show {POOL} {CIDR}: {table}"
        );
        Ok(())
    }

    /// From the pool's link to its addresses, the next free address; returns it.
    async fn allocate(&mut self, hostname: &str, owner: &str) -> Result<String> {
        self.click("header nav a[href='/pools']").await?;
        self.page("pools", "/pools").await?;
        self.click(&format!("table a[href='/addresses?pool={POOL}']"))
            .await?;
        self.page("addresses-of-pool", "/addresses").await?;
        self.find("form.filters").await?;
        self.find("section.counts").await?;
        self.find("table.addresses").await?;

        let form = "form[action='/addresses/allocate']";
        // The form may sit folded in a disclosure, as a person would find it: unfold it.
        if !self.find(form).await?.is_displayed().await? {
            self.find_xpath("//details[.//form[@action='/addresses/allocate']]/summary")
                .await?
                .click()
                .await?;
        }
        self.select(&format!("{form} select[name=pool]"), POOL)
            .await?;
        self.fill(&format!("{form} [name=owner]"), owner).await?;
        self.fill(&format!("{form} [name=hostname]"), hostname)
            .await?;
        self.press("Allocate next free").await?;

        let ip = self.text("main h1").await?;
        let path = format!("/addresses/{ip}");
        self.page("address-allocated", &path).await?;
        self.expect_flash(&format!("Allocated {ip}")).await?;
        self.find(".badge.status-allocated").await?;
        let main = self.text("main").await?;
        ensure!(
            main.contains(hostname) && main.contains(owner),
            "the detail of {ip} does not show hostname {hostname} and owner {owner}"
        );
        Ok(ip)
    }

    /// All addresses, then only the allocated ones whose hostname starts with "web".
    async fn filter_the_table(&mut self) -> Result<()> {
        self.click("header nav a[href='/addresses']").await?;
        self.page("addresses", "/addresses").await?;
        let all = self.rows().await?;
        ensure!(
            all.iter().any(|r| r.contains("web-1")) && all.iter().any(|r| r.contains("db-1")),
            "the table does not show both allocations: {all:?}"
        );

        self.select("form.filters select[name=status]", "allocated")
            .await?;
        self.fill("form.filters input[name=q]", "web").await?;
        self.press("Filter").await?;
        self.page("addresses-filtered", "/addresses").await?;
        let url = self.client.current_url().await?;
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        for want in [("status", "allocated"), ("q", "web")] {
            ensure!(
                query.iter().any(|(k, v)| (k.as_str(), v.as_str()) == want),
                "the filter {want:?} is not in the URL {url}"
            );
        }
        let rows = self.rows().await?;
        ensure!(
            rows.len() == 1 && rows[0].contains("web-1"),
            "filtered on allocated + web, the table shows: {rows:?}"
        );
        let q = self.find("form.filters input[name=q]").await?;
        ensure!(
            q.prop("value").await?.as_deref() == Some("web"),
            "the search box lost what was typed"
        );
        Ok(())
    }

    /// A free address of the pool, reserved with a description; the change is in its history.
    async fn reserve_a_free_address(&mut self) -> Result<()> {
        self.select("form.filters select[name=pool]", POOL).await?;
        self.select("form.filters select[name=status]", "available")
            .await?;
        self.fill("form.filters input[name=q]", "").await?;
        self.press("Filter").await?;
        self.page("addresses-available", "/addresses").await?;
        let first_page = self.rows().await?;

        // The next page keeps the filter and goes on where the first one stopped.
        let next = self
            .wait_for(Locator::LinkText("Next"), "a link \"Next\"")
            .await?;
        self.navigate_by(next, "Next").await?;
        self.page("addresses-available-next", "/addresses").await?;
        let url = self.client.current_url().await?;
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        for key in ["pool", "status", "cursor"] {
            ensure!(
                query.iter().any(|(k, v)| k == key && !v.is_empty()),
                "the next page's URL has no {key}: {url}"
            );
        }
        let next_page = self.rows().await?;
        ensure!(
            !next_page.is_empty()
                && next_page.iter().all(|r| r.contains("available"))
                && next_page.iter().all(|r| !first_page.contains(r)),
            "the next page repeats the first or is not all available: {next_page:?}"
        );
        self.click("table.addresses tbody tr a[href^='/addresses/']")
            .await?;

        let ip = self.text("main h1").await?;
        let path = format!("/addresses/{ip}");
        self.page("address-available", &path).await?;
        self.find(".badge.status-available").await?;
        // The reserve form is the one whose hidden `action` says so.
        let reserve = "//form[.//input[@name='action' and @value='reserve']]";
        let description = format!("{reserve}//*[@name='description']");
        self.find_xpath(&description)
            .await?
            .send_keys(DESCRIPTION)
            .await?;
        self.press_in(reserve, "Reserve").await?;

        self.page("address-reserved", &path).await?;
        self.text("p.flash").await?;
        self.find(".badge.status-reserved").await?;
        let main = self.text("main").await?;
        ensure!(
            main.contains(DESCRIPTION),
            "the reserved address does not show its description"
        );
        let newest = self.text("ol.timeline li").await?;
        ensure!(
            newest.contains("reserved") && newest.contains(DESCRIPTION) && newest.contains(ADMIN),
            "the newest history entry does not tell who reserved it with which description: \
             {newest:?}"
        );
        Ok(())
    }

    /// The addresses page as a phone shows it, without scrolling sideways.
    async fn phone_width(&mut self) -> Result<()> {
        self.viewport(PHONE, true).await?;
        // Loaded anew, so the page lays itself out for the phone from the start (viewport meta).
        self.goto(&format!("/addresses?pool={POOL}")).await?;
        self.page("addresses-phone", "/addresses").await?;
        let width = self
            .client
            .execute("return document.documentElement.scrollWidth;", vec![])
            .await?;
        let width = width.as_u64().context("a page width")?;
        // The wide table may scroll inside its frame; the page itself must fit the phone.
        ensure!(
            width <= u64::from(PHONE.0),
            "at phone width ({} px) the page is {width} px wide: it scrolls sideways",
            PHONE.0
        );
        self.viewport(DESKTOP, false).await
    }

    /// Sets the page's viewport in CSS pixels; `mobile` makes Chromium lay pages out as a
    /// phone does (the viewport meta tag counts).
    async fn viewport(&self, (width, height): (u32, u32), mobile: bool) -> Result<()> {
        let metrics = json!({
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile,
        });
        self.cdp("Emulation.setDeviceMetricsOverride", metrics)
            .await?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Helpers: every failure names the page it happened on and what that page said.

    async fn goto(&self, path: &str) -> Result<()> {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .with_context(|| format!("opening {path}"))
    }

    /// A new page, answered with a success: see [`Walk::page_with_status`].
    async fn page(&mut self, name: &str, path: &str) -> Result<()> {
        self.page_with_status(name, path, None).await
    }

    /// A new page: saves its screenshot as the next step, checks it is at `path`, that it was
    /// answered with `status` (None: a success) and that the browser logged no error on it.
    async fn page_with_status(
        &mut self,
        name: &str,
        path: &str,
        status: Option<u16>,
    ) -> Result<()> {
        self.step += 1;
        let url = self.client.current_url().await?;
        println!("step {:2}: {name} at {url}", self.step);
        self.shot(name).await?;
        ensure!(
            url.path() == path,
            "expected to be at {path}, but the browser is at {url}\n{}",
            self.where_am_i().await
        );
        let console = self.console(url.as_str()).await?;
        ensure!(
            console.errors.is_empty(),
            "the browser logged errors on {name}: {:#?}",
            console.errors
        );
        ensure!(
            console.page_status == status,
            "{name} was answered with {}, not {}",
            console
                .page_status
                .map_or("a success".to_string(), |s| s.to_string()),
            status.map_or("a success".to_string(), |s| s.to_string())
        );
        Ok(())
    }

    /// Saves the whole page (not only the viewport) as `NN-name.png`.
    async fn shot(&self, name: &str) -> Result<PathBuf> {
        let path = self.shots.join(format!("{:02}-{name}.png", self.step));
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await
            .context("taking a screenshot")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().context("screenshot data")?)
            .context("decoding the screenshot")?;
        fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// A command of chromedriver's own for this session; returns its `value`.
    async fn chromedriver(&self, path: &str, body: Value) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}/{path}", self.session_url))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("chromedriver {path}"))?;
        let status = resp.status();
        let mut answer: Value = resp
            .json()
            .await
            .with_context(|| format!("chromedriver {path}: not JSON"))?;
        ensure!(
            status.is_success(),
            "chromedriver {path}: {status} {answer}"
        );
        Ok(answer["value"].take())
    }

    /// A Chrome DevTools command, through chromedriver.
    async fn cdp(&self, cmd: &str, params: Value) -> Result<Value> {
        self.chromedriver("goog/cdp/execute", json!({ "cmd": cmd, "params": params }))
            .await
    }

    /// What the browser's console says since the last look, of the page at `page_url`.
    async fn console(&self, page_url: &str) -> Result<Console> {
        let entries = self
            .chromedriver("log", json!({ "type": "browser" }))
            .await?;
        let mut console = Console::default();
        let severe = entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .filter_map(|e| e["message"].as_str());
        for message in severe {
            // "URL - Failed to load resource: the server responded with a status of 422 (...)"
            let failed_load =
                message
                    .split_once(" - Failed to load resource: ")
                    .and_then(|(url, rest)| {
                        let code = rest.split("status of ").nth(1)?.get(..3)?.parse().ok()?;
                        Some((url, code))
                    });
            match failed_load {
                Some((url, code)) if url == page_url => console.page_status = Some(code),
                // The browser asks for one on its own; weft has none.
                Some((url, 404)) if url.ends_with("/favicon.ico") => {}
                _ => console.errors.push(message.to_string()),
            }
        }
        Ok(console)
    }

    /// Where the browser is and what the page says, for an error message: a missing page shows
    /// its 404 text here.
    async fn where_am_i(&self) -> String {
        let url = match self.client.current_url().await {
            Ok(u) => u.to_string(),
            Err(e) => format!("(no URL: {e})"),
        };
        let title = self.client.title().await.unwrap_or_default();
        let text = match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let text: String = text.chars().take(400).collect();
        format!("(on {url}, title {title:?}, page text: {text:?})")
    }

    async fn wait_for(&self, locator: Locator<'_>, what: &str) -> Result<Element> {
        match self
            .client
            .wait()
            .at_most(PATIENCE)
            .every(Duration::from_millis(50))
            .for_element(locator)
            .await
        {
            Ok(e) => Ok(e),
            Err(e) => bail!("no {what}: {e}\n{}", self.where_am_i().await),
        }
    }

    async fn find(&self, css: &str) -> Result<Element> {
        self.wait_for(Locator::Css(css), &format!("`{css}`")).await
    }

    async fn find_xpath(&self, xpath: &str) -> Result<Element> {
        self.wait_for(Locator::XPath(xpath), &format!("`{xpath}`"))
            .await
    }

    async fn text(&self, css: &str) -> Result<String> {
        Ok(self.find(css).await?.text().await?.trim().to_string())
    }

    async fn fill(&self, css: &str, value: &str) -> Result<()> {
        let field = self.find(css).await?;
        field.clear().await?;
        if !value.is_empty() {
            field.send_keys(value).await?;
        }
        Ok(())
    }

    async fn select(&self, css: &str, value: &str) -> Result<()> {
        self.find(css)
            .await?
            .select_by_value(value)
            .await
            .with_context(|| format!("no option {value:?} in `{css}`"))
    }

    /// Clicks a link and waits for the next page.
    async fn click(&self, css: &str) -> Result<()> {
        let link = self.find(css).await?;
        self.navigate_by(link, css).await
    }

    /// Clicks the button labelled `label` and waits for the next page.
    async fn press(&self, label: &str) -> Result<()> {
        self.press_in("", label).await
    }

    /// Clicks the button labelled `label` inside the element at XPath `scope`.
    async fn press_in(&self, scope: &str, label: &str) -> Result<()> {
        let xpath = format!("{scope}//button[normalize-space(.)='{label}']");
        let button = self
            .wait_for(Locator::XPath(&xpath), &format!("button {label:?}"))
            .await?;
        self.navigate_by(button, label).await
    }

    /// Clicks, then waits until the old page is gone, so that what is read next is the new one
    /// (a form posted back to the same URL would fool a wait on the URL).
    async fn navigate_by(&self, target: Element, what: &str) -> Result<()> {
        let old = self.client.find(Locator::Css("html")).await?;
        target
            .click()
            .await
            .with_context(|| format!("clicking {what:?}"))?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            match old.tag_name().await {
                Err(e) if e.is_stale_element_reference() => return Ok(()),
                Err(e) => return Err(e).with_context(|| format!("after clicking {what:?}")),
                Ok(_) => {}
            }
            ensure!(
                Instant::now() < deadline,
                "clicking {what:?} loaded no new page (did the browser's own form validation \
                 stop it?)\n{}",
                self.where_am_i().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn expect_flash(&self, want: &str) -> Result<()> {
        let flash = self.text("p.flash").await?;
        ensure!(flash.contains(want), "flash {flash:?}, expected {want:?}");
        Ok(())
    }

    /// The text of each row of the addresses table.
    async fn rows(&self) -> Result<Vec<String>> {
        self.find("table.addresses").await?;
        let mut rows = Vec::new();
        for row in self
            .client
            .find_all(Locator::Css("table.addresses tbody tr"))
            .await?
        {
            rows.push(row.text().await?);
        }
        Ok(rows)
    }
}
