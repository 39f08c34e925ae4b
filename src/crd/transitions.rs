//! CEL transition rules: updates the API server refuses because they can never work — a
//! PostgreSQL major downgrade, a data claim that shrinks, a claim class that changes, storage
//! added to or removed from a Redis store. Each names its field.
//!
//! They sit at the root of each kind, not on the shared spec types, for two reasons:
//! - the way back. The rules compare with the old *spec*, but what cannot change is what
//!   runs. A change the operator accepted but cannot carry out (a claim that grows, a major
//!   upgrade: the store reports it `Stalled`) must be undoable, and only the root sees the
//!   status that says so: while the old object's Ready reason is one of [`UNDOABLE`], any
//!   change passes, and the operator checks the result against the live StatefulSet instead;
//! - inline stores. Guestbook and VoteApp embed the store specs (`spec.redis.spec`,
//!   `spec.postgres.spec`); there the way back is the app's view of its store
//!   (`status.redis.reason`, `status.postgres.reason`).
//!
//! A transition rule only runs where old and new both have its field, so every path is
//! guarded with `has()` on both sides: creating a store, or switching an app from a reference
//! to an inline spec, is never refused.
//!
//! Not covered, on purpose: the backup claim. The PersistentVolumeClaim API itself refuses
//! a smaller size or another class, and the operator reports the refusal (the claim, the field,
//! the server's words); a rule here would also refuse undoing an expansion the claim's class
//! does not allow.

use kube::core::{Message, Reason, Rule};

/// Stalled reasons (see `k8s::live`) that say the running store could not follow the spec:
/// while one stands, the spec may change in any direction — back to what runs, above all.
pub const UNDOABLE: &[&str] = &[
    GROWTH_NOT_IMPLEMENTED,
    CHANGE_IMPOSSIBLE,
    UPGRADE_NOT_IMPLEMENTED,
    DOWNGRADE_IMPOSSIBLE,
];
pub const GROWTH_NOT_IMPLEMENTED: &str = "StorageGrowthNotImplemented";
pub const CHANGE_IMPOSSIBLE: &str = "StorageChangeImpossible";
pub const UPGRADE_NOT_IMPLEMENTED: &str = "MajorUpgradeNotImplemented";
pub const DOWNGRADE_IMPOSSIBLE: &str = "MajorDowngradeImpossible";

fn undoable_list() -> String {
    let quoted: Vec<String> = UNDOABLE.iter().map(|r| format!("'{r}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The way back for a store: its own Ready condition says it cannot follow the spec.
pub fn store_undo() -> String {
    format!(
        "(has(oldSelf.status) && has(oldSelf.status.conditions) && oldSelf.status.conditions.exists(c, c.type == 'Ready' && c.reason in {}))",
        undoable_list()
    )
}

/// The way back for an inline store: the app's view of it (`status.<store>.reason`).
pub fn app_undo(store: &str) -> String {
    format!(
        "(has(oldSelf.status) && has(oldSelf.status.{store}) && has(oldSelf.status.{store}.reason) && oldSelf.status.{store}.reason in {})",
        undoable_list()
    )
}

/// `has()` on every segment of `path` (`spec.redis.storage`) under `root`.
fn present(root: &str, path: &str) -> String {
    let mut prefix = root.to_string();
    let mut checks = Vec::new();
    for segment in path.split('.') {
        prefix = format!("{prefix}.{segment}");
        checks.push(format!("has({prefix})"));
    }
    checks.join(" && ")
}

/// Old and new both have `path`: only then is there a transition to judge.
fn both(path: &str) -> String {
    format!(
        "({} && {})",
        present("self", path),
        present("oldSelf", path)
    )
}

/// What every refusal adds: how to undo a change the store could not follow.
const WAY_BACK: &str =
    "a change the store reports it cannot carry out may be undone while it says so";

/// The message a user sees, with the way back.
fn way_back(what: &str) -> Message {
    Message::Message(format!("{what}; {WAY_BACK}"))
}

/// `<storage>.size` (a quantity) never smaller than before.
pub fn no_shrink(storage: &str, undo: &str) -> Rule {
    let (new, old) = (
        format!("self.{storage}.size"),
        format!("oldSelf.{storage}.size"),
    );
    Rule::new(format!(
        "!{} || !isQuantity({new}) || !isQuantity({old}) || quantity({new}).compareTo(quantity({old})) >= 0 || {undo}",
        both(&format!("{storage}.size"))
    ))
    .message(Message::Expression(format!(
        "'must not be smaller than ' + {old} + ': a PersistentVolumeClaim cannot shrink; {WAY_BACK}'"
    )))
    .field_path(format!(".{storage}.size"))
    .reason(Reason::FieldValueForbidden)
}

/// `<storage>.storageClassName` never changes, not even between unset and set: a claim's
/// class is fixed for its life, and a StatefulSet cannot change its claim template.
pub fn fixed_class(storage: &str, undo: &str) -> Rule {
    let (new, old) = (format!("self.{storage}"), format!("oldSelf.{storage}"));
    Rule::new(format!(
        "!{} || (has({new}.storageClassName) == has({old}.storageClassName) && (!has({new}.storageClassName) || {new}.storageClassName == {old}.storageClassName)) || {undo}",
        both(storage)
    ))
    .message(way_back(
        "is fixed once the claims exist: a PersistentVolumeClaim's class never changes (create a new resource and move the data to use another class)",
    ))
    .field_path(format!(".{storage}.storageClassName"))
    .reason(Reason::FieldValueForbidden)
}

/// `<parent>.storage` neither added nor removed: the members' data directory would switch
/// between claims and emptyDirs, which a StatefulSet cannot do, and data would be left behind.
pub fn fixed_storage(parent: &str, undo: &str) -> Rule {
    Rule::new(format!(
        "!{} || has(self.{parent}.storage) == has(oldSelf.{parent}.storage) || {undo}",
        both(parent)
    ))
    .message(way_back(
        "cannot be added to or removed from an existing store: its members' data would switch between claims and emptyDirs, which a StatefulSet cannot do (create a new store instead)",
    ))
    .field_path(format!(".{parent}.storage"))
    .reason(Reason::FieldValueForbidden)
}

/// `<postgresql>.version` never lowered: an older PostgreSQL cannot read a newer one's data.
pub fn no_downgrade(postgresql: &str, undo: &str) -> Rule {
    let path = format!("{postgresql}.version");
    Rule::new(format!(
        "!{} || self.{path} >= oldSelf.{path} || {undo}",
        both(&path)
    ))
    .message(way_back(
        "must not be lowered: PostgreSQL cannot read the data directory of a newer major version (restore a backup into a new cluster instead)",
    ))
    .field_path(format!(".{path}"))
    .reason(Reason::FieldValueForbidden)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_guarded_on_both_sides() {
        assert_eq!(
            both("spec.redis"),
            "(has(self.spec) && has(self.spec.redis) && has(oldSelf.spec) && has(oldSelf.spec.redis))"
        );
        let r = no_shrink("spec.storage", "false");
        assert!(r.rule.contains(
            "quantity(self.spec.storage.size).compareTo(quantity(oldSelf.spec.storage.size)) >= 0"
        ));
        assert_eq!(r.field_path.as_deref(), Some(".spec.storage.size"));
        assert!(store_undo().contains("'StorageGrowthNotImplemented', 'StorageChangeImpossible'"));
        assert!(app_undo("postgres").contains("oldSelf.status.postgres.reason in ["));
    }
}
