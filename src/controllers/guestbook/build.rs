//! Pure: a validated Guestbook in, every object it needs out — its owned store, the Redis
//! Services the frontend image hard-codes, the frontend tier, the optional proxy tier, Ingress
//! and HTTPRoute.

use super::names::{APP, FRONTEND, PROXY, PROXY_CONF_DIR, PROXY_CONF_KEY, REDIS, REDIS_PORT};
use super::proxy;
use super::validate::Validated;
use crate::controllers::apps::tier::{self, Http, PodExtras, Tier};
use crate::controllers::apps::{REDIS_CLIENT_LABEL, glue, route, stores};
use crate::controllers::redis_sentinel::names::{ROLE_MASTER, ROLE_REPLICA, redis_role_selector};
use crate::crd::Guestbook;
use crate::crd::common::{MonitoringSpec, ServiceSpec};
use crate::error::Result;
use crate::k8s::children::{Child, ChildKind};
use crate::k8s::factory::{Factory, fnv};
use crate::k8s::monitoring;
use crate::k8s::podspec::{env, secret_env};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, Volume, VolumeMount,
};
use serde_json::Value;
use std::collections::BTreeMap;

/// Everything a Guestbook needs, and its HTTPRoute (applied apart: see [`route`]).
pub struct Built {
    pub children: Vec<Child>,
    pub routes: Vec<(String, Value)>,
}

/// The Service that reads go to selects the replicas while at least one is in sync, else the
/// master: reads keep working with no replica.
fn follower_role(v: &Validated) -> &'static str {
    if v.redis.replicas_in_sync > 0 {
        ROLE_REPLICA
    } else {
        ROLE_MASTER
    }
}

/// The port the entry Service (proxy's, else frontend's) listens on.
pub fn entry_port(gb: &Guestbook) -> i32 {
    gb.spec.frontend.service.port
}

