//! Secrets as the controllers need them: does a referenced key exist, what does it hold, new
//! passwords for Secrets the operator generates, and the finalizer that protects them.

use crate::error::{Error, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

/// What a referenced Secret key looks like from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretRef {
    Present,
    MissingSecret,
    MissingKey,
}

/// Looks up a Secret (and optionally one key of it); with its resourceVersion when it exists,
/// so that a change to the Secret can change what the operator builds from it.
pub async fn check(
    client: &Client,
    namespace: &str,
    name: &str,
    key: Option<&str>,
) -> Result<(SecretRef, Option<String>)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = api.get_opt(name).await? else {
        return Ok((SecretRef::MissingSecret, None));
    };
    let found = match key {
        Some(k) if value(&secret, k).is_none() => SecretRef::MissingKey,
        _ => SecretRef::Present,
    };
    Ok((found, secret.metadata.resource_version.clone()))
}

/// The value of `key` in a Secret, if the Secret and the key exist.
pub async fn read(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(name).await?.and_then(|s| value(&s, key)))
}

/// The value of `key` in a Secret (its `data`, else its `stringData`).
pub fn value(secret: &Secret, key: &str) -> Option<String> {
    let data = secret.data.as_ref().and_then(|d| d.get(key));
    let text = secret.string_data.as_ref().and_then(|d| d.get(key));
    data.map(|v| String::from_utf8_lossy(&v.0).to_string())
        .or_else(|| text.cloned())
}

/// Removes `finalizer` from Secret `name`, if it is there. The patch carries the
/// resourceVersion it was computed from: a list changed meanwhile by someone else makes it
/// fail with a conflict (retried by the next reconcile) instead of dropping their finalizer.
/// `Ok(false)` when the Secret or the finalizer is already gone.
pub async fn remove_finalizer(
    client: &Client,
    namespace: &str,
    name: &str,
    finalizer: &str,
) -> Result<bool> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = api.get_metadata_opt(name).await? else {
        return Ok(false);
    };
    let finalizers = secret.metadata.finalizers.unwrap_or_default();
    if !finalizers.iter().any(|f| f == finalizer) {
        return Ok(false);
    }
    let rest: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
    let patch = serde_json::json!({"metadata": {
        "finalizers": rest,
        "resourceVersion": secret.metadata.resource_version,
    }});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// 32 random alphanumerics from the kernel, for a generated password.
pub fn random_password() -> Result<String> {
    use std::io::Read;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::Io {
            what: "/dev/urandom".into(),
            source,
        })?;
    // Rejection sampling keeps every character equally likely.
    Ok(bytes
        .iter()
        .filter(|b| **b < 248)
        .take(32)
        .map(|b| ALPHABET[usize::from(*b) % 62] as char)
        .collect())
}
