//! `prober dashboard` in a real browser: headless Chromium loads the page
//! against real `prober run` workers on the embedded store (the
//! configuration a new user starts with: no Redis, no AWS) and the test
//! checks what a person sees. Chromium is the Debian package `chromium`,
//! which `scripts/test.sh` installs; without it these tests skip with a
//! message, except under CI, where they fail.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use origin_router::document::{OriginState, RankedOrigin, RankingDocument};
use origin_router::sample::unix_millis_now;
use origin_router::store::{PoolRankings, RankingStore, StoreError, WriteOutcome};
use origin_router_tests::{loopback, Mode, TestOrigin};
use tokio::time::Instant;

/// The browser, or `None` (with a message) when there is none and this is
/// not CI. `ORIGIN_ROUTER_CHROMIUM` names one explicitly.
fn chromium() -> Option<PathBuf> {
    let named = std::env::var_os("ORIGIN_ROUTER_CHROMIUM").map(PathBuf::from);
    let found = named.into_iter().chain(
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .flat_map(|name| {
                std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |dir| dir.join(name))
            }),
    );
    for path in found {
        if path.is_file() {
            return Some(path);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("chromium not found and CI is set: install the Debian package `chromium` (scripts/test.sh does)");
    }
    eprintln!("SKIPPED: chromium not found (install the Debian package `chromium`, or run scripts/test.sh)");
    None
}

/// Runs headless Chromium on `url` with `args` (a fresh profile each time,
/// so runs never share state), killed if it takes longer than a minute.
///
/// `virtual_ms` is Chromium's virtual-time budget: the page's timers run
/// on virtual time, which stands still while a fetch is pending. The page
/// waits 250 virtual ms between requests and each request long-polls for
/// the next snapshot in real time, so a budget of `4 * n * 250` ms keeps
/// the page live for about `n` dashboard polls of real time.
async fn browse(browser: &Path, url: &str, args: &[&str], virtual_ms: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-sync",
    ])
    .arg(format!("--virtual-time-budget={virtual_ms}"))
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .stdin(Stdio::null())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("chromium finishes within a minute")
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM of a fresh page load, once it has rendered a snapshot.
async fn dom(browser: &Path, url: &str) -> String {
    browse(browser, url, &["--dump-dom"], 500).await
}

/// The matrix row of `region` in the dumped DOM.
fn row<'a>(dom: &'a str, region: &str) -> Option<&'a str> {
    let start = dom.find("<tr class=\"ranking")?;
    let rows = &dom[start..];
    rows.split("</tr>")
        .find(|r| r.contains(&format!("data-region=\"{region}\"")))
}

/// What the "uses" column of `region`'s row says.
fn uses(dom: &str, region: &str) -> Option<String> {
    let r = row(dom, region)?;
    let at = r.find("<td class=\"top-name\">")? + "<td class=\"top-name\">".len();
    Some(r[at..].split('<').next()?.to_string())
}

/// The state shown in `region`'s cell of `origin`.
fn state(dom: &str, region: &str, origin: &str) -> Option<String> {
    let r = row(dom, region)?;
    let at = r.find(&format!("data-origin=\"{origin}\" data-state=\""))?;
    let rest = &r[at + format!("data-origin=\"{origin}\" data-state=\"").len()..];
    Some(rest.split('"').next()?.to_string())
}

fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Starts `prober dashboard` and returns it with its URL (from its first
/// line on stdout).
fn dashboard(config: &Path) -> (Proc, String) {
    let mut child = Command::new(prober_binary())
        .args([
            "dashboard",
            "--listen",
            "127.0.0.1:0",
            "--poll",
            "500ms",
            "--config",
        ])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .strip_prefix("dashboard: ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no URL in `{line}`"))
        .to_string();
    (Proc(child), url)
}

