//! The core's side of the boundary: a durable JetStream pull consumer on the site's stream (made
//! when missing) feeds the link stage. An observation is acknowledged only once the link stage
//! has stored it (or found it stored already); one the store failed on is delivered again later.
//! A message that cannot be read is logged, counted and terminated (never retried), never a
//! reason to stop.
//!
//! Behind a [`Fence`] (the site's core lease, src/cluster/failover.rs) it takes messages only
//! while the lease holds, and first replays the stream from the point its term starts from
//! through an ephemeral consumer, up to the stream's end at that moment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use prost::Message as _;
use tracing::{info, info_span, warn};

use super::failover::{Fence, Replay};
use super::wire;
use super::{ClusterMetrics, ClusterSettings};
use crate::config::secrets::clip;
use crate::server::stage::StageThread;
use crate::server::{Control, Inbound, Outcome};

/// Messages fetched per pull request.
const FETCH: usize = 128;
/// Unacknowledged messages the stream lets this consumer hold.
const MAX_ACK_PENDING: i64 = 2048;
/// How long the stream waits for an acknowledgement before delivering again.
const ACK_WAIT: Duration = Duration::from_secs(60);
/// Deliveries of one message at most (a store that keeps failing on it).
const MAX_DELIVER: i64 = 20;

/// The consuming thread of a core.
pub struct CoreLink {
    pub metrics: Arc<ClusterMetrics>,
    pub name: String,
    thread: StageThread,
}

