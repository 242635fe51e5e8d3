//! The edge's side of the boundary: everything the re-id stage emits, and every camera state
//! change, is published to the site's JetStream stream. While the broker is unreachable the
//! messages wait in memory (at most `cluster.buffer_max`, oldest dropped first and counted);
//! they are published in order once it answers again. Each observation carries `Nats-Msg-Id`
//! = `<camera>/<run>/<track>/<seq>`, so a re-publish after a lost acknowledgement is dropped by
//! the stream.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use tracing::{info, info_span, warn};

use super::spool::{Record, Spool};
use super::wire::{self, CameraEvent, SCHEMA};
use super::{ClusterMetrics, ClusterSettings};
use crate::reid::ReidOutput;
use crate::server::{Control, ControlError};

/// Messages published per round before their acknowledgements are awaited.
const BATCH: usize = 256;
/// How long one publish or acknowledgement may take before the broker is taken as unreachable.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping edge keeps trying to deliver what it holds.
const DRAIN: Duration = Duration::from_secs(15);
/// The disk buffer's folder in the data directory.
pub const SPOOL_DIR: &str = "cluster-spool";

/// A message waiting for the broker (`ended`, `described`: the tracklet ended with it, and had a
/// descriptor: counted once acknowledged).
type Pending = Record;

/// A camera's name and redacted URL, for its state events.
pub type CameraNames = HashMap<String, (String, String)>;