/// Two regions (us-east-1 probing from 127.0.0.2, eu-west-1 from
/// 127.0.0.3), origins `a` (near the first) and `b` (near the second),
/// one `prober run` each, and the dashboard, all on one embedded store.
/// The page names each region's top origin and plots a series per origin
/// per region; after `a` fails, a page loaded within 5 s shows it down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_page_shows_each_regions_top_and_an_origin_going_down() {
    let Some(browser) = chromium() else { return };
    let origins = origins([&[(2, 5), (3, 60)], &[(2, 60), (3, 5)], &[]]).await;
    let origins = &origins[..2];
    let dir = tempfile::tempdir().unwrap();
    let mut workers = Vec::new();
    let mut first_config = None;
    for (region, source) in [("us-east-1", 2), ("eu-west-1", 3)] {
        let mut c = config(origins, &format!("{region}-w"), Some(source), None);
        c.prober.region = Some(region.into());
        c.store.dynamodb_table = None;
        c.store.embedded_path = dir.path().join("store");
        // Unset, a config file means the default port: each its own.
        c.prober.metrics_listen = Some(free_addr());
        let path = write_config(&c, dir.path(), region);
        workers.push(Proc(
            Command::new(prober_binary())
                .args(["run", "--config"])
                .arg(&path)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        first_config.get_or_insert(path);
    }
    let (_dashboard, url) = dashboard(first_config.as_ref().unwrap());

    // Both regions ranked, as the page's own JSON says.
    let state_url = format!("{url}api/state");
    let ready = eventually(Duration::from_secs(20), || async {
        let body = reqwest::get(&state_url).await.ok()?.text().await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let n = v["pools"][0]["rankings"].as_array()?.len();
        let points = v["pools"][0]["series"].as_array()?.len();
        (n == 2 && points == 4).then_some(())
    })
    .await;
    if ready.is_none() {
        let body = reqwest::get(&state_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        panic!("the dashboard never saw both regions:\n{body}");
    }

    let page = dom(&browser, &url).await;
    assert_eq!(uses(&page, "us-east-1").as_deref(), Some("a"), "{page}");
    assert_eq!(uses(&page, "eu-west-1").as_deref(), Some("b"), "{page}");
    assert!(
        page.contains(r#"class="cell healthy top" data-origin="a" data-state="healthy""#),
        "{page}"
    );
    for origin in ["a", "b"] {
        for region in ["us-east-1", "eu-west-1"] {
            let series = format!(
                r#"data-origin="{origin}" data-region="{region}"><title>{origin} from {region}</title></path>"#
            );
            assert!(
                page.contains(&series),
                "no plotted series {origin}/{region}:\n{page}"
            );
        }
    }

    // A page opened before the failure and left open (about 10 s of
    // real time; see `browse`).
    let live = {
        let (browser, url) = (browser.clone(), url.clone());
        tokio::spawn(async move { browse(&browser, &url, &["--dump-dom"], 5_000).await })
    };
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    origins[0].set_mode(Mode::Stopped);
    let failed_ms = unix_millis_now();
    let failed_at = Instant::now();
    // The page stamps the snapshot it shows (`body data-updated`: the
    // dashboard's clock when it built it). A page open at the failure
    // polls every 500 ms here, so it shows the origin down at most that
    // long after the first snapshot that has it down: that snapshot must
    // come within 4.5 s of the failure for the page to show it within 5 s.
    // (Chromium's own start-up for each fresh load is no part of what a
    // person with the page open waits for.)
    let mut shown = None;
    while shown.is_none() && failed_at.elapsed() <= Duration::from_secs(15) {
        let page = dom(&browser, &url).await;
        if state(&page, "us-east-1", "a").as_deref() == Some("down")
            && uses(&page, "us-east-1").as_deref() == Some("b")
        {
            shown = Some(page);
        }
    }
    let page = shown.expect("the page never showed `a` down");
    let snapshot_ms: u64 = page
        .split_once("data-updated=\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no snapshot stamp:\n{page}"));
    let after = Duration::from_millis(snapshot_ms.saturating_sub(failed_ms));
    eprintln!("the page showed `a` down in a snapshot taken {after:?} after its failure");
    assert!(
        after <= Duration::from_millis(4_500),
        "the first snapshot showing `a` down came {after:?} after the failure"
    );
    assert_eq!(
        state(&page, "eu-west-1", "a").as_deref(),
        Some("down"),
        "{page}"
    );
    assert!(
        page.contains("a healthy → down"),
        "no change marker:\n{page}"
    );

    // The page left open updated itself: it first showed a snapshot from
    // before the failure, and now shows `a` down.
    let open = live.await.unwrap();
    let stamp = |name: &str| -> u64 {
        open.split_once(&format!("data-{name}=\""))
            .and_then(|(_, rest)| rest.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no data-{name}:\n{open}"))
    };
    assert!(
        stamp("first") < failed_ms && stamp("updated") > failed_ms,
        "the open page did not span the failure: first {} updated {} failed {failed_ms}",
        stamp("first"),
        stamp("updated")
    );
    assert_eq!(
        state(&open, "us-east-1", "a").as_deref(),
        Some("down"),
        "{open}"
    );
    assert_eq!(uses(&open, "us-east-1").as_deref(), Some("b"), "{open}");
    eprintln!(
        "the page left open went from a snapshot {} ms before the failure to one {} ms after",
        failed_ms - stamp("first"),
        stamp("updated") - failed_ms
    );

    // Let the plot show a little of the time after, then keep a picture.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &browser,
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,1100",
        ],
        500,
    )
    .await;
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    eprintln!("screenshot: {}", shot.display());
    drop(workers);
}

/// A store the dashboard reads: rankings given by hand (past every check
/// a real store makes), the entries it reports skipped, and, when
/// `answers` is set, a store that answers that many reads and then
/// accepts and never answers.
#[derive(Default)]
struct HandWritten {
    docs: Vec<RankingDocument>,
    skipped: Vec<(String, String)>,
    answers: Option<u32>,
    reads: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl RankingStore for HandWritten {
    async fn read_pool(&self, pool: &str) -> Result<PoolRankings, StoreError> {
        let read = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.answers.is_some_and(|n| read >= n) {
            std::future::pending::<()>().await;
        }
        Ok(PoolRankings {
            rankings: self
                .docs
                .iter()
                .filter(|d| d.pool == pool)
                .cloned()
                .collect(),
            skipped: self.skipped.clone(),
            ..Default::default()
        })
    }
    async fn write(&self, _: &RankingDocument) -> Result<WriteOutcome, StoreError> {
        unreachable!("the dashboard never writes")
    }
    async fn delete(&self, _: &str, _: &str) -> Result<bool, StoreError> {
        unreachable!("the dashboard never deletes")
    }
    async fn list_pools(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.docs.iter().map(|d| d.pool.clone()).collect())
    }
    async fn put_control(
        &self,
        _: &origin_router::control::Control,
        _: bool,
    ) -> Result<origin_router::store::ControlWrite, StoreError> {
        unreachable!("the dashboard never sets a control")
    }
    async fn delete_control(&self, _: &str, _: &str) -> Result<bool, StoreError> {
        unreachable!("the dashboard never removes a control")
    }
}

const HOSTILE: &str =
    r#"<script>document.title='PWNED'</script><img src=x onerror="document.body.dataset.pwned=1">"#;
const ESCAPED: &str = r#"&lt;script&gt;document.title='PWNED'&lt;/script&gt;&lt;img src=x onerror="document.body.dataset.pwned=1"&gt;"#;

fn assert_no_script_ran(page: &str) {
    assert!(
        page.contains("<title>Origin Router status</title>"),
        "{page}"
    );
    assert!(!page.contains("data-pwned"), "injected script ran:\n{page}");
    assert!(
        !page.contains("<script>document"),
        "injected element:\n{page}"
    );
    assert!(
        !page.contains("<img src=\"x\""),
        "injected element:\n{page}"
    );
}

/// Hostile strings in every field the page shows (pool, region, origin,
/// skipped entry and reason) appear as text and run nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_in_rankings_are_shown_as_text_and_run_nothing() {
    let Some(browser) = chromium() else { return };
    let now = unix_millis_now();
    let mut doc = RankingDocument::new(
        HOSTILE,
        HOSTILE,
        1,
        now,
        vec![RankedOrigin::measured(
            HOSTILE,
            OriginState::Healthy,
            12.0,
            1,
        )],
    );
    doc.origins[0].last_failure = Some(origin_router::sample::FailureClass::Reset);
    let store: Arc<dyn RankingStore> = Arc::new(HandWritten {
        docs: vec![doc],
        // The page must still show each string as text (real stores
        // refuse such names; the page does not rely on it).
        skipped: vec![(HOSTILE.into(), format!("reason {HOSTILE}"))],
        ..Default::default()
    });
    let options = prober::dashboard::Options {
        listen: (loopback(1), 0).into(),
        poll: Duration::from_millis(500),
        max_age: Duration::from_secs(30),
        store_label: HOSTILE.into(),
        pools: Default::default(),
    };
    let dashboard = prober::dashboard::Dashboard::start(store, options)
        .await
        .unwrap();
    let page = dom(&browser, &dashboard.url()).await;
    assert_no_script_ran(&page);
    // Shown: as the pool's heading, the region's row, the origin's column
    // and top, the plot's legend, the skipped list and the status line.
    let shown = page.matches(ESCAPED).count();
    assert!(shown >= 7, "hostile text shown {shown} times:\n{page}");
    assert!(page.contains(&format!("<h2>Pool {ESCAPED}</h2>")), "{page}");
    assert!(
        page.contains(&format!("<td class=\"top-name\">{ESCAPED}</td>")),
        "{page}"
    );
}

