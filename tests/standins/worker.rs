//! worker: Redis `votes` into the Postgres `votes` table, insert-else-update by voter id, and
//! the original's failure modes (resolve once, drop the held vote, exit 1 on other errors).

use crate::apps_client;
use crate::sandbox::{Sandbox, env, queued, redis_query, wait};
use crate::{DB, OTHER_REDIS, REDIS};
use std::collections::BTreeMap;
use std::time::Duration;

const BASE: &str = "http://127.0.0.1/";

fn payload(voter_id: &str, vote: &str) -> String {
    format!(r#"{{"voter_id": "{voter_id}", "vote": "{vote}"}}"#)
}

#[tokio::test]
async fn worker_waits_for_postgres_then_counts_each_voter_once() {
    let Some(env) = env() else { return };
    let sb = Sandbox::new(env, "worker-dedup");
    sb.map("redis", REDIS);
    sb.map("db", DB);
    let _redis = sb.redis(REDIS);
    let _vote = sb.standin("vote", &[]);
    let worker = sb.standin("worker", &[]);
    sb.wait_listening(80);

    // Postgres first, retried every second until it answers.
    worker.wait_log("Waiting for db", Duration::from_secs(10));
    let pg = sb.postgres(DB);
    worker.wait_log("Found redis at 127.0.0.2", Duration::from_secs(10));

    // Twelve voters; some change their mind, one votes the same twice. The last vote counts.
    let mut want = BTreeMap::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        let choice = if i % 3 == 0 { "b" } else { "a" };
        let id = apps_client::vote(BASE, None, choice).await.expect("vote");
        want.insert(id.clone(), choice.to_string());
        ids.push(id);
    }
    for (id, choice) in [
        (&ids[0], "a"),
        (&ids[1], "b"),
        (&ids[2], "b"),
        (&ids[4], "a"),
    ] {
        apps_client::vote(BASE, Some(id), choice)
            .await
            .expect("vote again");
        want.insert(id.clone(), choice.to_string());
    }
    let want: Vec<(String, String)> = want.into_iter().collect();
    let rows = wait(
        "the worker to drain the queue",
        Duration::from_secs(30),
        || {
            let rows = pg.votes();
            (queued(REDIS).is_empty() && rows == want).then_some(rows)
        },
    );
    assert_eq!(rows.len(), 12);
    let schema = pg
        .psql(
            "SELECT column_name, data_type, character_maximum_length, is_nullable \
             FROM information_schema.columns WHERE table_name = 'votes' ORDER BY ordinal_position",
        )
        .expect("schema");
    assert_eq!(
        schema,
        "id|character varying|255|NO\nvote|character varying|255|NO"
    );
    let unique = pg
        .psql("SELECT count(*) FROM pg_indexes WHERE tablename = 'votes' AND indexdef LIKE 'CREATE UNIQUE INDEX%(id)'")
        .expect("indexes");
    assert_eq!(unique, "1", "id is UNIQUE");
}

#[tokio::test]
async fn worker_loses_the_vote_it_holds_when_postgres_goes_away() {
    let Some(env) = env() else { return };
    let sb = Sandbox::new(env, "worker-pg-lost");
    sb.map("redis", REDIS);
    sb.map("db", DB);
    let _redis = sb.redis(REDIS);
    let mut pg = sb.postgres(DB);
    // A backlog keeps the worker busy (at most one vote per 100 ms), so Postgres dies under it
    // rather than during an idle keep-alive.
    let ids: Vec<String> = (0..40).map(|i| format!("voter{i:02}")).collect();
    for id in &ids {
        redis_query::<i64>(REDIS, &["RPUSH", "votes", &payload(id, "a")]).expect("RPUSH");
    }
    let mut worker = sb.standin("worker", &[]);
    wait("ten votes counted", Duration::from_secs(30), || {
        (pg.votes().len() >= 10).then_some(())
    });
    pg.stop();

    // The next vote popped meets the dead connection: INSERT fails, the fallback UPDATE fails,
    // the process exits 1 and that vote is gone from Redis without reaching the table.
    let status = worker
        .wait_exit(Duration::from_secs(15))
        .expect("the worker to exit");
    assert_eq!(status.code(), Some(1), "{}", worker.log());
    let log = worker.log();
    let lost = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Processing vote for 'a' by '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("a processed vote in the log")
        .to_string();
    let left = queued(REDIS);
    assert!(
        !left.contains(&payload(&lost, "a")),
        "{lost} is still queued"
    );

    // Restarted (as the kubelet would), it drains the rest; only the held vote is missing.
    pg.start();
    let _worker = sb.standin("worker", &[]);
    let rows = wait("the rest to be counted", Duration::from_secs(30), || {
        let rows = pg.votes();
        (queued(REDIS).is_empty() && rows.len() == ids.len() - 1).then_some(rows)
    });
    let counted: Vec<&String> = rows.iter().map(|(id, _)| id).collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !counted.contains(id)).collect();
    assert_eq!(missing, vec![&lost], "exactly the held vote is lost");
}

