//! Events: every log line, stage boundary and warning of a pipeline run, as it happens.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use crate::Platform;

/// A stage of a pipeline run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Stage {
    /// The pushed revision is materialized into a build context.
    Source,
    /// The backend is chosen.
    Detect,
    /// The image is built, once per platform.
    Build,
    /// The images are published.
    Publish,
    /// The published image is released and started.
    Deploy,
}

impl Stage {
    /// The stage's name in lower case.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Detect => "detect",
            Stage::Build => "build",
            Stage::Publish => "publish",
            Stage::Deploy => "deploy",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It did its work.
    Succeeded,
    /// It failed; an error follows.
    Failed,
    /// It was stopped because the run was dropped.
    Cancelled,
    /// It ran out of time.
    TimedOut,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A stage started.
    Started,
    /// A stage ended.
    Finished {
        /// How long it ran.
        elapsed: Duration,
        /// How it ended.
        outcome: Outcome,
    },
    /// One line of output (a compiler line, an upload, a health probe).
    Log {
        /// The line, without its line ending.
        line: String,
    },
    /// Something the user should know that does not stop the run.
    Warning {
        /// What happened and what to do.
        message: String,
    },
}

/// One event of a run, with the stage and platform it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The stage.
    pub stage: Stage,
    /// The platform, for per-platform build streams.
    pub platform: Option<Platform>,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// An event of `stage`.
    pub fn new(stage: Stage, platform: Option<Platform>, kind: EventKind) -> Self {
        Event {
            stage,
            platform,
            kind,
        }
    }

    /// Renders the event as one line of a combined stream, the way a push shows it:
    /// stage lines start with `----->`, build lines carry a `[platform]` prefix, other lines are
    /// indented, and warnings start with ` !`.
    ///
    /// ```
    /// use hephy_core::{Event, EventKind, Platform, Stage};
    /// let e = Event::new(Stage::Build, Some(Platform::linux_arm64()), EventKind::Log { line: "go: compiling".into() });
    /// assert_eq!(e.render(), "[linux/arm64] go: compiling");
    /// let e = Event::new(Stage::Publish, None, EventKind::Started);
    /// assert_eq!(e.render(), "-----> Publishing");
    /// ```
    pub fn render(&self) -> String {
        let on = |s: &str| match &self.platform {
            Some(p) => format!("{s} for {p}"),
            None => s.to_owned(),
        };
        match &self.kind {
            EventKind::Started => {
                let what = match self.stage {
                    Stage::Source => "Preparing source",
                    Stage::Detect => "Choosing a backend",
                    Stage::Build => "Building",
                    Stage::Publish => "Publishing",
                    Stage::Deploy => "Deploying",
                };
                format!("-----> {}", on(what))
            }
            EventKind::Finished { elapsed, outcome } => {
                let what = match self.stage {
                    Stage::Source => "Source",
                    Stage::Detect => "Detection",
                    Stage::Build => "Build",
                    Stage::Publish => "Publish",
                    Stage::Deploy => "Deploy",
                };
                let how = match outcome {
                    Outcome::Succeeded => "done",
                    Outcome::Failed => "failed",
                    Outcome::Cancelled => "cancelled",
                    Outcome::TimedOut => "timed out",
                };
                format!("-----> {} {how} in {}", on(what), format_elapsed(*elapsed))
            }
            EventKind::Log { line } => match &self.platform {
                Some(p) => format!("[{p}] {line}"),
                None => format!("       {line}"),
            },
            EventKind::Warning { message } => match &self.platform {
                Some(p) => format!(" !     [{p}] {message}"),
                None => format!(" !     {message}"),
            },
        }
    }
}

/// Formats a duration for humans: `0.42s`, `3.1s`, `2m05s`.
pub fn format_elapsed(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.2}s")
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[derive(Clone)]
enum Sink {
    Discard,
    Channel(mpsc::UnboundedSender<Event>),
    Bounded(mpsc::UnboundedSender<Event>, Arc<Room>),
    Fn(Arc<dyn Fn(Event) + Send + Sync>),
}

/// The room left in the queue of [`Events::bounded`].
///
/// Every queued event holds a place: a permit taken from `free`, or, when [`Events::send`]
/// found none (it never waits), a place counted in `over`. The reader gives places back as it
/// takes events, paying off `over` first, so the queue holds at most `capacity` events plus
/// what the non-waiting senders added.
#[derive(Debug)]
struct Room {
    free: Semaphore,
    over: AtomicUsize,
}

impl Room {
    fn take_now(&self) {
        match self.free.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                self.over.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn give_back(&self) {
        let paid_off = self
            .over
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| o.checked_sub(1))
            .is_ok();
        if !paid_off {
            self.free.add_permits(1);
        }
    }
}

/// A cheap, cloneable handle that sends events to whoever watches a run.
///
/// It remembers a stage and a platform, so a backend only says `events.log("...")`.
/// Sending never blocks and never fails: when nobody listens, events are dropped. Only the
/// async methods ([`Events::log_async`], [`Events::send_async`]) wait, and only for the reader of
/// [`Events::bounded`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use hephy_core::{Events, Platform, Stage};
/// let (events, mut stream) = Events::channel();
/// let build = events.with_stage(Stage::Build).with_platform(Platform::linux_amd64());
/// build.log("compiling");
/// drop((events, build));
/// let e = stream.recv().await.unwrap();
/// assert_eq!(e.render(), "[linux/amd64] compiling");
/// # }
/// ```
#[derive(Clone)]
pub struct Events {
    sink: Sink,
    stage: Stage,
    platform: Option<Platform>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("stage", &self.stage)
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

/// The receiving end of [`Events::channel`] and [`Events::bounded`].
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
    room: Option<Arc<Room>>,
}

