//! The custom resource a reconcile works for, as its children need it: where it lives, its uid
//! (pruning and the owner reference) and the `part-of` label its children carry.

use super::labels;
use crate::error::{Error, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    /// The custom resource's kind (`RedisSentinel`...): the owner-kind label of its children.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The controller reference every child carries.
    pub reference: OwnerReference,
    /// `app.kubernetes.io/part-of` of the children: the resource's own part-of label, so an
    /// app's stores and tiers group under the app, else its name.
    pub part_of: String,
}

impl Owner {
    /// Fails when the object lacks what the API server always sets (namespace, uid): such an
    /// object did not come from the cluster.
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K, kind: &'static str) -> Result<Self> {
        let missing = |field| Error::MissingField {
            kind,
            name: obj.name_any(),
            field,
        };
        let namespace = obj
            .namespace()
            .ok_or_else(|| missing("metadata.namespace"))?;
        let reference = obj
            .controller_owner_ref(&())
            .ok_or_else(|| missing("metadata.uid"))?;
        let name = obj.name_any();
        Ok(Self {
            kind,
            namespace,
            uid: reference.uid.clone(),
            part_of: obj
                .labels()
                .get(labels::PART_OF)
                .cloned()
                .unwrap_or_else(|| name.clone()),
            name,
            reference,
        })
    }
}
