//! A pod's volumes as directories on this machine, bind-mounted into its containers.
//! ConfigMaps, Secrets and projected tokens are rewritten when they change, as a kubelet does.

use crate::error::{Error, Result, io};
use crate::objects::Objects;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where each volume of a pod lives on this machine.
#[derive(Clone, Debug, Default)]
pub struct Volumes {
    pub paths: BTreeMap<String, PathBuf>,
}

/// Files of one volume: relative path → (content, mode).
type Files = BTreeMap<String, (Vec<u8>, u32)>;

pub struct VolumeContext<'a> {
    pub pod: &'a Pod,
    pub pod_dir: &'a Path,
    pub objects: &'a Objects,
    pub client: &'a Client,
    pub tokens: &'a mut BTreeMap<String, (String, jiff::Timestamp)>,
}

fn ns(pod: &Pod) -> String {
    pod.metadata.namespace.clone().unwrap_or_default()
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()?
        .security_context
        .as_ref()?
        .fs_group
        .and_then(|g| u32::try_from(g).ok())
}

fn pick(
    data: BTreeMap<String, Vec<u8>>,
    items: &Option<Vec<KeyToPath>>,
    mode: u32,
    what: &str,
) -> Result<Files> {
    match items {
        None => Ok(data.into_iter().map(|(k, v)| (k, (v, mode))).collect()),
        Some(items) => items
            .iter()
            .map(|i| {
                let v = data
                    .get(&i.key)
                    .cloned()
                    .ok_or_else(|| Error::Pod(format!("{what} has no key \"{}\"", i.key)))?;
                Ok((
                    i.path.clone(),
                    (v, i.mode.map(|m| m as u32).unwrap_or(mode)),
                ))
            })
            .collect(),
    }
}

async fn token(
    ctx: &mut VolumeContext<'_>,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> Result<Vec<u8>> {
    let sa = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let key = format!("{sa}/{}", audience.unwrap_or(""));
    let now = jiff::Timestamp::now();
    if let Some((t, refresh_at)) = ctx.tokens.get(&key)
        && *refresh_at > now
    {
        return Ok(t.clone().into_bytes());
    }
    let seconds = expiration.unwrap_or(3607).max(600);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audience.map(|a| vec![a.to_string()]).unwrap_or_default()),
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: ctx.pod.metadata.name.clone(),
                uid: ctx.pod.metadata.uid.clone(),
            }),
        }),
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns(ctx.pod));
    let answer: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &request)
        .await?;
    let t = answer
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| Error::Pod(format!("no token issued for ServiceAccount {sa}")))?;
    // Renew at 80% of the lifetime, as a kubelet does.
    let refresh_at = now + jiff::SignedDuration::from_secs(seconds * 8 / 10);
    ctx.tokens.insert(key, (t.clone(), refresh_at));
    Ok(t.into_bytes())
}

/// The files a ConfigMap, Secret, projected or downward API volume should hold now.
async fn files_of(v: &Volume, ctx: &mut VolumeContext<'_>) -> Result<Option<Files>> {
    let namespace = ns(ctx.pod);
    if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.map(|m| m as u32).unwrap_or(0o644);
        return match ctx.objects.config_map_data(&namespace, &cm.name) {
            Some(d) => pick(d, &cm.items, mode, &format!("configmap \"{}\"", cm.name)).map(Some),
            None if cm.optional.unwrap_or(false) => Ok(Some(Files::new())),
            None => Err(Error::Pod(format!("configmap \"{}\" not found", cm.name))),
        };
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let mode = s.default_mode.map(|m| m as u32).unwrap_or(0o644);
        return match ctx.objects.secret_data(&namespace, &name) {
            Some(d) => pick(d, &s.items, mode, &format!("secret \"{name}\"")).map(Some),
            None if s.optional.unwrap_or(false) => Ok(Some(Files::new())),
            None => Err(Error::Pod(format!("secret \"{name}\" not found"))),
        };
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.map(|m| m as u32).unwrap_or(0o644);
        let mut files = Files::new();
        for item in d.items.iter().flatten() {
            files.insert(
                item.path.clone(),
                (
                    downward(
                        ctx.pod,
                        item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                    )?,
                    mode,
                ),
            );
        }
        return Ok(Some(files));
    }
    let Some(p) = &v.projected else {
        return Ok(None);
    };
    let mode = p.default_mode.map(|m| m as u32).unwrap_or(0o644);
    let mut files = Files::new();
    for src in p.sources.iter().flatten() {
        if let Some(t) = &src.service_account_token {
            let bytes = token(ctx, t.audience.as_deref(), t.expiration_seconds).await?;
            files.insert(t.path.clone(), (bytes, mode));
        }
        if let Some(cm) = &src.config_map {
            let name = cm.name.clone();
            match ctx.objects.config_map_data(&namespace, &name) {
                Some(d) => {
                    files.extend(pick(d, &cm.items, mode, &format!("configmap \"{name}\""))?)
                }
                None if cm.optional.unwrap_or(false) => {}
                None => return Err(Error::Pod(format!("configmap \"{name}\" not found"))),
            }
        }
        if let Some(s) = &src.secret {
            let name = s.name.clone();
            match ctx.objects.secret_data(&namespace, &name) {
                Some(d) => files.extend(pick(d, &s.items, mode, &format!("secret \"{name}\""))?),
                None if s.optional.unwrap_or(false) => {}
                None => return Err(Error::Pod(format!("secret \"{name}\" not found"))),
            }
        }
        if let Some(d) = &src.downward_api {
            for item in d.items.iter().flatten() {
                files.insert(
                    item.path.clone(),
                    (
                        downward(
                            ctx.pod,
                            item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                        )?,
                        mode,
                    ),
                );
            }
        }
    }
    Ok(Some(files))
}

