//! The web pages' foundation against the real binary: `weft user add` with and without a
//! running server, logging in over HTTP, and the first-run setup link from the log.

use crate::support::{Server, WEFT};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const PASSWORD: &str = "correct horse battery";

/// Runs `weft user add NAME --role ROLE --data-dir DIR` with `stdin` piped in.
fn user_add(data_dir: &Path, name: &str, role: &str, stdin: &str) -> Output {
    let mut child = Command::new(WEFT)
        .args(["user", "add", name, "--role", role, "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write the password");
    child.wait_with_output().expect("weft user add")
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn cookie_of(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + 64].to_string()
}

/// Logs in over HTTP; returns the status and, on success, the session cookie.
async fn login(s: &Server, name: &str, password: &str) -> (StatusCode, Option<String>) {
    let c = client();
    let form = c.get(s.url("/login")).send().await.expect("login form");
    let csrf_cookie = cookie_of(&form, "weft_csrf").expect("csrf cookie");
    let csrf = csrf_in(&form.text().await.expect("html"));
    let resp = c
        .post(s.url("/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(COOKIE, csrf_cookie)
        .body(format!(
            "csrf={csrf}&name={name}&password={}",
            password.replace(' ', "+")
        ))
        .send()
        .await
        .expect("login");
    (resp.status(), cookie_of(&resp, "weft_session"))
}

#[tokio::test]
async fn user_add_works_with_and_without_a_running_server() {
    let mut s = Server::start().await;
    s.kill();
    let out = user_add(&s.data_dir(), "ann", "viewer", &format!("{PASSWORD}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!printed.contains(PASSWORD), "the password was echoed");

    s.restart().await;
    let out = user_add(&s.data_dir(), "bob", "admin", &format!("{PASSWORD}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for name in ["ann", "bob"] {
        let (status, cookie) = login(&s, name, PASSWORD).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{name}");
        let cookie = cookie.expect("a session cookie");
        let page = client()
            .get(s.url("/"))
            .header(COOKIE, cookie)
            .send()
            .await
            .expect("dashboard");
        assert_eq!(page.status(), StatusCode::OK);
        assert!(
            page.text()
                .await
                .expect("html")
                .contains(&format!(">{name}<"))
        );
    }
    let (status, _) = login(&s, "ann", "wrong password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let taken = user_add(&s.data_dir(), "ann", "admin", &format!("{PASSWORD}\n"));
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already taken"));
    let empty = user_add(&s.data_dir(), "eve", "admin", "\n");
    assert!(!empty.status.success());

    let log = std::fs::read_dir(s.dir.path())
        .expect("logs")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("serve-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(!log.contains(PASSWORD), "the password reached the log");
}

#[tokio::test]
async fn setup_link_from_the_log_creates_the_first_admin_once() {
    let s = Server::start().await;
    let log = std::fs::read_dir(s.dir.path())
        .expect("logs")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("serve-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    let at = log.find("/setup/").expect("a setup link in the log") + 7;
    let token = &log[at..at + 64];
    let path = format!("/setup/{token}");

    let c = client();
    let form = c.get(s.url(&path)).send().await.expect("setup form");
    assert_eq!(form.status(), StatusCode::OK);
    let csrf_cookie = cookie_of(&form, "weft_csrf").expect("csrf cookie");
    let csrf = csrf_in(&form.text().await.expect("html"));
    let pw = PASSWORD.replace(' ', "+");
    let resp = c
        .post(s.url(&path))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(COOKIE, &csrf_cookie)
        .body(format!("csrf={csrf}&name=root&password={pw}&confirm={pw}"))
        .send()
        .await
        .expect("setup");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers().get(LOCATION).expect("location"), "/");
    assert!(cookie_of(&resp, "weft_session").is_some());

    assert_eq!(
        c.get(s.url(&path)).send().await.expect("again").status(),
        StatusCode::NOT_FOUND
    );
    let (status, _) = login(&s, "root", PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}
