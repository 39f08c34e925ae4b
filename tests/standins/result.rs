//! result: the tally over socket.io (Engine.IO 4 polling), one Postgres client for life.

use crate::DB;
use crate::apps_client::{self, SocketIo, Tally};
use crate::sandbox::{Postgres, Sandbox, env, wait};
use std::time::Duration;

const BASE: &str = "http://127.0.0.1/";
const CREATE: &str =
    "CREATE TABLE votes (id VARCHAR(255) NOT NULL UNIQUE, vote VARCHAR(255) NOT NULL)";

fn tally(a: u64, b: u64) -> Tally {
    [("a".to_string(), a), ("b".to_string(), b)].into()
}

/// The backend serving the result page's query (it sets no application_name).
fn backend(pg: &Postgres) -> Option<i32> {
    pg.psql("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT vote, COUNT(id)%'")
        .ok()?
        .parse()
        .ok()
}

/// Keeps a backend stopped (SIGSTOP) until dropped, so it is never left stopped.
struct Paused(i32);

impl Paused {
    fn new(pid: i32) -> Self {
        // SAFETY: kill(2) on a backend of the PostgreSQL server this test started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Self(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[tokio::test]
async fn result_pushes_the_tally_over_socketio_from_one_connection() {
    let Some(env) = env() else { return };
    let sb = Sandbox::new(env, "result-tally");
    sb.map("db", DB);
    let pg = sb.postgres(DB);
    // No PORT: the image's default, 80.
    let result = sb.standin("result", &[]);
    sb.wait_listening(80);

    // Before the worker made the table, queries fail and are only logged.
    result.wait_log("Error performing query", Duration::from_secs(10));
    let first = wait("the result's backend", Duration::from_secs(10), || {
        backend(&pg)
    });

    // A client is greeted, then gets the tally every second once the table exists.
    let io = SocketIo::connect(BASE).await.expect("socket.io connect");
    let events = io.poll().await.expect("first poll");
    assert!(
        events
            .iter()
            .any(|(name, args)| name == "message"
                && args == &[serde_json::json!({"text": "Welcome!"})]),
        "{events:?}"
    );
    pg.psql(CREATE).expect("create table");
    pg.psql("INSERT INTO votes VALUES ('v1','a'),('v2','a'),('v3','b'),('v4','a'),('v5','b')")
        .expect("insert");
    apps_client::wait_for_tally(BASE, &tally(3, 2), Duration::from_secs(10))
        .await
        .expect("the tally");
    let scores = io
        .next_scores(Duration::from_secs(5))
        .await
        .expect("scores");
    assert_eq!(scores, tally(3, 2));

    // Options other than a and b are counted under their own name, as in server.js.
    pg.psql("INSERT INTO votes VALUES ('v6','c')")
        .expect("insert c");
    let with_c: Tally = [("a".into(), 3), ("b".into(), 2), ("c".into(), 1)].into();
    apps_client::wait_for_tally(BASE, &with_c, Duration::from_secs(10))
        .await
        .expect("the tally with c");

    // Still the same connection: errors did not make it reconnect.
    assert_eq!(backend(&pg), Some(first), "the result page reconnected");

    // Engine.IO's refusals, so a client learns what is wrong.
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for (query, want) in [
        ("EIO=4&transport=polling&sid=nope", "Session ID unknown"),
        ("EIO=3&transport=polling", "Unsupported protocol version"),
    ] {
        let resp = http
            .get(format!("{BASE}socket.io/?{query}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 400);
        assert!(resp.text().await.expect("body").contains(want));
    }
    let page = http.get(BASE).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
}

#[tokio::test]
async fn result_never_reconnects_and_dies_with_its_connection() {
    let Some(env) = env() else { return };
    let sb = Sandbox::new(env, "result-conn");
    sb.map("db", DB);
    let mut pg = sb.postgres(DB);
    pg.psql(CREATE).expect("create table");
    pg.psql("INSERT INTO votes VALUES ('v1','a')")
        .expect("insert");
    let mut result = sb.standin("result", &[("PORT", "8081")]);
    let base = "http://127.0.0.1:8081/";
    sb.wait_listening(8081);
    apps_client::wait_for_tally(base, &tally(1, 0), Duration::from_secs(10))
        .await
        .expect("the tally");
    let pid = backend(&pg).expect("the result's backend");

    // Its server hangs without closing the connection: the query waits, the tally freezes.
    let paused = Paused::new(pid);
    std::thread::sleep(Duration::from_millis(1500));
    pg.psql("INSERT INTO votes VALUES ('v2','b')")
        .expect("insert");
    let frozen = apps_client::tally(base, Duration::from_secs(3)).await;
    assert!(frozen.is_err(), "scores kept coming: {frozen:?}");
    // Back, it carries on over the same connection.
    drop(paused);
    apps_client::wait_for_tally(base, &tally(1, 1), Duration::from_secs(10))
        .await
        .expect("the tally after the pause");
    assert_eq!(backend(&pg), Some(pid), "the result page reconnected");

    // Its server closes the connection (a restart): pg emits an error nothing handles, Node
    // exits 1 (checked against the real server.js), and only a container restart reconnects.
    pg.stop();
    let status = result
        .wait_exit(Duration::from_secs(10))
        .expect("the result page to exit");
    assert_eq!(status.code(), Some(1), "{}", result.log());
    // Node's words, then the server's reason.
    let log = result.log();
    assert!(
        log.contains("Unhandled 'error' event")
            && log.contains("error: terminating connection due to administrator command"),
        "{log}"
    );
    pg.start();
    let _again = sb.standin("result", &[("PORT", "8081")]);
    apps_client::wait_for_tally(base, &tally(1, 1), Duration::from_secs(15))
        .await
        .expect("the tally after a container restart");
}
