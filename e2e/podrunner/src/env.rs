//! A container's environment, resolved the way a kubelet resolves it.

use crate::error::{Error, Result};
use crate::objects::Objects;
use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the environment is resolved against.
pub struct EnvContext<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    /// `KUBERNETES_SERVICE_HOST`/`PORT`: the `kubernetes` Service, or the API server's address
    /// on the gateway where no kube-proxy serves Services.
    pub apiserver: SocketAddrV4,
    pub extra_path: Option<&'a str>,
    pub objects: &'a Objects,
}

fn field(ctx: &EnvContext, sel: &ObjectFieldSelector) -> Result<String> {
    let meta = &ctx.pod.metadata;
    let spec = ctx.pod.spec.as_ref();
    let path = sel.field_path.as_str();
    let from_map =
        |m: &Option<std::collections::BTreeMap<String, String>>, prefix: &str| -> Option<String> {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            Some(
                m.as_ref()
                    .and_then(|m| m.get(key))
                    .cloned()
                    .unwrap_or_default(),
            )
        };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.to_string(),
        _ => from_map(&meta.labels, "metadata.labels['")
            .or_else(|| from_map(&meta.annotations, "metadata.annotations['"))
            .ok_or_else(|| {
                Error::Pod(format!(
                    "env fieldRef {path} is not supported by the pod runner"
                ))
            })?,
    })
}

/// Replaces `$(NAME)` with defined variables; `$$` escapes, unknown references stay as they are.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(v) = vars.get(&inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The ordered environment of `c`: what a kubelet provides, then `envFrom`, then `env`.
pub fn resolve(c: &Container, ctx: &EnvContext) -> Result<Vec<(String, String)>> {
    let ns = ctx.pod.metadata.namespace.clone().unwrap_or_default();
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        vars.retain(|(key, _)| *key != k);
        vars.push((k, v));
    };
    let path = match ctx.extra_path {
        Some(extra) => format!("{extra}:{DEFAULT_PATH}"),
        None => DEFAULT_PATH.to_string(),
    };
    let api_host = ctx.apiserver.ip().to_string();
    let port = ctx.apiserver.port().to_string();
    let hostname = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| ctx.pod.metadata.name.clone())
        .unwrap_or_default();
    for (k, v) in [
        ("PATH", path),
        ("HOSTNAME", hostname),
        ("KUBERNETES_SERVICE_HOST", api_host.clone()),
        ("KUBERNETES_SERVICE_PORT", port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", port.clone()),
        ("KUBERNETES_PORT", format!("tcp://{api_host}:{port}")),
    ] {
        set(&mut vars, k.to_string(), v);
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            let d = ctx.objects.config_map_data(&ns, &r.name);
            if d.is_none() && !r.optional.unwrap_or(false) {
                return Err(Error::Pod(format!("configmap \"{}\" not found", r.name)));
            }
            d
        } else if let Some(r) = &from.secret_ref {
            let d = ctx.objects.secret_data(&ns, &r.name);
            if d.is_none() && !r.optional.unwrap_or(false) {
                return Err(Error::Pod(format!("secret \"{}\" not found", r.name)));
            }
            d
        } else {
            None
        };
        for (k, v) in data.into_iter().flatten() {
            set(
                &mut vars,
                format!("{prefix}{k}"),
                String::from_utf8_lossy(&v).to_string(),
            );
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let known: HashMap<String, String> = vars.iter().cloned().collect();
            expand(v, &known)
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field(ctx, f)?
            } else if let Some(r) = &src.secret_key_ref {
                // The kubelet's two messages: the object missing, or only the key.
                let data = ctx.objects.secret_data(&ns, &r.name);
                match data.as_ref().and_then(|d| d.get(&r.key).cloned()) {
                    Some(v) => String::from_utf8_lossy(&v).to_string(),
                    None if r.optional.unwrap_or(false) => continue,
                    None if data.is_none() => {
                        return Err(Error::Pod(format!(
                            "secret \"{}\" not found (env {})",
                            r.name, e.name
                        )));
                    }
                    None => {
                        return Err(Error::Pod(format!(
                            "secret \"{}\" has no key \"{}\" (env {})",
                            r.name, r.key, e.name
                        )));
                    }
                }
            } else if let Some(r) = &src.config_map_key_ref {
                // The kubelet's two messages: the object missing, or only the key.
                let data = ctx.objects.config_map_data(&ns, &r.name);
                match data.as_ref().and_then(|d| d.get(&r.key).cloned()) {
                    Some(v) => String::from_utf8_lossy(&v).to_string(),
                    None if r.optional.unwrap_or(false) => continue,
                    None if data.is_none() => {
                        return Err(Error::Pod(format!(
                            "configmap \"{}\" not found (env {})",
                            r.name, e.name
                        )));
                    }
                    None => {
                        return Err(Error::Pod(format!(
                            "configmap \"{}\" has no key \"{}\" (env {})",
                            r.name, r.key, e.name
                        )));
                    }
                }
            } else {
                return Err(Error::Pod(format!(
                    "env {}: this valueFrom is not supported by the pod runner",
                    e.name
                )));
            }
        } else {
            String::new()
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok(vars)
}

/// The argv of `c` with `$(VAR)` expanded, or the image's default command.
pub fn argv(c: &Container, env: &[(String, String)]) -> Result<Vec<String>> {
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let image = c.image.clone().unwrap_or_default();
    let command = match &c.command {
        Some(cmd) if !cmd.is_empty() => cmd.clone(),
        _ => crate::settings::Settings::default_command(&image).ok_or_else(|| {
            Error::Pod(format!(
                "container {}: image {image} needs an explicit command for the pod runner",
                c.name
            ))
        })?,
    };
    Ok(command
        .iter()
        .chain(c.args.iter().flatten())
        .map(|a| expand(a, &vars))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::expand;
    use std::collections::HashMap;

    #[test]
    fn expands_like_kubernetes() {
        let vars: HashMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
    }
}
