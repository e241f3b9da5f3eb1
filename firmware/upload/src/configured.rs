//! The configured targets: `[[upload.target]]` (validated by `lectern-config`) → [`Target`]s,
//! the one mapping the daemon and the benchmarks share, so a bench measures what a box runs.
//!
//! Sizes: Opencast chunks and folder pieces are `upload.chunk_mb`; S3 parts are at least S3's
//! 5 MiB minimum. A folder piece ends in an fsync, and a 32 MiB one on the card held a
//! recording's fsync up to ~24 ms behind it (docs/benchmarks.md, "Recording while uploading"),
//! which is why pieces follow the chunk size rather than the folder target's own default.

use std::sync::Arc;

use std::time::Duration;

use lectern_config::{Config, S3TargetConfig, TargetConfig, TargetKind, UploadConfig};

use crate::folder::{FolderTarget, DEFAULT_SYNC_EVERY};
use crate::opencast::OpencastTarget;
use crate::policy::RetryPolicy;
use crate::runner::{RunnerConfig, TargetFactory};
use crate::s3::{S3Options, S3Target, Timeouts, MIN_PART_BYTES};
use crate::target::Target;
use crate::throttle::Throttle;

/// The S3 options of a configured S3 target with `chunk_bytes` as the part size (at least
/// S3's minimum) and the default timeouts.
pub fn s3_options(s: &S3TargetConfig, chunk_bytes: u64) -> S3Options {
    S3Options {
        endpoints: s.endpoints.clone(),
        bucket: s.bucket.clone(),
        region: s.region.clone(),
        access_key: s.access_key.clone(),
        secret_key: s.secret_key.clone(),
        prefix: s.prefix.clone(),
        path_style: s.path_style,
        part_bytes: chunk_bytes.max(MIN_PART_BYTES),
        timeouts: Timeouts::default(),
        same_storage: s.same_storage,
        verify_etag: s.verify_etag,
        ca_pem: s.ca_pem.clone(),
    }
}

/// Makes one configured target (`None`, logged, when it cannot be made).
pub fn make(t: &TargetConfig, config: &Config) -> Option<Box<dyn Target>> {
    let chunk = config.upload.chunk_bytes;
    Some(match &t.kind {
        TargetKind::Folder { dirs } => Box::new(FolderTarget::with_pieces(dirs.iter().map(|d| d.display().to_string()).collect(), chunk, DEFAULT_SYNC_EVERY)),
        TargetKind::S3(s) => match S3Target::new(s3_options(s, chunk)) {
            Ok(target) => Box::new(target),
            Err(e) => {
                log::error!(target: "upload", "target {}: {e}", t.name);
                return None;
            }
        },
        // The config accepts an Opencast target only with `[opencast]` set.
        TargetKind::Opencast { endpoints } => Box::new(OpencastTarget::new(config.opencast.as_ref()?, &config.agent_name, endpoints.clone(), chunk)),
    })
}

/// A factory over every configured target, by name.
pub fn factory(config: &Config) -> TargetFactory {
    let config = config.clone();
    Arc::new(move |name| make(config.upload.targets.iter().find(|t| t.name == name)?, &config))
}

/// The runner's settings from `[upload]`.
pub fn runner_config(u: &UploadConfig) -> RunnerConfig {
    RunnerConfig {
        workers: u.concurrency.max(1) as usize,
        retry: RetryPolicy { initial: u.retry_initial, max: u.retry_max },
        failover_after: u.failover_after,
        failback_after: u.failback_after,
        health_interval: u.health_interval,
        poll: Duration::from_secs(5),
    }
}

/// The bandwidth cap from `[upload]` (idle and recording rates).
pub fn throttle(u: &UploadConfig) -> Arc<Throttle> {
    Arc::new(Throttle::new(u.rate_limit, u.recording_rate_limit))
}
