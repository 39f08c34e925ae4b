//! guestbook-operator: HA Guestbook and voting apps with Redis Sentinel and Patroni stores.

pub mod crd;
