//! The stream: the settings it is created with, how an existing one differs from them, and the
//! background task that gets or creates it until that works.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, Placement, RetentionPolicy, StorageType};
use async_nats::jetstream::{Context, ErrorCode};
use async_nats::Client;

use super::{Shared, DUPLICATE_WINDOW, STREAM_MAX_AGE, STREAM_NAME, STREAM_SUBJECTS};

/// Most replicas JetStream keeps of a stream.
pub const MAX_REPLICAS: usize = 5;

/// What is configurable about the stream, and about every other bucket the server creates on the
/// same NATS (checkpoints): replicas, placement, a size bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// 1..=[`MAX_REPLICAS`]; 3 is the production value on a cluster (one node may be lost).
    pub replicas: usize,
    /// Cluster name and server tags the stream is placed by, if any.
    pub placement: Option<Placement>,
    /// Most bytes the stream keeps (oldest removed first); -1: no bound.
    pub max_bytes: i64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            placement: None,
            max_bytes: -1,
        }
    }
}

/// The settings the stream is created with: those of the reference (NATS 2.9 fields only), with
/// the configured replicas, placement and size bound.
pub fn stream_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: STREAM_NAME.into(),
        subjects: vec![STREAM_SUBJECTS.into()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: STREAM_MAX_AGE,
        discard: DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: settings.replicas,
        placement: settings.placement.clone(),
        max_messages: -1,
        max_bytes: settings.max_bytes,
        max_messages_per_subject: -1,
        max_consumers: -1,
        max_message_size: -1,
        ..Default::default()
    }
}

/// How an existing stream's settings differ from [`stream_config`], one line per setting that
/// matters to this server. Empty when they agree.
pub fn drift(found: &stream::Config, settings: &StreamSettings) -> Vec<String> {
    let want = stream_config(settings);
    let pairs = [
        (
            "subjects",
            format!("{:?}", found.subjects),
            format!("{:?}", want.subjects),
        ),
        (
            "storage",
            format!("{:?}", found.storage),
            format!("{:?}", want.storage),
        ),
        (
            "retention",
            format!("{:?}", found.retention),
            format!("{:?}", want.retention),
        ),
        (
            "max_age",
            format!("{:?}", found.max_age),
            format!("{:?}", want.max_age),
        ),
        (
            "duplicate_window",
            format!("{:?}", found.duplicate_window),
            format!("{:?}", want.duplicate_window),
        ),
        (
            "discard",
            format!("{:?}", found.discard),
            format!("{:?}", want.discard),
        ),
        (
            "num_replicas",
            found.num_replicas.max(1).to_string(),
            want.num_replicas.to_string(),
        ),
        (
            "max_bytes",
            found.max_bytes.to_string(),
            want.max_bytes.to_string(),
        ),
    ];
    pairs
        .into_iter()
        .filter(|(_, found, want)| found != want)
        .map(|(name, found, want)| format!("{name} is {found}, expected {want}"))
        .collect()
}

fn is_stream_not_found(kind: &GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(e) if e.error_code() == STREAM_NOT_FOUND)
}

pub(super) const STREAM_NOT_FOUND: ErrorCode = ErrorCode::STREAM_NOT_FOUND;

/// Looks the stream up, creating it when it does not exist: its config and whether it was
/// created now.
async fn ensure_stream(
    js: &Context,
    settings: &StreamSettings,
) -> Result<(stream::Config, bool), String> {
    match js.get_stream(STREAM_NAME).await {
        Ok(s) => return Ok((s.cached_info().config.clone(), false)),
        Err(e) if is_stream_not_found(&e.kind()) => {}
        Err(e) => return Err(format!("looking up the stream: {e}")),
    }
    match js.create_stream(stream_config(settings)).await {
        Ok(s) => Ok((s.cached_info().config.clone(), true)),
        Err(e) => Err(format!("creating the stream: {e}")),
    }
}

/// Gets or creates the stream whenever it is not known to exist, retrying with backoff until it
/// works. Drift from our settings is logged the first time only: an existing stream is used as
/// it is, never changed (several servers configured differently would otherwise undo each
/// other's changes, and scaling a stream's replicas is an operator's decision).
pub(super) async fn ensure_loop(
    js: Context,
    client: Client,
    shared: Arc<Shared>,
    settings: StreamSettings,
) {
    let mut link = shared.link.subscribe();
    let mut drift_checked = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        if shared.ensured.load(Ordering::Acquire) {
            shared.reensure.notified().await;
            continue;
        }
        if client.connection_state() != State::Connected {
            link.borrow_and_update();
            let _ = tokio::time::timeout(Duration::from_secs(1), link.changed()).await;
            continue;
        }
        match ensure_stream(&js, &settings).await {
            Ok((config, created)) => {
                if created {
                    tracing::info!(stream = STREAM_NAME, "created the JetStream stream");
                }
                if !drift_checked {
                    drift_checked = true;
                    for d in drift(&config, &settings) {
                        tracing::warn!(
                            stream = STREAM_NAME,
                            drift = %d,
                            "existing JetStream stream differs from our settings; used as it is"
                        );
                    }
                }
                shared.set_error(None);
                shared.ensured.store(true, Ordering::Release);
                shared.set_up.store(true, Ordering::Release);
                shared.bump();
                backoff = Duration::from_millis(100);
                tracing::info!(stream = STREAM_NAME, "JetStream event log ready");
            }
            Err(why) => {
                tracing::warn!(
                    stream = STREAM_NAME,
                    error = %why,
                    retry_in_ms = backoff.as_millis() as u64,
                    "JetStream stream not available; retrying"
                );
                shared.set_error(Some(why));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_has_the_reference_settings() {
        let c = stream_config(&StreamSettings::default());
        assert_eq!(c.name, "CELLOS_EVENTS");
        assert_eq!(c.subjects, ["cellos.events.>"]);
        assert_eq!(c.max_age, Duration::from_secs(7_776_000));
        assert_eq!(c.duplicate_window, Duration::from_secs(120));
        assert_eq!(c.num_replicas, 1);
        assert_eq!(c.max_bytes, -1);
        assert!(!c.allow_direct);
        assert!(drift(&c, &StreamSettings::default()).is_empty());
    }

    #[test]
    fn replicas_placement_and_size_are_configurable_and_drift_is_named() {
        let settings = StreamSettings {
            replicas: 3,
            placement: Some(Placement {
                cluster: Some("east".into()),
                tags: vec!["ssd".into()],
            }),
            max_bytes: 1 << 30,
        };
        let c = stream_config(&settings);
        assert_eq!((c.num_replicas, c.max_bytes), (3, 1 << 30));
        assert_eq!(c.placement, settings.placement);
        let single = stream_config(&StreamSettings::default());
        let d = drift(&single, &settings);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("num_replicas is 1, expected 3"), "{d:?}");
        assert!(d[1].starts_with("max_bytes is -1"), "{d:?}");
    }

    #[test]
    fn drift_names_each_setting_that_differs() {
        let mut c = stream_config(&StreamSettings::default());
        c.subjects = vec!["cellos.>".into()];
        c.storage = StorageType::Memory;
        c.duplicate_window = Duration::from_secs(60);
        c.max_messages = 10; // not a setting this server depends on
        let d = drift(&c, &StreamSettings::default());
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].starts_with("subjects is [\"cellos.>\"]"), "{d:?}");
        assert!(d[1].starts_with("storage is Memory"), "{d:?}");
        assert!(d[2].starts_with("duplicate_window is 60s"), "{d:?}");
    }
}
