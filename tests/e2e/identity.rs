//! The operator under an identity of its own, as in a cluster: a ServiceAccount with a bound
//! token in a kubeconfig of its own. The API server's audit log then tells its requests apart
//! from the test's, so writes can be counted per identity.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, Kubeconfig};
use kube::{Api, Client};
use std::path::PathBuf;

/// An identity for the operator: the ServiceAccount `name` in `ns`, bound to `cluster_role`
/// cluster-wide (the binding is deleted on drop).
pub struct Identity {
    pub user: String,
    pub kubeconfig: PathBuf,
    binding: String,
}

impl Identity {
    pub async fn new(c: &Client, ns: &str, name: &str, cluster_role: &str) -> Self {
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
        sas.create(&PostParams::default(), &sa)
            .await
            .unwrap_or_else(|e| panic!("ServiceAccount {ns}/{name}: {e}"));
        let binding = format!("{ns}-{name}");
        let crb = ClusterRoleBinding {
            metadata: kube::api::ObjectMeta {
                name: Some(binding.clone()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: cluster_role.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.into(),
                namespace: Some(ns.into()),
                ..Default::default()
            }]),
        };
        Api::<ClusterRoleBinding>::all(c.clone())
            .patch(
                &binding,
                &PatchParams::apply("gbo-e2e").force(),
                &Patch::Apply(&crb),
            )
            .await
            .unwrap_or_else(|e| panic!("ClusterRoleBinding {binding}: {e}"));
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![]),
                expiration_seconds: Some(3 * 3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let token = sas
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("a token for {ns}/{name}: {e}"))
            .status
            .and_then(|s| s.token)
            .expect("a token in the TokenRequest status");
        let mut config = Kubeconfig::read().expect("the test's kubeconfig");
        let user = format!("system:serviceaccount:{ns}:{name}");
        for ctx in config
            .contexts
            .iter_mut()
            .filter_map(|c| c.context.as_mut())
        {
            ctx.user = Some(user.clone());
        }
        config.auth_infos = vec![kube::config::NamedAuthInfo {
            name: user.clone(),
            auth_info: Some(AuthInfo {
                token: Some(token.into()),
                ..Default::default()
            }),
            other: Default::default(),
        }];
        let kubeconfig = crate::support::repo(&format!("target/e2e-logs/{ns}-{name}.kubeconfig"));
        std::fs::create_dir_all(kubeconfig.parent().expect("dir")).expect("log dir");
        let text = serde_yaml_ng::to_string(&config).expect("kubeconfig yaml");
        std::fs::write(&kubeconfig, text).expect("write kubeconfig");
        Self {
            user,
            kubeconfig,
            binding,
        }
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        let name = self.binding.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(c) = Client::try_default().await {
                    let _ = Api::<ClusterRoleBinding>::all(c)
                        .delete(&name, &DeleteParams::default())
                        .await;
                }
            });
        })
        .join();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}
