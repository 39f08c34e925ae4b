//! Read-only caches of the ConfigMaps and Secrets pods refer to.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct Objects {
    pub config_maps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
}

impl Objects {
    pub fn config_map(&self, ns: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.config_maps.get(&ObjectRef::new(name).within(ns))
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(ns))
    }

    /// All keys of a ConfigMap as bytes (`data` and `binaryData`).
    pub fn config_map_data(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cm = self.config_map(ns, name)?;
        let mut out: BTreeMap<String, Vec<u8>> = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        out.extend(
            cm.binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone())),
        );
        Some(out)
    }

    /// All keys of a Secret as bytes (`data`, and `stringData` if a client left it).
    pub fn secret_data(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self.secret(ns, name)?;
        let mut out: BTreeMap<String, Vec<u8>> = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        out.extend(
            s.string_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
        );
        Some(out)
    }
}
