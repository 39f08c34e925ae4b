//! The PatroniCluster controller. Today: dereference Secrets, claims and the StorageClass,
//! validate, report status.

use super::{
    Managed, SecretRef, Verdict, check_secret, finish, instrumented, not_yet_managed, referrers,
};
use crate::context::{Context, scoped_api};
use crate::crd::PatroniCluster;
use crate::error::Result;
use crate::k8s::conditions::{Extra, Health};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use std::sync::Arc;

impl Managed for PatroniCluster {
    const KIND: &'static str = "PatroniCluster";
}

/// What the spec points at, as found in the cluster. Each entry: (spec field, name, found).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    pub secrets: Vec<(String, String, SecretRef)>,
    pub storage_class: Option<(String, bool)>,
    pub bootstrap_claim: Option<(String, bool)>,
}

/// Secrets the spec names explicitly, with the field that names them.
fn referenced_secrets(pc: &PatroniCluster) -> Vec<(String, String)> {
    let auth = &pc.spec.auth;
    let mut out = Vec::new();
    if let Some(s) = &auth.superuser_secret_name {
        out.push(("spec.auth.superuserSecretName".to_string(), s.clone()));
    }
    if let Some(s) = &auth.replication_secret_name {
        out.push(("spec.auth.replicationSecretName".to_string(), s.clone()));
    }
    for (i, u) in pc.spec.users.iter().enumerate() {
        if let Some(s) = &u.secret_name {
            out.push((format!("spec.users[{i}].secretName"), s.clone()));
        }
    }
    out
}

pub async fn dereference(pc: &PatroniCluster, ctx: &Context) -> Result<World> {
    let ns = pc.namespace().unwrap_or_default();
    let mut world = World::default();
    for (field, name) in referenced_secrets(pc) {
        let found = check_secret(ctx, &ns, &name, Some("password")).await?;
        world.secrets.push((field, name, found));
    }
    if let Some(class) = &pc.spec.storage.storage_class_name {
        let api: Api<StorageClass> = Api::all(ctx.client.clone());
        world.storage_class = Some((class.clone(), api.get_metadata_opt(class).await?.is_some()));
    }
    if let Some(b) = &pc.spec.bootstrap {
        let api = ctx.namespaced::<PersistentVolumeClaim>(&ns);
        let claim = &b.from_backup.claim_name;
        world.bootstrap_claim = Some((claim.clone(), api.get_metadata_opt(claim).await?.is_some()));
    }
    Ok(world)
}

/// Pure validation of what the schema cannot check.
pub fn validate(pc: &PatroniCluster, world: &World) -> Verdict {
    let ns = pc.namespace().unwrap_or_default();
    let secret_problem = world
        .secrets
        .iter()
        .find_map(|(field, name, found)| match found {
            SecretRef::MissingSecret => Some(Health::stalled(
                "SecretNotFound",
                format!("{field}: Secret \"{name}\" does not exist in namespace \"{ns}\""),
            )),
            SecretRef::MissingKey => Some(Health::stalled(
                "SecretKeyNotFound",
                format!("{field}: Secret \"{name}\" has no key \"password\""),
            )),
            SecretRef::Present => None,
        });
    let health = if let Some(h) = secret_problem {
        h
    } else if let Some((class, false)) = &world.storage_class {
        Health::stalled(
            "StorageClassNotFound",
            format!("spec.storage.storageClassName: StorageClass \"{class}\" does not exist"),
        )
    } else if let Some((claim, false)) = &world.bootstrap_claim {
        Health::stalled(
            "BackupClaimNotFound",
            format!(
                "spec.bootstrap.fromBackup.claimName: PersistentVolumeClaim \"{claim}\" does not exist in namespace \"{ns}\""
            ),
        )
    } else {
        not_yet_managed("PatroniCluster")
    };
    let mut verdict = Verdict::new(health);
    if pc.spec.auth.stock_app_credentials {
        verdict = verdict.with(Extra {
            type_: "InsecureCredentials",
            status: true,
            reason: "StockAppCredentials".into(),
            message: "spec.auth.stockAppCredentials is true: the superuser is postgres/postgres, as the stock voting app requires; only the app's own pods may reach the database".into(),
        });
    }
    verdict
}

pub async fn reconcile(pc: Arc<PatroniCluster>, ctx: Arc<Context>) -> Result<Action> {
    instrumented(pc, ctx, |pc, ctx| async move {
        let world = dereference(&pc, &ctx).await?;
        finish(&ctx, pc.as_ref(), validate(&pc, &world), |_| {}).await
    })
    .await
}

/// The controller, also woken when a Secret or claim a PatroniCluster references changes.
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
    synced: &crate::k8s::sync::Synced,
) -> Controller<PatroniCluster> {
    let wc = watcher::Config::default();
    let ctl = super::main_controller::<PatroniCluster>(client, namespace, synced);
    let (by_secret, by_claim) = (ctl.store(), ctl.store());
    let secrets = scoped_api::<PartialObjectMeta<Secret>>(client, namespace);
    let claims = scoped_api::<PartialObjectMeta<PersistentVolumeClaim>>(client, namespace);
    ctl.watches(secrets, wc.clone(), move |secret| {
        let name = secret.name_any();
        referrers(&by_secret, secret.namespace(), |pc| {
            referenced_secrets(pc).iter().any(|(_, s)| *s == name)
        })
    })
    .watches(claims, wc, move |claim| {
        let name = claim.name_any();
        referrers(&by_claim, claim.namespace(), |pc| {
            pc.spec
                .bootstrap
                .as_ref()
                .is_some_and(|b| b.from_backup.claim_name == name)
        })
    })
}
