//! Names of a Guestbook's objects.

/// `app.kubernetes.io/name` of everything a Guestbook creates.
pub const APP: &str = "guestbook";
pub const KIND: &str = "Guestbook";
/// Components.
pub const FRONTEND: &str = "frontend";
pub const PROXY: &str = "proxy";
pub const REDIS: &str = "redis";
/// The Redis port the frontend image dials.
pub const REDIS_PORT: i32 = 6379;
/// Where the proxy's configuration is mounted: the official nginx image includes every
/// `*.conf` here inside its `http` block.
pub const PROXY_CONF_DIR: &str = "/etc/nginx/conf.d";
pub const PROXY_CONF_KEY: &str = "guestbook.conf";
/// The proxy's own status page, for an exporter in the pod only.
pub const PROXY_STATUS_PORT: i32 = 8081;
/// The nginx exporter sidecar of a monitored proxy: its port, and its image, whose only
/// job is to turn `stub_status` into Prometheus metrics.
pub const PROXY_EXPORTER_PORT: i32 = 9113;
pub const PROXY_EXPORTER_IMAGE: &str = "docker.io/nginx/nginx-prometheus-exporter:1.4.2";

/// Names of the objects of one Guestbook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub frontend: String,
    pub proxy: String,
    pub proxy_config: String,
    /// The Ingress and HTTPRoute.
    pub entry: String,
    /// The store the app owns when its spec declares one inline.
    pub own_store: String,
}

impl Names {
    pub fn of(name: &str) -> Self {
        Self {
            frontend: format!("{name}-frontend"),
            proxy: format!("{name}-proxy"),
            proxy_config: format!("{name}-proxy"),
            entry: name.to_string(),
            own_store: format!("{name}-redis"),
        }
    }
}
