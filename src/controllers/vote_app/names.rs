//! Names of a VoteApp's objects.

/// `app.kubernetes.io/name` of everything a VoteApp creates.
pub const APP: &str = "vote-app";
pub const KIND: &str = "VoteApp";
/// Components.
pub const VOTE: &str = "vote";
pub const RESULT: &str = "result";
pub const WORKER: &str = "worker";
pub const REDIS: &str = "redis";
pub const DB: &str = "db";
/// The Services the stock images hard-code, and their ports.
pub const REDIS_SERVICE: &str = "redis";
pub const REDIS_PORT: i32 = 6379;
pub const DB_SERVICE: &str = "db";
pub const DB_PORT: i32 = 5432;
/// The list the vote tier pushes onto and the worker pops from.
pub const QUEUE_KEY: &str = "votes";
/// On the result tier's pod template: the primary it was started against.
pub const PRIMARY_ANNOTATION: &str = "guestbook-operator.dev/postgres-primary";

/// Names of the objects of one VoteApp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub vote: String,
    pub result: String,
    pub worker: String,
    pub own_redis: String,
    pub own_db: String,
}

impl Names {
    pub fn of(name: &str) -> Self {
        Self {
            vote: format!("{name}-vote"),
            result: format!("{name}-result"),
            worker: format!("{name}-worker"),
            own_redis: format!("{name}-redis"),
            own_db: format!("{name}-db"),
        }
    }
}
