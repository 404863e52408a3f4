//! [`check_runtime`]: hephy's one rule about the async runtime, checked up front.
//!
//! Every async entry point of hephy (a [`Pipeline`](crate::Pipeline) run, the push server's
//! sessions) uses tokio's timers (stage timeouts, keepalives) and tokio's IO (sockets,
//! processes). tokio panics when they are used on a runtime built without them, and that would
//! happen only when a push's `hephy.toml` asks for a timeout: the pushed content would decide
//! whether the embedding program crashes. The builders and runs check first instead.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

/// The error returned by [`check_runtime`]: the tokio runtime cannot run hephy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No tokio runtime is running on this thread.
    #[error("no tokio runtime is running here, and hephy needs one with time and IO enabled: run this inside #[tokio::main], or build the runtime with tokio::runtime::Builder::enable_time() and enable_io() (or enable_all()) and call it from the runtime")]
    NoRuntime,
    /// The runtime was built without timers.
    #[error("the tokio runtime has timers disabled, and hephy needs them for timeouts and keepalives: build the runtime with enable_time() and enable_io() (or enable_all()), or use #[tokio::main]")]
    TimeDisabled,
    /// The runtime was built without IO.
    #[error("the tokio runtime has IO disabled, and hephy needs it for sockets and build processes: build the runtime with enable_time() and enable_io() (or enable_all()), or use #[tokio::main]")]
    IoDisabled,
}

/// Checks that the current thread runs inside a tokio runtime with time and IO enabled, as
/// every async entry point of hephy needs (`#[tokio::main]` and `#[tokio::test]` enable both).
///
/// [`PipelineBuilder::build`](crate::PipelineBuilder::build) and the push server's builder call
/// it: on a runtime without time or IO they return this error instead of a panic at push time.
/// Built outside any runtime (in a synchronous `main` before the runtime starts), they accept,
/// and the runs check again when they start.
///
/// tokio offers no question for "are timers enabled", so this asks by creating a zero-length
/// timer and a socket pair and catching the panic tokio raises without them (the panic hook
/// prints it once). In a program built with `panic = "abort"` a runtime without time or IO
/// therefore still aborts here: build it with `enable_all()`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(hephy_core::check_runtime(), Ok(()));
/// # }
/// ```
pub fn check_runtime() -> Result<(), RuntimeError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(RuntimeError::NoRuntime);
    }
    // Sleep::new panics at once when the runtime has no timer driver; polling is not needed.
    if catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_err() {
        return Err(RuntimeError::TimeDisabled);
    }
    if !io_enabled() {
        return Err(RuntimeError::IoDisabled);
    }
    Ok(())
}

/// Whether registering a socket with the runtime's IO driver works. A socket pair that cannot
/// be made (no file descriptors left) says nothing about the runtime, so it counts as enabled.
#[cfg(unix)]
fn io_enabled() -> bool {
    catch_unwind(AssertUnwindSafe(|| drop(tokio::net::UnixDatagram::pair()))).is_ok()
}

#[cfg(not(unix))]
fn io_enabled() -> bool {
    true
}