fn downward(pod: &Pod, path: Option<&str>) -> Result<Vec<u8>> {
    let meta = &pod.metadata;
    let lines = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| format!("{k}=\"{v}\"\n"))
            .collect::<String>()
            .into_bytes()
    };
    match path {
        Some("metadata.namespace") => Ok(meta.namespace.clone().unwrap_or_default().into_bytes()),
        Some("metadata.name") => Ok(meta.name.clone().unwrap_or_default().into_bytes()),
        Some("metadata.uid") => Ok(meta.uid.clone().unwrap_or_default().into_bytes()),
        Some("metadata.labels") => Ok(lines(&meta.labels)),
        Some("metadata.annotations") => Ok(lines(&meta.annotations)),
        other => Err(Error::Pod(format!(
            "downward API field {other:?} is not supported by the pod runner"
        ))),
    }
}

/// Writes `files` into `dir`, touching only what changed; removes files no longer listed.
fn sync_dir(dir: &Path, files: &Files, group: Option<u32>) -> Result<bool> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut changed = false;
    for (rel, (content, mode)) in files {
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(Error::Pod(format!(
                "volume file path {rel:?} is not allowed"
            )));
        }
        let path = dir.join(rel);
        if std::fs::read(&path).ok().as_ref() == Some(content) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // Write then rename, so a reader never sees half a file.
        let tmp = path.with_extension("gbo-tmp");
        std::fs::write(&tmp, content).map_err(io(&tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode)).map_err(io(&tmp))?;
        if let Some(g) = group {
            std::os::unix::fs::chown(&tmp, None, Some(g)).map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        changed = true;
    }
    for entry in walk(dir) {
        let rel = entry
            .strip_prefix(dir)
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        if entry.is_file() && !files.contains_key(&rel) {
            let _ = std::fs::remove_file(&entry);
            changed = true;
        }
    }
    Ok(changed)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// The host directory behind a bound claim (the hostpath provisioner's directory).
async fn claim_path(client: &Client, namespace: &str, claim: &str) -> Result<PathBuf> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pvc = pvcs
        .get_opt(claim)
        .await?
        .ok_or_else(|| Error::Pod(format!("persistentvolumeclaim \"{claim}\" not found")))?;
    let pv_name = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Error::Pod(format!(
                "persistentvolumeclaim \"{claim}\" is not bound yet"
            ))
        })?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&pv_name).await?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or_else(|| spec.local.map(|l| l.path))
        .ok_or_else(|| {
            Error::Pod(format!(
                "persistentvolume \"{pv_name}\" is neither hostPath nor local"
            ))
        })?;
    Ok(PathBuf::from(path))
}

/// `fsGroupChangePolicy: OnRootMismatch`.
fn only_on_root_mismatch(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.fs_group_change_policy.as_deref())
        == Some("OnRootMismatch")
}

/// Applies fsGroup the way a kubelet does for writable volumes: group-owned and group-writable.
/// With `OnRootMismatch`, as a kubelet, it leaves a volume alone whose root already has the
/// group, group rwx and setgid — what lets PostgreSQL keep its data directory at 0700.
fn apply_fs_group(dir: &Path, group: u32, on_root_mismatch: bool) -> Result<()> {
    if on_root_mismatch {
        let meta = std::fs::metadata(dir).map_err(io(dir))?;
        if meta.gid() == group && meta.mode() & 0o2070 == 0o2070 {
            return Ok(());
        }
    }
    for p in std::iter::once(dir.to_path_buf()).chain(walk(dir)) {
        let meta = std::fs::symlink_metadata(&p).map_err(io(&p))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.gid() != group {
            std::os::unix::fs::chown(&p, None, Some(group)).map_err(io(&p))?;
        }
        let mut mode = meta.mode() & 0o7777;
        mode |= if meta.is_dir() { 0o2070 } else { 0o060 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).map_err(io(&p))?;
    }
    Ok(())
}

/// Creates every volume of the pod. Fails (and is retried by the caller) while something it
/// needs does not exist yet, like a kubelet in ContainerCreating.
pub async fn materialize(ctx: &mut VolumeContext<'_>) -> Result<Volumes> {
    let mut out = Volumes::default();
    let group = fs_group(ctx.pod);
    let volumes = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in &volumes {
        let dir = ctx.pod_dir.join("volumes").join(&v.name);
        if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(io(&dir))?;
            out.paths.insert(v.name.clone(), dir);
        } else if let Some(c) = &v.persistent_volume_claim {
            let path = claim_path(ctx.client, &ns(ctx.pod), &c.claim_name).await?;
            std::fs::create_dir_all(&path).map_err(io(&path))?;
            if let Some(g) = group {
                apply_fs_group(&path, g, only_on_root_mismatch(ctx.pod))?;
            }
            out.paths.insert(v.name.clone(), path);
        } else if let Some(files) = files_of(v, ctx).await? {
            sync_dir(&dir, &files, group)?;
            out.paths.insert(v.name.clone(), dir);
        } else {
            return Err(Error::Pod(format!(
                "volume {}: this volume type is not supported by the pod runner",
                v.name
            )));
        }
    }
    Ok(out)
}

/// Brings ConfigMap, Secret, projected and downward API volumes up to date.
pub async fn refresh(ctx: &mut VolumeContext<'_>) -> Result<bool> {
    let group = fs_group(ctx.pod);
    let volumes = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let mut changed = false;
    for v in &volumes {
        if v.empty_dir.is_some() || v.persistent_volume_claim.is_some() {
            continue;
        }
        if let Some(files) = files_of(v, ctx).await? {
            changed |= sync_dir(&ctx.pod_dir.join("volumes").join(&v.name), &files, group)?;
        }
    }
    Ok(changed)
}