/// The publishing thread of an edge.
pub struct EdgeLink {
    pub metrics: Arc<ClusterMetrics>,
    pub run: String,
    pub name: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EdgeLink {
    /// Starts publishing what comes on `outputs` (the re-id stage) and the camera states of
    /// `control`; other control requests (merges, searches, model switches) are refused: an
    /// edge does not link.
    pub fn start(
        settings: &ClusterSettings,
        outputs: crossbeam_channel::Receiver<ReidOutput>,
        control: crossbeam_channel::Receiver<Control>,
        cameras: CameraNames,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<EdgeLink> {
        let metrics = Arc::new(ClusterMetrics::default());
        // past buffer_max in memory, messages wait on disk (and survive a restart)
        let spool = match settings.buffer_disk_mb {
            0 => None,
            mb => {
                let dir = data_dir.join(SPOOL_DIR);
                match Spool::open(&dir, mb << 20) {
                    Ok(s) => {
                        if !s.is_empty() {
                            info!(messages = s.len(), bytes = s.bytes(), dir = %dir.display(), "edge: observations an earlier run could not deliver wait on disk; they go first");
                        }
                        Some(s)
                    }
                    Err(e) => {
                        warn!(error = %e, dir = %dir.display(), "edge: cannot open the disk buffer; only buffer_max observations are kept in memory during a broker outage");
                        None
                    }
                }
            }
        };
        let run = format!("{:016x}", rand::random::<u64>());
        let name = settings.edge_name();
        let rt = super::runtime()?;
        let client = rt.block_on(settings.connect(&name))?;
        // the JetStream context starts its acknowledgement task on the runtime
        let _in_runtime = rt.enter();
        let mut pubr = Publisher {
            settings: settings.clone(),
            name: name.clone(),
            run: run.clone(),
            js: async_nats::jetstream::context::ContextBuilder::new()
                .timeout(ACK_TIMEOUT)
                .build(client.clone()),
            client,
            buf: VecDeque::new(),
            seqs: HashMap::new(),
            cameras,
            spool,
            m: metrics.clone(),
            retry_at: Instant::now(),
            failures: 0,
        };
        info!(edge = %name, run = %run, site = %settings.site, broker = %settings.nats, "edge: publishing observations to the broker");
        drop(_in_runtime);
        let thread = std::thread::Builder::new()
            .name("edge-publish".into())
            .spawn(move || {
                pubr.run(&rt, outputs, control);
                drop(rt);
            })?;
        Ok(EdgeLink {
            metrics,
            run,
            name,
            thread: Some(thread),
        })
    }

    /// Waits for the thread to deliver what it holds (its input closed) and end; it gives up
    /// after a while when the broker stays unreachable, and says how much was lost.
    pub fn finish(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Publisher {
    settings: ClusterSettings,
    name: String,
    run: String,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    buf: VecDeque<Pending>,
    /// The next message number of each open tracklet.
    seqs: HashMap<(Arc<str>, u64), u64>,
    cameras: CameraNames,
    /// Older messages than those in `buf`, on disk.
    spool: Option<Spool>,
    m: Arc<ClusterMetrics>,
    retry_at: Instant,
    failures: u32,
}

impl Publisher {
    fn run(
        &mut self,
        rt: &tokio::runtime::Runtime,
        outputs: crossbeam_channel::Receiver<ReidOutput>,
        control: crossbeam_channel::Receiver<Control>,
    ) {
        let mut closed_at: Option<Instant> = None;
        loop {
            let wait = if self.waiting() == 0 {
                Duration::from_millis(200)
            } else {
                self.retry_at
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200))
            };
            if closed_at.is_none() {
                crossbeam_channel::select! {
                    recv(outputs) -> o => match o {
                        Ok(o) => self.output(o),
                        Err(_) => closed_at = Some(Instant::now()),
                    },
                    recv(control) -> c => {
                        if let Ok(c) = c {
                            self.control(c)
                        }
                    },
                    default(wait) => {}
                }
                while let Ok(o) = outputs.try_recv() {
                    self.output(o);
                }
                while let Ok(c) = control.try_recv() {
                    self.control(c);
                }
            } else if self.waiting() > 0 {
                std::thread::sleep(wait);
            }
            let connected =
                self.client.connection_state() == async_nats::connection::State::Connected;
            self.m
                .connected
                .store(u64::from(connected), Ordering::Relaxed);
            if self.waiting() > 0 && connected && Instant::now() >= self.retry_at {
                match rt.block_on(self.flush()) {
                    Ok(()) => self.failures = 0,
                    Err(e) => {
                        self.failures += 1;
                        self.m.publish_errors.fetch_add(1, Ordering::Relaxed);
                        if self.failures == 1 || self.failures.is_power_of_two() {
                            warn!(error = %e, buffered = self.waiting(), "edge: the broker did not take the observations; they stay buffered and are sent again");
                        }
                        self.retry_at = Instant::now()
                            + Duration::from_millis((200 * self.failures as u64).min(2_000));
                    }
                }
            }
            if let Some(t) = closed_at
                && (self.waiting() == 0 || t.elapsed() >= DRAIN)
            {
                break;
            }
        }
        // what the broker never took waits on disk for the next start
        let mut kept = 0;
        if let Some(sp) = &mut self.spool {
            while let Some(p) = self.buf.pop_front() {
                match sp.push(&p) {
                    Ok(dropped) => {
                        kept += 1;
                        self.m.dropped.fetch_add(dropped, Ordering::Relaxed);
                    }
                    Err(e) => {
                        warn!(error = %e, "edge: cannot write to the disk buffer");
                        self.buf.push_front(p);
                        break;
                    }
                }
            }
        }
        // what the broker has acknowledged is in the stream; let the client send what it holds
        let _ = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await
        });
        let s = self
            .m
            .snapshot(super::Role::Edge, &self.settings.site, &self.name);
        if !self.buf.is_empty() {
            warn!(
                lost = self.buf.len(),
                "edge: stopping with observations the broker never acknowledged"
            );
        }
        let on_disk = self.spool.as_ref().map_or(0, Spool::len);
        if on_disk > 0 {
            warn!(
                on_disk,
                written_now = kept,
                "edge: stopping with observations the broker never took; they wait on disk and the next start delivers them"
            );
        }
        info!(
            published = s.published,
            ended_tracklets = s.ended_tracklets,
            described_tracklets = s.described_tracklets,
            publish_duplicates = s.publish_duplicates,
            dropped = s.dropped,
            unpublished = self.buf.len(),
            on_disk,
            buffered_peak = s.buffered_peak,
            "edge: stopped"
        );
    }