#[tokio::test]
async fn worker_resolves_redis_once_per_connect_and_exits_on_redis_errors() {
    let Some(env) = env() else { return };
    let sb = Sandbox::new(env, "worker-redis");
    sb.map("db", DB);
    let pg = sb.postgres(DB);
    let _old = sb.redis(REDIS);
    let _new = sb.redis(OTHER_REDIS);

    // A name that does not resolve is fatal (the kubelet restarts the container).
    let mut unresolved = sb.standin("worker", &[]);
    let status = unresolved.wait_exit(Duration::from_secs(15)).expect("exit");
    assert_eq!(status.code(), Some(1), "{}", unresolved.log());
    drop(unresolved);

    sb.map("redis", REDIS);
    let mut worker = sb.standin("worker", &[]);
    worker.wait_log("Found redis at 127.0.0.2", Duration::from_secs(10));

    // The name moves (a failover); the worker stays on the address it resolved.
    sb.map("redis", OTHER_REDIS);
    redis_query::<i64>(OTHER_REDIS, &["RPUSH", "votes", &payload("on-new", "b")]).expect("RPUSH");
    redis_query::<i64>(REDIS, &["RPUSH", "votes", &payload("on-old", "a")]).expect("RPUSH");
    wait(
        "the old server's vote to be counted",
        Duration::from_secs(10),
        || {
            pg.votes()
                .iter()
                .any(|(id, _)| id == "on-old")
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        queued(OTHER_REDIS).len(),
        1,
        "the worker followed the name without a reconnect"
    );

    // The old master drops its clients (Sentinel does at a failover): reconnect, resolve again.
    redis_query::<i64>(REDIS, &["CLIENT", "KILL", "TYPE", "normal"]).expect("CLIENT KILL");
    worker.wait_log("Reconnecting Redis", Duration::from_secs(10));
    worker.wait_log("Found redis at 127.0.0.4", Duration::from_secs(10));
    wait(
        "the new server's vote to be counted",
        Duration::from_secs(10),
        || {
            pg.votes()
                .iter()
                .any(|(id, _)| id == "on-new")
                .then_some(())
        },
    );

    // Any Redis error reply ends the process with 1.
    redis_query::<String>(OTHER_REDIS, &["SET", "votes", "not-a-list"]).expect("SET");
    let status = worker
        .wait_exit(Duration::from_secs(10))
        .expect("exit on WRONGTYPE");
    assert_eq!(status.code(), Some(1));
    assert!(worker.log().contains("WRONGTYPE"), "{}", worker.log());

    // So does popping from a server that became a replica (the old master after a failover).
    redis_query::<i64>(OTHER_REDIS, &["DEL", "votes"]).expect("DEL");
    let mut worker = sb.standin("worker", &[]);
    worker.wait_log("Found redis at 127.0.0.4", Duration::from_secs(10));
    redis_query::<String>(OTHER_REDIS, &["REPLICAOF", "127.0.0.9", "6379"]).expect("REPLICAOF");
    let status = worker
        .wait_exit(Duration::from_secs(10))
        .expect("exit on READONLY");
    assert_eq!(status.code(), Some(1));
    assert!(
        worker.log().contains("read only replica"),
        "{}",
        worker.log()
    );
}
