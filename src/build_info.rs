//! What this binary is: version, commit and build date (build.rs), for `tierguard version` and
//! the `tierguard_build_info` metric.

use serde::Serialize;

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit it was built from, or "unknown".
pub const COMMIT: &str = env!("TIERGUARD_GIT_COMMIT");
/// When it was built (RFC 3339, UTC).
pub const BUILD_DATE: &str = env!("TIERGUARD_BUILD_DATE");

/// The three together, as `tierguard version -o json` prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    pub version: &'static str,
    pub commit: &'static str,
    pub build_date: &'static str,
}

pub const BUILD_INFO: BuildInfo = BuildInfo {
    version: VERSION,
    commit: COMMIT,
    build_date: BUILD_DATE,
};
