//! Write requests as the API server's audit log records them (the local cluster logs every
//! create, update, patch and delete at Metadata level; `e2e/cluster env` exports the path as
//! GBO_AUDIT_LOG). Counting them per user is how "a no-op reconcile writes nothing" is measured
//! instead of assumed.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// A position in the audit log; writes are counted from there on.
pub struct Mark {
    path: PathBuf,
    offset: u64,
}

impl Mark {
    pub fn now(path: &PathBuf) -> Self {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Self {
            path: path.clone(),
            offset,
        }
    }

    /// Write requests by `user` since the mark, by `verb resource/name` with their count.
    pub fn writes_by(&self, user: &str) -> BTreeMap<String, u32> {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            // A rotated log restarts smaller: read it all then.
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let from = if len >= self.offset { self.offset } else { 0 };
            let _ = f.seek(SeekFrom::Start(from));
            let _ = f.read_to_string(&mut text);
        }
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if e["user"]["username"] != user || e["stage"] != "ResponseComplete" {
                continue;
            }
            let r = &e["objectRef"];
            let mut what = format!(
                "{} {}",
                e["verb"].as_str().unwrap_or("?"),
                r["resource"].as_str().unwrap_or("?")
            );
            if let Some(sub) = r["subresource"].as_str() {
                what.push_str(&format!("/{sub}"));
            }
            if let Some(name) = r["name"].as_str() {
                what.push_str(&format!(" {name}"));
            }
            *out.entry(what).or_insert(0) += 1;
        }
        out
    }
}
