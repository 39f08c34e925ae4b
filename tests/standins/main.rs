//! Offline contract tests of the stand-ins for the stock app images (e2e/standins), each
//! against real servers in a network namespace of its own: redis-server and PostgreSQL 15 on
//! loopback addresses, reached by the names the images hard-code. Needs root, the Debian
//! packages and the stand-ins' venv (e2e/standins/install); skipped with a message otherwise,
//! failed instead when GBO_REQUIRE_RUNNER=1.

#[path = "../e2e/apps_client.rs"]
mod apps_client;
mod gb_frontend;
mod result;
mod sandbox;
// The e2e suite's skip mechanism: a line per skipped test, the count at exit.
#[path = "../e2e/skip.rs"]
#[allow(dead_code)]
mod skip;
mod vote;
mod worker;

/// Loopback addresses of the servers, one per name the images use.
pub const REDIS: &str = "127.0.0.2";
pub const DB: &str = "127.0.0.3";
pub const OTHER_REDIS: &str = "127.0.0.4";
pub const FOLLOWER: &str = "127.0.0.5";
