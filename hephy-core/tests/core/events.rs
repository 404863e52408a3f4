use std::time::Duration;

use hephy_core::{format_elapsed, Event, EventKind, Events, Outcome, Platform, Stage};

#[test]
fn rendering_of_a_combined_stream() {
    let amd = Some(Platform::linux_amd64());
    let arm = Some(Platform::linux_arm64());
    let events = [
        Event::new(Stage::Source, None, EventKind::Started),
        Event::new(
            Stage::Source,
            None,
            EventKind::Log {
                line: "Checking out 1a2b3c4 (refs/heads/main)".into(),
            },
        ),
        Event::new(
            Stage::Source,
            None,
            EventKind::Finished {
                elapsed: Duration::from_millis(120),
                outcome: Outcome::Succeeded,
            },
        ),
        Event::new(
            Stage::Detect,
            None,
            EventKind::Log {
                line: "Detected a go app: found go.mod".into(),
            },
        ),
        Event::new(Stage::Build, amd.clone(), EventKind::Started),
        Event::new(Stage::Build, arm.clone(), EventKind::Started),
        Event::new(
            Stage::Build,
            arm.clone(),
            EventKind::Log {
                line: "go build ./...".into(),
            },
        ),
        Event::new(
            Stage::Build,
            amd.clone(),
            EventKind::Warning {
                message: "slow disk".into(),
            },
        ),
        Event::new(
            Stage::Build,
            amd,
            EventKind::Finished {
                elapsed: Duration::from_secs(12),
                outcome: Outcome::Succeeded,
            },
        ),
        Event::new(
            Stage::Build,
            arm,
            EventKind::Finished {
                elapsed: Duration::from_secs(75),
                outcome: Outcome::Failed,
            },
        ),
        Event::new(
            Stage::Publish,
            None,
            EventKind::Warning {
                message: "linux/arm64 is not published".into(),
            },
        ),
        Event::new(
            Stage::Deploy,
            None,
            EventKind::Finished {
                elapsed: Duration::from_millis(3),
                outcome: Outcome::TimedOut,
            },
        ),
        Event::new(
            Stage::Deploy,
            None,
            EventKind::Finished {
                elapsed: Duration::from_millis(3),
                outcome: Outcome::Cancelled,
            },
        ),
    ];
    let lines: Vec<String> = events.iter().map(Event::render).collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn elapsed_formatting() {
    assert_eq!(format_elapsed(Duration::from_millis(420)), "0.42s");
    assert_eq!(format_elapsed(Duration::from_millis(12_340)), "12.3s");
    assert_eq!(format_elapsed(Duration::from_secs(125)), "2m05s");
}

#[test]
fn handles_split_lines_and_carry_stage_and_platform() {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    let events = Events::from_fn(move |e| {
        if let Ok(mut v) = sink.lock() {
            v.push(e)
        }
    });
    let build = events
        .with_stage(Stage::Build)
        .with_platform(Platform::linux_arm64());
    build.log("one\r\ntwo\n");
    build.warn("careful");
    events.discard_check();
    let got = got.lock().map(|v| v.clone()).unwrap_or_default();
    let rendered: Vec<String> = got.iter().map(Event::render).collect();
    assert_eq!(
        rendered,
        [
            "[linux/arm64] one",
            "[linux/arm64] two",
            " !     [linux/arm64] careful"
        ]
    );
}

trait DiscardCheck {
    fn discard_check(&self);
}

impl DiscardCheck for Events {
    // A discarding handle accepts everything and delivers nothing.
    fn discard_check(&self) {
        let d = Events::discard().with_stage(Stage::Deploy);
        d.log("dropped");
        assert_eq!(d.stage(), Stage::Deploy);
        assert!(d.platform().is_none());
    }
}

#[tokio::test]
async fn a_bounded_stream_makes_async_senders_wait_and_never_loses_lines() -> crate::Result {
    let (events, mut stream) = Events::bounded(2);
    let build = events.with_stage(Stage::Build);
    build.log_async("one").await;
    build.log_async("two").await;
    // The queue is full: a third line waits for the reader.
    let third = build.log_async("three");
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut third)
            .await
            .is_err(),
        "log_async did not wait for room in a full queue"
    );
    // Lines the code sends without waiting go over the bound rather than be lost.
    build.warn("careful");
    let first = stream.recv().await.map(|e| e.render());
    assert_eq!(first.as_deref(), Some("       one"));
    // One place was freed, but it pays off the warning that went over: still no room.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut third)
            .await
            .is_err(),
        "log_async got a place that the over-the-bound warning held"
    );
    assert_eq!(
        stream.recv().await.map(|e| e.render()).as_deref(),
        Some("       two")
    );
    tokio::time::timeout(Duration::from_secs(5), &mut third)
        .await
        .map_err(|_| "log_async still waits after the reader made room")?;
    let rest: Vec<String> = std::iter::from_fn(|| stream.try_recv())
        .map(|e| e.render())
        .collect();
    assert_eq!(rest, [" !     careful", "       three"]);

    // Without a reader, nothing waits.
    drop(stream);
    for i in 0..10 {
        tokio::time::timeout(Duration::from_secs(5), build.log_async(format!("{i}")))
            .await
            .map_err(|_| "log_async waited for a reader that is gone")?;
    }
    Ok(())
}