impl EventStream {
    /// The next event; `None` once every [`Events`] handle is dropped.
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        self.taken(event)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        let event = self.rx.try_recv().ok();
        self.taken(event)
    }

    fn taken(&self, event: Option<Event>) -> Option<Event> {
        if let (Some(_), Some(room)) = (&event, &self.room) {
            room.give_back();
        }
        event
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // Senders waiting for room must not wait for a reader that is gone.
        if let Some(room) = &self.room {
            room.free.close();
        }
    }
}

impl Events {
    /// A handle whose events go to the returned stream.
    pub fn channel() -> (Events, EventStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Events::with_sink(Sink::Channel(tx)),
            EventStream { rx, room: None },
        )
    }

    /// A handle whose events go to the returned stream, for a reader that may fall behind (a
    /// pusher on a slow connection): [`Events::send_async`] and [`Events::log_async`] wait while
    /// `capacity` events are unread, so the producer slows down instead of the queue growing.
    ///
    /// [`Events::send`], [`Events::log`] and [`Events::warn`] never wait: what they send takes a
    /// place in the queue when there is one and goes over the bound when there is none, rather
    /// than be lost. Use them for the lines the code writes (a few per stage), and the async
    /// methods for output whose volume the input decides, such as a build tool's lines. Once
    /// the stream is dropped nothing waits any more.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use hephy_core::Events;
    /// let (events, mut stream) = Events::bounded(1);
    /// events.log_async("first").await;
    /// // A second line would wait here until the reader takes the first.
    /// let writer = tokio::spawn(async move { events.log_async("second").await });
    /// assert_eq!(stream.recv().await.unwrap().render(), "       first");
    /// assert_eq!(stream.recv().await.unwrap().render(), "       second");
    /// writer.await.unwrap();
    /// # }
    /// ```
    pub fn bounded(capacity: usize) -> (Events, EventStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Room {
            free: Semaphore::new(capacity.clamp(1, Semaphore::MAX_PERMITS)),
            over: AtomicUsize::new(0),
        });
        (
            Events::with_sink(Sink::Bounded(tx, room.clone())),
            EventStream {
                rx,
                room: Some(room),
            },
        )
    }

    /// A handle that calls `f` for every event, on the sender's thread.
    pub fn from_fn(f: impl Fn(Event) + Send + Sync + 'static) -> Events {
        Events::with_sink(Sink::Fn(Arc::new(f)))
    }

    /// A handle that drops every event.
    pub fn discard() -> Events {
        Events::with_sink(Sink::Discard)
    }

    fn with_sink(sink: Sink) -> Events {
        Events {
            sink,
            stage: Stage::Source,
            platform: None,
        }
    }

    /// The same sink, for `stage`.
    pub fn with_stage(&self, stage: Stage) -> Events {
        Events {
            stage,
            ..self.clone()
        }
    }

    /// The same sink and stage, for `platform`.
    pub fn with_platform(&self, platform: Platform) -> Events {
        Events {
            platform: Some(platform),
            ..self.clone()
        }
    }

    /// The stage events are sent for.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The platform events are sent for.
    pub fn platform(&self) -> Option<&Platform> {
        self.platform.as_ref()
    }

    /// Sends `kind` for this handle's stage and platform.
    pub fn emit(&self, kind: EventKind) {
        self.send(Event::new(self.stage, self.platform.clone(), kind));
    }

    /// Sends a whole event as it is.
    pub fn send(&self, event: Event) {
        match &self.sink {
            Sink::Discard => {}
            Sink::Channel(tx) => {
                let _ = tx.send(event);
            }
            Sink::Bounded(tx, room) => {
                room.take_now();
                let _ = tx.send(event);
            }
            Sink::Fn(f) => f(event),
        }
    }

    /// [`Events::send`] that first waits for room in the queue of [`Events::bounded`]; the same
    /// as [`Events::send`] for every other handle.
    pub async fn send_async(&self, event: Event) {
        if let Sink::Bounded(tx, room) = &self.sink {
            // An error means the stream is gone; the send below then drops the event.
            if let Ok(permit) = room.free.acquire().await {
                permit.forget();
            }
            let _ = tx.send(event);
            return;
        }
        self.send(event);
    }

    /// Sends a log line (a trailing line ending is removed; embedded newlines split the line).
    pub fn log(&self, line: impl AsRef<str>) {
        for line in split_lines(line.as_ref()) {
            self.emit(EventKind::Log { line });
        }
    }

    /// [`Events::log`] that waits for room in the queue of [`Events::bounded`] before each line.
    pub async fn log_async(&self, line: impl AsRef<str>) {
        for line in split_lines(line.as_ref()) {
            let event = Event::new(self.stage, self.platform.clone(), EventKind::Log { line });
            self.send_async(event).await;
        }
    }

    /// Sends a warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.emit(EventKind::Warning {
            message: message.into(),
        });
    }
}

fn split_lines(line: &str) -> Vec<String> {
    line.trim_end_matches(['\r', '\n'])
        .split('\n')
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect()
}
