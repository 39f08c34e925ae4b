//! vote: the form, the cookie, the JSON pushed onto `votes`, a Redis client per request.

use crate::apps_client;
use crate::sandbox::{Sandbox, env, queued};
use crate::{OTHER_REDIS, REDIS};
use std::time::Duration;

const BASE: &str = "http://127.0.0.1/";

fn payload(voter_id: &str, vote: &str) -> String {
    // json.dumps' default spacing, as the original writes it.
    format!(r#"{{"voter_id": "{voter_id}", "vote": "{vote}"}}"#)
}

#[tokio::test]
async fn vote_queues_json_in_redis_and_keeps_the_voter_cookie() {
    let Some(env) = env() else { return };
    let sb = Sandbox::new(env, "vote");
    sb.map("redis", REDIS);
    let redis = sb.redis(REDIS);
    let _vote = sb.standin("vote", &[("OPTION_A", "Tea"), ("OPTION_B", "Coffee")]);
    sb.wait_listening(80);

    // The page shows the options from the environment and hands out a voter id.
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(BASE)
        .send()
        .await
        .expect("GET /");
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    let page = resp.text().await.expect("page");
    assert!(page.contains("Tea") && page.contains("Coffee"), "{page}");
    let fresh = cookie
        .strip_prefix("voter_id=")
        .and_then(|c| c.split(';').next())
        .expect("a voter_id cookie");
    // 64 random bits in hex with the last digit cut off, as the original does.
    assert!(
        !fresh.is_empty() && fresh.len() <= 15 && fresh.chars().all(|c| c.is_ascii_hexdigit()),
        "{cookie}"
    );
    assert!(queued(REDIS).is_empty(), "a GET queued something");

    // A new voter gets an id, and the vote is queued under it before the 200.
    let id = apps_client::vote(BASE, None, "a").await.expect("vote a");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(queued(REDIS), vec![payload(&id, "a")]);

    // A returning voter keeps their id.
    let again = apps_client::vote(BASE, Some("cafe42"), "b")
        .await
        .expect("vote b");
    assert_eq!(again, "cafe42");
    assert_eq!(
        queued(REDIS),
        vec![payload(&id, "a"), payload("cafe42", "b")]
    );

    // Every request resolves `redis` again: once the name moves, the next vote goes there.
    let other = sb.redis(OTHER_REDIS);
    sb.map("redis", OTHER_REDIS);
    apps_client::vote(BASE, Some("cafe42"), "a")
        .await
        .expect("vote after the move");
    assert_eq!(queued(OTHER_REDIS), vec![payload("cafe42", "a")]);
    assert_eq!(queued(REDIS).len(), 2, "the old server got the vote");

    // Without a Redis to push to there is no 200: a 200 means queued.
    drop(other);
    let refused = apps_client::vote(BASE, Some("cafe42"), "b").await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("500")),
        "{refused:?}"
    );

    // A form without `vote` is a bad request, as Flask answers.
    let bad = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .post(BASE)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("choice=a")
        .send()
        .await
        .expect("POST without vote");
    assert_eq!(bad.status(), 400);
    drop(redis);
}
