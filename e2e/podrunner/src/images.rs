//! What an image has that this machine's root lacks. A container's root is an overlay of this
//! machine's root, so an image's programs come from Debian's packages; the image's own files
//! (configuration defaults, users, writable directories) are laid into the container's
//! private layer before it starts, so a pod that relies on them sees what the image gives it.

/// The image-specific part of a container's root.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layer {
    /// Directories created world-writable (sticky), as the image ships them writable.
    pub dirs: Vec<&'static str>,
    /// Files (path, content) the image ships.
    pub files: Vec<(&'static str, &'static str)>,
    /// Symbolic links (path, target) the image ships.
    pub links: Vec<(&'static str, &'static str)>,
    /// Users the image defines (name, uid, gid), added to the container's /etc/passwd and
    /// /etc/group when missing.
    pub users: Vec<(&'static str, u32, u32)>,
}

/// The repository part of an image reference: `docker.io/library/nginx:1.27` → `nginx`.
pub fn repository(image: &str) -> &str {
    let name = image.rsplit('/').next().unwrap_or(image);
    name.split([':', '@']).next().unwrap_or(name)
}

/// The official nginx image's main configuration, in its layout: one `http` block that reads
/// `/etc/nginx/conf.d/*.conf` and nothing else. Debian's own nginx.conf also reads
/// `sites-enabled/`, whose default server listens on port 80; an image's pod never sees it.
const NGINX_CONF: &str = r#"# The nginx image's main configuration, as gbo-podrunner lays it out (Debian's nginx binary).
user nginx;
worker_processes auto;
error_log /var/log/nginx/error.log notice;
pid /run/nginx.pid;

events {
    worker_connections 1024;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" '
                    '"$http_user_agent" "$http_x_forwarded_for"';
    access_log /var/log/nginx/access.log main;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
"#;

/// The image's default server, replaced by whatever a pod mounts over conf.d.
const NGINX_DEFAULT_SERVER: &str = r#"# The nginx image's default server (gbo-podrunner).
server {
    listen 80;
    server_name localhost;
    location / {
        root /usr/share/nginx/html;
        index index.html index.htm;
    }
    error_page 500 502 503 504 /50x.html;
    location = /50x.html {
        root /usr/share/nginx/html;
    }
}
"#;

pub fn layer(image: &str) -> Layer {
    let repo = repository(image);
    match repo {
        "nginx" => Layer {
            dirs: vec!["/var/cache/nginx"],
            files: vec![
                ("/etc/nginx/nginx.conf", NGINX_CONF),
                ("/etc/nginx/conf.d/default.conf", NGINX_DEFAULT_SERVER),
            ],
            // The image sends its logs to the container's output.
            links: vec![
                ("/var/log/nginx/access.log", "/dev/stdout"),
                ("/var/log/nginx/error.log", "/dev/stderr"),
            ],
            users: vec![("nginx", 101, 101)],
        },
        // PostgreSQL's socket directory, hidden on this machine by the container's fresh /run.
        _ if ["spilo", "postgres", "patroni"]
            .iter()
            .any(|p| repo.starts_with(p)) =>
        {
            Layer {
                dirs: vec!["/run/postgresql"],
                ..Layer::default()
            }
        }
        _ => Layer::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_images_get_the_official_layout() {
        for image in ["docker.io/library/nginx:1.27", "nginx:1.27-alpine", "nginx"] {
            let l = layer(image);
            assert!(l.files.iter().any(|(p, c)| *p == "/etc/nginx/nginx.conf"
                && c.contains("include /etc/nginx/conf.d/*.conf;")
                && !c.contains("sites-enabled")));
            assert_eq!(l.users, vec![("nginx", 101, 101)]);
        }
        assert_eq!(layer("nginx-ingress:1"), Layer::default());
        assert_eq!(
            layer("ghcr.io/zalando/spilo-17:4.0-p2").dirs,
            vec!["/run/postgresql"]
        );
        assert_eq!(
            repository("quay.io/prometheuscommunity/postgres-exporter:v0.17.1"),
            "postgres-exporter"
        );
    }
}