    /// Messages waiting for the broker, in memory and on disk.
    fn waiting(&self) -> u64 {
        self.buf.len() as u64 + self.spool.as_ref().map_or(0, Spool::len)
    }

    fn count_waiting(&self) {
        let n = self.waiting();
        self.m.buffered.store(n, Ordering::Relaxed);
        self.m.buffered_peak.fetch_max(n, Ordering::Relaxed);
        let (on_disk, bytes) = self.spool.as_ref().map_or((0, 0), |s| (s.len(), s.bytes()));
        self.m.spooled.store(on_disk, Ordering::Relaxed);
        self.m.spooled_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Queues one message; over the memory bound the oldest go to disk, and over the disk's
    /// bound (or without one) the oldest go.
    fn push(&mut self, p: Pending) {
        self.buf.push_back(p);
        while self.buf.len() > self.settings.buffer_max {
            let gone = self.buf.pop_front();
            if let (Some(sp), Some(g)) = (&mut self.spool, &gone) {
                match sp.push(g) {
                    Ok(0) => continue,
                    Ok(dropped) => {
                        let n = self.m.dropped.fetch_add(dropped, Ordering::Relaxed) + dropped;
                        warn!(
                            dropped = n,
                            buffer_disk_mb = self.settings.buffer_disk_mb,
                            "edge: the broker is unreachable and the disk buffer is full; dropping the oldest observations"
                        );
                        continue;
                    }
                    Err(e) => {
                        warn!(error = %e, "edge: cannot write to the disk buffer; dropping the oldest observation");
                    }
                }
            }
            let n = self.m.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_power_of_two() {
                warn!(
                    dropped = n,
                    buffer_max = self.settings.buffer_max,
                    subject = gone.as_ref().map_or("", |g| g.subject.as_str()),
                    "edge: the broker is unreachable and the buffer is full; dropping the oldest observations"
                );
            }
        }
        self.count_waiting();
    }

    fn output(&mut self, o: ReidOutput) {
        let (camera, track, ended, described) = match &o {
            ReidOutput::Started { camera, tracklet } => (camera.clone(), tracklet.id, false, false),
            ReidOutput::Observed(ob) => (
                ob.camera.clone(),
                ob.tracklet.id,
                ob.ended,
                ob.descriptor.is_some(),
            ),
        };
        let key = (camera.clone(), track);
        {
            let mut open = self
                .m
                .open_tracklets
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let n = open.entry(camera.to_string()).or_insert(0);
            match &o {
                ReidOutput::Started { .. } => *n += 1,
                ReidOutput::Observed(_) if ended => *n = n.saturating_sub(1),
                ReidOutput::Observed(_) => {}
            }
        }
        let seq = match &o {
            ReidOutput::Started { .. } => {
                self.seqs.insert(key, 1);
                0
            }
            ReidOutput::Observed(_) => {
                let next = self.seqs.entry(key.clone()).or_insert(1);
                let s = *next;
                *next += 1;
                if ended {
                    self.seqs.remove(&key);
                }
                s
            }
        };
        let msg = match wire::Observation::from_output(&o, &self.name, &self.run, seq) {
            Ok(m) => m,
            Err(e) => {
                info_span!("camera", id = %camera)
                    .in_scope(|| warn!(error = %e, track, "edge: cannot encode an observation"));
                return;
            }
        };
        self.push(Pending {
            subject: self.settings.obs_subject(&camera),
            id: Some(format!("{camera}/{}/{track}/{seq}", self.run)),
            payload: Bytes::from(msg.encode_to_vec()),
            ended,
            described: ended && described,
        });
    }

    fn control(&mut self, c: Control) {
        let refuse = || {
            ControlError::Refused("this process is an edge: it does not link; ask the core".into())
        };
        match c {
            Control::CameraState {
                camera,
                state,
                detail,
            } => {
                let (name, url) = self.cameras.get(&camera).cloned().unwrap_or_default();
                let ev = CameraEvent {
                    schema: SCHEMA,
                    edge: self.name.clone(),
                    camera,
                    state: state.to_string(),
                    detail,
                    t_ms: crate::store::now_ms(),
                    run: self.run.clone(),
                    name,
                    url,
                };
                self.push(Pending {
                    subject: self.settings.camera_event_subject(),
                    id: None,
                    payload: Bytes::from(ev.encode_to_vec()),
                    ended: false,
                    described: false,
                });
            }
            Control::CameraConfigured { camera, name, url } => {
                self.cameras.insert(camera, (name, url));
            }
            Control::Merge { reply, .. } => {
                let _ = reply.send(Err(refuse()));
            }
            Control::Split { reply, .. } => {
                let _ = reply.send(Err(refuse()));
            }
            Control::MarkDifferent { reply, .. } => {
                let _ = reply.send(Err(refuse()));
            }
            Control::Search { reply, .. } => {
                let _ = reply.send(Err(refuse()));
            }
            Control::SwitchModel { reply, .. } => {
                let _ = reply.send(Err(refuse()));
            }
        }
    }

    /// Publishes up to [`BATCH`] messages from the front and removes those the broker
    /// acknowledged (in order: after the first failure the rest are sent again later, and the
    /// stream drops the copies it already holds).
    async fn flush(&mut self) -> Result<(), String> {
        // the oldest first: those on disk
        let from_disk = match &mut self.spool {
            Some(sp) if !sp.is_empty() => match sp.peek(BATCH) {
                Ok(b) => Some(b),
                Err(e) => return Err(format!("cannot read the disk buffer: {e}")),
            },
            _ => None,
        };
        let batch: Vec<Pending> = match &from_disk {
            Some(b) => b.clone(),
            None => self.buf.iter().take(BATCH).cloned().collect(),
        };
        let (done, err) = self.publish(&batch).await;
        match from_disk {
            Some(_) => {
                if let Some(sp) = &mut self.spool {
                    sp.consume(done);
                }
                for p in &batch[..done] {
                    delivered(&self.m, p);
                }
            }
            None => {
                for p in self.buf.drain(..done) {
                    delivered(&self.m, &p);
                }
            }
        }
        self.count_waiting();
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Publishes `batch` in order; returns how many the broker acknowledged (a prefix) and the
    /// error that stopped it, if any.
    async fn publish(&self, batch: &[Pending]) -> (usize, Option<String>) {
        let mut acks = Vec::with_capacity(batch.len());
        let mut err = None;
        for p in batch {
            let mut msg =
                async_nats::jetstream::message::PublishMessage::build().payload(p.payload.clone());
            if let Some(id) = &p.id {
                msg = msg.message_id(id);
            }
            match tokio::time::timeout(ACK_TIMEOUT, self.js.send_publish(p.subject.clone(), msg))
                .await
            {
                Ok(Ok(ack)) => acks.push(ack),
                Ok(Err(e)) => {
                    err = Some(e.to_string());
                    break;
                }
                Err(_) => {
                    err = Some("publish timed out".into());
                    break;
                }
            }
        }
        let mut done = 0;
        for ack in acks {
            match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                Ok(Ok(a)) => {
                    done += 1;
                    if a.duplicate {
                        self.m.publish_duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Err(e)) => {
                    err = Some(e.to_string());
                    break;
                }
                Err(_) => {
                    err = Some("no acknowledgement from the broker".into());
                    break;
                }
            }
        }
        (done, err)
    }
}

/// Counts a message the broker took.
fn delivered(m: &ClusterMetrics, p: &Pending) {
    m.published.fetch_add(1, Ordering::Relaxed);
    if p.ended {
        m.ended_tracklets.fetch_add(1, Ordering::Relaxed);
    }
    if p.described {
        m.described_tracklets.fetch_add(1, Ordering::Relaxed);
    }
}
