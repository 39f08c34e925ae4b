//! The subcommands besides `run` and `crd`: `render` (offline) and `status` (against a cluster).

pub mod render;
pub mod status;