pub fn build(gb: &Guestbook, v: &Validated) -> Result<Built> {
    let f = Factory::new(&v.owner, APP);
    let spec = &gb.spec;
    let mut out = Vec::new();
    if let Some(inline) = spec.redis.spec.as_deref() {
        out.push(stores::owned_redis(
            &f,
            &v.store.name,
            inline,
            spec.monitoring.as_ref(),
        )?);
    }
    let names = &spec.redis_service_names;
    let leader = redis_role_selector(&v.store.name, ROLE_MASTER);
    let follower = redis_role_selector(&v.store.name, follower_role(v));
    out.push(glue::service(
        &f,
        &names.leader,
        REDIS,
        leader,
        REDIS_PORT,
        "redis",
    )?);
    out.push(glue::service(
        &f,
        &names.follower,
        REDIS,
        follower,
        REDIS_PORT,
        "redis",
    )?);

    let fe = &spec.frontend;
    let mut fe_env = vec![env("GET_HOSTS_FROM", "dns")];
    if let (false, Some((secret, key))) = (v.stock_frontend, &v.redis.password) {
        fe_env.push(secret_env("REDIS_PASSWORD", secret, key));
    }
    // Behind the proxy the frontend is internal; the user's Service settings go to the proxy.
    let internal = ServiceSpec {
        port: fe.service.port,
        ..ServiceSpec::default()
    };
    let frontend_service = if spec.proxy.is_some() {
        &internal
    } else {
        &fe.service
    };
    let client = tier::client_labels(&[(REDIS_CLIENT_LABEL, &v.store.name)]);
    let frontend = Tier {
        component: FRONTEND,
        name: v.names.frontend.clone(),
        image: &fe.image,
        replicas: fe.replicas,
        autoscaling: fe.autoscaling.as_ref(),
        resources: &fe.resources,
        env: fe_env,
        http: Some(Http {
            container_port: fe.container_port,
            probe_path: "/",
            service: Some(frontend_service),
            client_affinity: false,
        }),
        pod_labels: client,
        pod_annotations: BTreeMap::new(),
        extra: PodExtras::default(),
    };
    out.extend(tier::objects(&f, &frontend, spec.scheduling.as_ref())?);

    let mut entry = v.names.frontend.clone();
    let monitored = MonitoringSpec::wanted(spec.monitoring.as_ref());
    if let Some(p) = &spec.proxy {
        const LISTEN: i32 = 80;
        let conf = proxy::config(&v.owner, p, &v.names.frontend, fe.service.port, LISTEN);
        let cm = ConfigMap {
            metadata: f.object_meta(&v.names.proxy_config, PROXY),
            data: Some(BTreeMap::from([(PROXY_CONF_KEY.to_string(), conf.clone())])),
            ..ConfigMap::default()
        };
        out.push(f.typed(ChildKind::ConfigMap, &cm)?);
        let extra = PodExtras {
            volumes: vec![Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: v.names.proxy_config.clone(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            }],
            main: Some(Container {
                volume_mounts: Some(vec![VolumeMount {
                    name: "config".into(),
                    mount_path: PROXY_CONF_DIR.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                }]),
                ..Container::default()
            }),
            sidecars: crate::k8s::monitoring::exporter(
                p.exporter.as_ref(),
                spec.monitoring.as_ref(),
            )
            .map(|x| proxy::exporter(&x))
            .into_iter()
            .collect(),
            ..PodExtras::default()
        };
        let proxy_tier = Tier {
            component: PROXY,
            name: v.names.proxy.clone(),
            image: &p.image,
            replicas: p.replicas,
            autoscaling: p.autoscaling.as_ref(),
            resources: &p.resources,
            env: Vec::new(),
            http: Some(Http {
                container_port: LISTEN,
                probe_path: "/healthz",
                service: Some(&fe.service),
                client_affinity: false,
            }),
            pod_labels: BTreeMap::new(),
            // A configuration change is a template change: the proxy rolls.
            pod_annotations: tier::config_hash_annotation(&fnv(&conf)),
            extra,
        };
        out.extend(tier::objects(&f, &proxy_tier, spec.scheduling.as_ref())?);
        if monitored {
            // A PodMonitor, not a port on the proxy Service: that Service is the app's public
            // entrance (NodePort, LoadBalancer), where metrics have no business.
            out.push(monitoring::pod_monitor(
                &f,
                &v.names.proxy,
                PROXY,
                &["metrics"],
            )?);
        }
        entry = v.names.proxy.clone();
    }
    let component = if spec.proxy.is_some() {
        PROXY
    } else {
        FRONTEND
    };
    if let Some(ing) = &spec.ingress {
        out.push(tier::ingress(
            &f,
            &v.names.entry,
            component,
            ing,
            &entry,
            entry_port(gb),
        )?);
    }
    let routes = spec
        .http_route
        .iter()
        .map(|r| {
            let obj = route::build(&f, &v.names.entry, component, r, &entry, entry_port(gb));
            (v.names.entry.clone(), obj)
        })
        .collect();
    Ok(Built {
        children: out,
        routes,
    })
}

/// The Service clients reach the app through.
pub fn entry_service(gb: &Guestbook, v: &Validated) -> String {
    if gb.spec.proxy.is_some() {
        v.names.proxy.clone()
    } else {
        v.names.frontend.clone()
    }
}

/// Every object of `gb` as the controller applies it in a namespace holding nothing else
/// (an inline store as declared, a referenced one not found): offline, for `render` and the
/// builder tests.
pub fn build_offline(gb: &Guestbook) -> Result<Built> {
    use crate::context::Caches;
    let owner = crate::k8s::owner::Owner::of(gb, super::names::KIND)?;
    let caches = Caches::from_objects(vec![], vec![], vec![gb.clone()], vec![]);
    let v = super::validate::validate(gb, owner, &caches).map_err(|h| {
        crate::error::Error::Invalid {
            kind: super::names::KIND,
            name: kube::ResourceExt::name_any(gb),
            message: h.message().to_string(),
        }
    })?;
    build(gb, &v)
}