impl CoreLink {
    /// Starts consuming the site's stream into `link` (the link stage's input) and `control`
    /// (camera states).
    pub fn start(
        settings: &ClusterSettings,
        link: crossbeam_channel::Sender<Inbound>,
        control: crossbeam_channel::Sender<Control>,
        fence: Option<Arc<Fence>>,
    ) -> anyhow::Result<CoreLink> {
        let metrics = Arc::new(ClusterMetrics::default());
        let rt = super::runtime()?;
        let name = settings.consumer.clone();
        let client = rt.block_on(settings.connect(&name))?;
        let (settings_c, m) = (settings.clone(), metrics.clone());
        info!(site = %settings.site, stream = %settings.stream(), consumer = %name, broker = %settings.nats, "core: consuming observations from the broker");
        let thread = StageThread::spawn("core-consume", move |stop| {
            let c = Consumer {
                settings: settings_c,
                client,
                link,
                control,
                m,
                stop,
                fence,
            };
            rt.block_on(c.run());
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        Ok(CoreLink {
            metrics,
            name,
            thread,
        })
    }

    /// Stops consuming. What was taken but not yet acknowledged is delivered again to the next
    /// core (and dropped there if it was stored after all).
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

struct Consumer {
    settings: ClusterSettings,
    client: async_nats::Client,
    link: crossbeam_channel::Sender<Inbound>,
    control: crossbeam_channel::Sender<Control>,
    m: Arc<ClusterMetrics>,
    stop: Arc<AtomicBool>,
    fence: Option<Arc<Fence>>,
}

type Acks = tokio::sync::mpsc::UnboundedSender<(jetstream::Message, Outcome)>;

impl Consumer {
    async fn run(self) {
        let js = jetstream::new(self.client.clone());
        let consumer = loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            match self.setup(&js).await {
                Ok(c) => break c,
                Err(e) => {
                    warn!(error = %e, "core: cannot open the site's stream yet; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut failures = 0u32;
        while !self.stop.load(Ordering::SeqCst) {
            self.m.connected.store(
                u64::from(
                    self.client.connection_state() == async_nats::connection::State::Connected,
                ),
                Ordering::Relaxed,
            );
            while let Ok((msg, outcome)) = ack_rx.try_recv() {
                self.ack(msg, outcome).await;
            }
            if let Some(f) = &self.fence {
                if !f.holds() {
                    // not (or no longer) this core's turn: take nothing
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                if let Some(from) = f.take_replay() {
                    self.replay(&js, from, f, &ack_tx, &mut ack_rx).await;
                    continue;
                }
            }
            let batch = consumer
                .fetch()
                .max_messages(FETCH)
                .expires(Duration::from_millis(500))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %e, "core: cannot fetch from the stream; trying again");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            failures = 0;
            while let Some(m) = batch.next().await {
                match m {
                    Ok(msg) => self.message(msg, &ack_tx).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "core: fetch ended");
                        break;
                    }
                }
            }
        }
        // acknowledge what the link stage finished before the stop
        while let Ok((msg, outcome)) = ack_rx.try_recv() {
            self.ack(msg, outcome).await;
        }
    }

    /// Replays the stream from sequence `from` to its last message now through an ephemeral
    /// consumer (messages already stored are dropped by the link stage), reporting progress
    /// to the fence; tried again until it finishes while the lease holds.
    async fn replay(
        &self,
        js: &jetstream::Context,
        from: u64,
        fence: &Fence,
        acks: &Acks,
        ack_rx: &mut tokio::sync::mpsc::UnboundedReceiver<(jetstream::Message, Outcome)>,
    ) {
        let mut failures = 0u32;
        loop {
            if self.stop.load(Ordering::SeqCst) || !fence.holds() {
                // asked again for the next term (or the next start)
                return;
            }
            match self.replay_once(js, from, fence, acks, ack_rx).await {
                Ok(()) => return,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(error = %format!("{e:#}"), from, "core: replay of the stream failed; trying again");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn replay_once(
        &self,
        js: &jetstream::Context,
        from: u64,
        fence: &Fence,
        acks: &Acks,
        ack_rx: &mut tokio::sync::mpsc::UnboundedReceiver<(jetstream::Message, Outcome)>,
    ) -> anyhow::Result<()> {
        let mut stream = js.get_stream(self.settings.stream()).await?;
        let last = stream.info().await?.state.last_sequence;
        let mut r = Replay {
            from,
            to: last,
            done: 0,
            finished: false,
        };
        if from > last {
            r.finished = true;
            info!(from, last, "core: nothing to replay");
            fence.replay_progress(r);
            return Ok(());
        }
        info!(from, to = last, "core: replaying the stream");
        fence.replay_progress(r.clone());
        let mut consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_deliver: MAX_DELIVER,
                max_ack_pending: MAX_ACK_PENDING,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await?;
        let started = std::time::Instant::now();
        let result = loop {
            if self.stop.load(Ordering::SeqCst) || !fence.holds() {
                break Err(anyhow::anyhow!("stopped before the replay finished"));
            }
            while let Ok((msg, outcome)) = ack_rx.try_recv() {
                self.ack(msg, outcome).await;
            }
            let floor = consumer.info().await?.ack_floor.stream_sequence;
            if floor >= last {
                break Ok(());
            }
            let mut batch = consumer
                .fetch()
                .max_messages(FETCH)
                .expires(Duration::from_millis(500))
                .messages()
                .await?;
            while let Some(m) = batch.next().await {
                match m {
                    Ok(msg) => {
                        if msg.info().is_ok_and(|i| i.stream_sequence > last) {
                            // past the end of the replay: the durable consumer delivers it
                            let _ = msg.ack().await;
                            continue;
                        }
                        r.done += 1;
                        self.message(msg, acks).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "core: replay fetch ended");
                        break;
                    }
                }
            }
            fence.replay_progress(r.clone());
        };
        let name = consumer.cached_info().name.clone();
        let _ = stream.delete_consumer(&name).await;
        result?;
        r.finished = true;
        info!(
            from,
            to = last,
            messages = r.done,
            secs = format!("{:.1}", started.elapsed().as_secs_f64()),
            "core: replay finished"
        );
        fence.replay_progress(r);
        Ok(())
    }

    /// Makes the stream and the durable consumer when missing.
    async fn setup(
        &self,
        js: &jetstream::Context,
    ) -> anyhow::Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>> {
        let s = &self.settings;
        let config = jetstream::stream::Config {
            name: s.stream(),
            subjects: vec![s.subjects()],
            duplicate_window: Duration::from_secs(s.duplicate_window_s),
            storage: jetstream::stream::StorageType::File,
            num_replicas: s.replicas,
            max_age: Duration::from_secs_f64(s.stream_max_age_hours * 3600.0),
            max_bytes: if s.stream_max_gib > 0.0 {
                (s.stream_max_gib * (1u64 << 30) as f64) as i64
            } else {
                -1
            },
            discard: jetstream::stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let mut stream = js.get_or_create_stream(config.clone()).await?;
        // a stream made with other limits (an older version, or changed keys) takes these
        let made = stream.info().await?.config.clone();
        if made.max_age != config.max_age || made.max_bytes != config.max_bytes {
            js.update_stream(jetstream::stream::Config {
                max_age: config.max_age,
                max_bytes: config.max_bytes,
                ..made
            })
            .await?;
            info!(stream = %s.stream(), max_age_h = s.stream_max_age_hours, max_gib = s.stream_max_gib, "core: the stream's limits changed");
        }
        let consumer = stream
            .get_or_create_consumer(
                &s.consumer,
                jetstream::consumer::pull::Config {
                    durable_name: Some(s.consumer.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_deliver: MAX_DELIVER,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await?;
        info!(stream = %s.stream(), consumer = %s.consumer, "core: stream and consumer ready");
        Ok(consumer)
    }

    async fn ack(&self, msg: jetstream::Message, outcome: Outcome) {
        if outcome == Outcome::Stored
            && let Ok(i) = msg.info()
        {
            let published = (i.published.unix_timestamp_nanos() / 1_000_000) as i64;
            self.m.stored_after(crate::store::now_ms() - published);
        }
        let r = match outcome {
            Outcome::Stored => msg.ack().await,
            Outcome::Duplicate => {
                self.m.duplicates.fetch_add(1, Ordering::Relaxed);
                msg.ack().await
            }
            Outcome::Failed => {
                msg.ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                    .await
            }
        };
        match r {
            Ok(()) if outcome != Outcome::Failed => {
                self.m.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {}
            // the stream delivers it again after its ack wait; the link stage drops the copy
            Err(e) => tracing::debug!(error = %e, "core: cannot acknowledge"),
        }
    }

    async fn malformed(&self, msg: &jetstream::Message, why: &str) {
        let n = self.m.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        warn!(
            subject = %clip(msg.subject.as_str(), 120),
            error = %why,
            malformed = n,
            "core: dropping a message that cannot be read"
        );
        let _ = msg.ack_with(AckKind::Term).await;
    }

    async fn message(&self, msg: jetstream::Message, acks: &Acks) {
        self.m.consumed.fetch_add(1, Ordering::Relaxed);
        let mut published_ms = None;
        if let Ok(i) = msg.info() {
            if i.delivered > 1 {
                self.m.redelivered.fetch_add(1, Ordering::Relaxed);
            }
            self.m.backlog.store(i.pending, Ordering::Relaxed);
            published_ms = Some((i.published.unix_timestamp_nanos() / 1_000_000) as i64);
        }
        let prefix = format!("crosscam.{}.", self.settings.site);
        let rest = msg
            .subject
            .as_str()
            .strip_prefix(&prefix)
            .unwrap_or("")
            .to_string();
        if let Some(camera) = rest.strip_prefix("obs.") {
            let decoded = wire::Observation::decode(msg.payload.as_ref())
                .map_err(|e| e.to_string())
                .and_then(|o| {
                    let model = o.model.clone();
                    o.into_output(camera).map(|r| (r, model))
                });
            match decoded {
                Ok(((output, origin), model)) => {
                    self.m
                        .edge_seen(&origin.edge, camera, published_ms, Some(&model));
                    let acks = acks.clone();
                    let span = info_span!("camera", id = %camera);
                    let inb = Inbound {
                        output,
                        origin: Some(origin),
                        done: Some(Box::new(move |outcome| {
                            let _ = acks.send((msg, outcome));
                        })),
                    };
                    // the link stage's queue is bounded: waiting here is the backpressure
                    if self.link.send(inb).is_err() {
                        span.in_scope(|| warn!("core: the link stage has stopped"));
                    }
                }
                Err(e) => self.malformed(&msg, &e).await,
            }
        } else if rest == "event.camera" {
            let ev = wire::CameraEvent::decode(msg.payload.as_ref()).map_err(|e| e.to_string());
            match ev.and_then(|e| e.check().map(|s| (e, s))) {
                Ok((e, state)) => {
                    self.m.edge_seen(&e.edge, &e.camera, published_ms, None);
                    if !e.name.is_empty() || !e.url.is_empty() {
                        let _ = self.control.send(Control::CameraConfigured {
                            camera: e.camera.clone(),
                            name: if e.name.is_empty() {
                                e.camera.clone()
                            } else {
                                e.name.clone()
                            },
                            url: e.url.clone(),
                        });
                    }
                    let _ = self.control.send(Control::CameraState {
                        camera: e.camera,
                        state,
                        detail: e.detail,
                    });
                    if msg.ack().await.is_ok() {
                        self.m.acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => self.malformed(&msg, &e).await,
            }
        } else {
            self.malformed(&msg, "not a crosscam subject").await;
        }
    }
}