/// The same through the shipped binary and a real embedded store: a
/// ranking file holding a hostile origin id is skipped with a reason that
/// quotes it, and the page shows that reason as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_ranking_file_is_listed_as_unreadable_in_plain_text() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let origin = TestOrigin::start((loopback(1), 0).into(), Mode::Ok)
        .await
        .unwrap();
    let mut c = config(std::slice::from_ref(&origin), "w", None, None);
    c.store.dynamodb_table = None;
    c.store.embedded_path = store.clone();
    let path = write_config(&c, dir.path(), "dash");
    let mut doc = RankingDocument::new(
        "web",
        REGION,
        1,
        unix_millis_now(),
        vec![RankedOrigin::measured("a", OriginState::Healthy, 3.0, 1)],
    );
    doc.origins[0].id = "<script>document.title='PWNED'</script>".into();
    std::fs::create_dir_all(store.join("web")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        store.join("web").join(format!("{REGION}.json")),
        serde_json::to_vec(&doc).unwrap(),
    )
    .unwrap();
    let (_dashboard, url) = dashboard(&path);
    let page = dom(&browser, &url).await;
    assert_no_script_ran(&page);
    assert!(
        page.contains("web/eu-west-1: origins[0].id: `&lt;script&gt;document.title='PWNED'&lt;/script&gt;` is not a valid name"),
        "{page}"
    );
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A store that stops answering: the page keeps serving, says the read
/// failed, and keeps the last good ranking; writes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_answers_leaves_the_last_good_rankings_on_the_page() {
    let doc = RankingDocument::new(
        "web",
        REGION,
        1,
        unix_millis_now(),
        vec![RankedOrigin::measured("a", OriginState::Healthy, 4.0, 1)],
    );
    let store = Arc::new(HandWritten {
        docs: vec![doc],
        answers: Some(1),
        ..Default::default()
    });
    let options = prober::dashboard::Options {
        listen: (loopback(1), 0).into(),
        poll: Duration::from_millis(200),
        max_age: Duration::from_secs(30),
        store_label: "silent".into(),
        pools: Default::default(),
    };
    let dashboard = prober::dashboard::Dashboard::start(store, options)
        .await
        .unwrap();
    let url = format!("{}api/state", dashboard.url());
    let failed = eventually(
        prober::dashboard::READ_TIMEOUT + Duration::from_secs(5),
        || async {
            let (_, body) = get(&url).await;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            v["error"].as_str().is_some().then_some(v)
        },
    )
    .await
    .expect("the page says the store did not answer");
    assert!(
        failed["error"].as_str().unwrap().contains("did not answer"),
        "{failed}"
    );
    assert_eq!(failed["pools"][0]["rankings"][0]["top"], "a", "{failed}");
    // Read-only, and the page itself still answers with its headers.
    let client = reqwest::Client::new();
    let post = client.post(&url).body("x").send().await.unwrap();
    assert_eq!(post.status().as_u16(), 405);
    let page = client.get(dashboard.url()).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
    assert_eq!(page.status().as_u16(), 200);

    // A page whose name was rebound to this loopback address gets nothing.
    let rebound = raw_get(dashboard.addr(), "/api/state", "evil.example");
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    assert!(!rebound.contains("\"pools\""), "{rebound}");
    let local = raw_get(dashboard.addr(), "/api/state", "localhost");
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");
}

/// One HTTP/1.1 GET with the given Host header, the whole answer as text.
fn raw_get(addr: std::net::SocketAddr, path: &str, host: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// Bad arguments are refused with the reason, before anything starts.
#[test]
fn bad_dashboard_arguments_are_refused_with_the_reason() {
    for (args, says) in [
        (vec!["--poll", "0s"], "outside 200ms..=1h"),
        (vec!["--poll", "forever"], "--poll"),
        (vec!["--listen", "localhost"], "--listen"),
        (
            vec!["--config", "/nonexistent/origin-router.toml"],
            "/nonexistent/origin-router.toml",
        ),
    ] {
        let out = Command::new(prober_binary())
            .arg("dashboard")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // A port already in use is named.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[pools.web]\norigins = [{{ id = \"a\", host = \"127.0.0.1\", port = 8080, protocol = \"http\" }}]\n[store]\nembedded_path = \"{}\"\n",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let out = Command::new(prober_binary())
        .args(["dashboard", "--listen", &addr, "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("dashboard on {addr}")), "{stderr}");
}
