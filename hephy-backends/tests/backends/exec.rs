//! Running build tools: what a tool prints reaches the events whatever its bytes.

use std::time::Duration;

use hephy_backends::exec::{self, MAX_LINE_BYTES};
use hephy_core::{Event, EventKind, Events};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn sh(script: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(script);
    cmd
}

fn log_lines(events: Vec<Event>) -> Vec<String> {
    events
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Log { line } => Some(line),
            _ => None,
        })
        .collect()
}

/// A line that is not UTF-8 used to end the reader, and the tool then died on a closed pipe.
#[tokio::test]
async fn lines_that_are_not_utf8_are_passed_on_and_the_tool_runs_to_its_end() -> TestResult {
    let (events, mut stream) = Events::channel();
    // Enough lines after the bad one to fill a pipe, so a reader that stopped would kill the
    // tool with SIGPIPE.
    let script = r"printf 'before\n\377\376 latin-1: caf\351\n'; i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done; echo last";
    let out = exec::run(sh(script), &events, 3).await?;
    drop(events);
    let mut got = vec![];
    while let Some(e) = stream.recv().await {
        got.push(e);
    }
    let lines = log_lines(got);
    assert_eq!(lines.len(), 2 + 20_000 + 1, "lines were lost");
    assert_eq!(lines[0], "before");
    assert_eq!(lines[1], "\u{FFFD}\u{FFFD} latin-1: caf\u{FFFD}");
    assert_eq!(lines[2], "line 0");
    assert_eq!(lines.last().map(String::as_str), Some("last"));
    assert_eq!(out.tail, ["line 19998", "line 19999", "last"]);
    Ok(())
}

/// A tool printing without a newline cannot make one line grow without bound: its output is
/// split into lines of MAX_LINE_BYTES, and nothing is lost.
#[tokio::test]
async fn an_endless_line_is_split() -> TestResult {
    let (events, mut stream) = Events::channel();
    let total = 3 * MAX_LINE_BYTES + 1000;
    let script = format!("head -c {total} /dev/zero | tr '\\0' x; echo; echo next");
    exec::run(sh(&script), &events, 0).await?;
    drop(events);
    let mut got = vec![];
    while let Some(e) = stream.recv().await {
        got.push(e);
    }
    let lines = log_lines(got);
    let lengths: Vec<usize> = lines.iter().map(String::len).collect();
    assert_eq!(
        lengths,
        [MAX_LINE_BYTES, MAX_LINE_BYTES, MAX_LINE_BYTES, 1000, 4]
    );
    assert!(lines[..4].iter().all(|l| l.bytes().all(|b| b == b'x')));
    assert_eq!(lines[4], "next");
    Ok(())
}

/// A reader that falls behind slows the tool down instead of queueing its output: with a
/// bounded stream nobody reads, the tool blocks, and it finishes once the reader catches up.
#[tokio::test]
async fn a_slow_reader_holds_the_tool_back() -> TestResult {
    let (events, mut stream) = Events::bounded(16);
    // More than a pipe holds, so the tool itself has to wait.
    let script = "seq 1 50000";
    let run = exec::run(sh(script), &events, 0);
    tokio::pin!(run);
    // Nobody reads: the run cannot finish, and no more than the bound is queued.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut run)
            .await
            .is_err(),
        "the tool finished although nobody read its lines"
    );
    let mut queued = 0;
    while stream.try_recv().is_some() {
        queued += 1;
    }
    assert!(queued <= 16, "{queued} lines were queued; the bound is 16");
    let mut seen = queued;
    let read = async {
        while stream.recv().await.is_some() {
            seen += 1;
        }
    };
    tokio::select! {
        r = &mut run => { r?; }
        () = read => return Err("the stream ended before the run".into()),
    }
    while stream.try_recv().is_some() {
        seen += 1;
    }
    assert_eq!(seen, 50_000, "lines were lost");
    Ok(())
}
