//! gb-frontend: writes to `redis-leader`, reads from `redis-follower`, key `guestbook`.

use crate::apps_client::{guestbook_get, guestbook_set};
use crate::sandbox::{Sandbox, env, redis_query};
use crate::{FOLLOWER, OTHER_REDIS};

const BASE: &str = "http://127.0.0.1/";
const LEADER: &str = OTHER_REDIS;

fn get(ip: &str, key: &str) -> Option<String> {
    redis_query(ip, &["GET", key]).expect("GET")
}

#[tokio::test]
async fn gb_frontend_writes_to_the_leader_name_and_reads_from_the_follower_name() {
    let Some(env) = env() else { return };
    let sb = Sandbox::new(env, "gb-frontend");
    // Two servers that do not replicate: what is read proves which name was used.
    let leader = sb.redis(LEADER);
    let follower = sb.redis(FOLLOWER);
    sb.map("redis-leader", LEADER);
    sb.map("redis-follower", FOLLOWER);
    let mut frontend = sb.standin("gb_frontend", &[("GET_HOSTS_FROM", "dns")]);
    sb.wait_listening(80);

    guestbook_set(BASE, "hello, world & more")
        .await
        .expect("set");
    // Always the key `guestbook`: the `key=messages` the client also sends is ignored.
    assert_eq!(
        get(LEADER, "guestbook").as_deref(),
        Some("hello, world & more")
    );
    assert_eq!(get(LEADER, "messages"), None);
    assert_eq!(get(FOLLOWER, "guestbook"), None, "written to the follower");
    assert_eq!(
        guestbook_get(BASE).await.expect("get"),
        "",
        "read from the leader"
    );
    redis_query::<String>(FOLLOWER, &["SET", "guestbook", "from the follower"]).expect("SET");
    assert_eq!(guestbook_get(BASE).await.expect("get"), "from the follower");

    // Redis gone: PHP's fatal error in a 200, which the client reports as a failure.
    drop(follower);
    let failed = guestbook_get(BASE).await;
    assert!(
        failed.as_ref().is_err_and(|e| e.contains("Fatal error")),
        "{failed:?}"
    );
    frontend.stop();

    // GET_HOSTS_FROM=env: the addresses come from the Service environment variables.
    let _follower = sb.redis(FOLLOWER);
    sb.map("redis-leader", "127.0.0.99");
    sb.map("redis-follower", "127.0.0.99");
    let _frontend = sb.standin(
        "gb_frontend",
        &[
            ("GET_HOSTS_FROM", "env"),
            ("REDIS_LEADER_SERVICE_HOST", LEADER),
            ("REDIS_FOLLOWER_SERVICE_HOST", FOLLOWER),
        ],
    );
    sb.wait_listening(80);
    guestbook_set(BASE, "by env").await.expect("set by env");
    assert_eq!(get(LEADER, "guestbook").as_deref(), Some("by env"));
    redis_query::<String>(FOLLOWER, &["SET", "guestbook", "follower by env"]).expect("SET");
    assert_eq!(
        guestbook_get(BASE).await.expect("get by env"),
        "follower by env"
    );
    drop(leader);
}
