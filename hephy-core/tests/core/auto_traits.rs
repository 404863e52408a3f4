//! The auto traits (`Send`, `Sync`, `Unpin`, `UnwindSafe`, `RefUnwindSafe`) of every public
//! type of hephy-core, pinned in a snapshot. Losing one is a breaking change that neither the
//! public-API snapshot (it reads the source, and auto traits are not written there) nor the
//! compiler inside this crate notices: a private field of another type is enough.
//!
//! The list below must name every public struct, enum and type alias that `api.rs` finds, so a new
//! public type fails [`every_public_type_is_listed`] until it is added here.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::panic::{RefUnwindSafe, UnwindSafe};

use crate::Result;

/// Tells at compile time whether a concrete type has an auto trait: an inherent method whose
/// bound holds is chosen over the trait method of the same name, which answers `false`.
struct Probe<T: ?Sized>(PhantomData<T>);

trait Fallback {
    fn send(&self) -> bool {
        false
    }
    fn sync(&self) -> bool {
        false
    }
    fn unpin(&self) -> bool {
        false
    }
    fn unwind_safe(&self) -> bool {
        false
    }
    fn ref_unwind_safe(&self) -> bool {
        false
    }
}

impl<T: ?Sized> Fallback for Probe<T> {}

macro_rules! inherent {
    ($method:ident, $bound:path) => {
        impl<T: ?Sized + $bound> Probe<T> {
            #[allow(dead_code)] // called through the macro below only
            fn $method(&self) -> bool {
                true
            }
        }
    };
}
inherent!(send, Send);
inherent!(sync, Sync);
inherent!(unpin, Unpin);
inherent!(unwind_safe, UnwindSafe);
inherent!(ref_unwind_safe, RefUnwindSafe);

/// `module::Name => path` for each public type: its name as `api.rs` finds it, and the type.
macro_rules! facts {
    ($($module:ident :: $name:ident => $ty:ty,)*) => {
        vec![$({
            let p = Probe::<$ty>(PhantomData);
            let has = |yes: bool, t: &str| if yes { t.to_owned() } else { format!("!{t}") };
            (
                concat!(stringify!($module), "::", stringify!($name)).to_owned(),
                [
                    has(p.send(), "Send"),
                    has(p.sync(), "Sync"),
                    has(p.unpin(), "Unpin"),
                    has(p.unwind_safe(), "UnwindSafe"),
                    has(p.ref_unwind_safe(), "RefUnwindSafe"),
                ]
                .join(" "),
            )
        },)*]
    };
}

fn table() -> Vec<(String, String)> {
    facts! {
        app::AppName => hephy_core::AppName,
        app::AppNameError => hephy_core::AppNameError,
        backend::BuildError => hephy_core::BuildError,
        backend::BuildTarget => hephy_core::BuildTarget,
        backend::BuiltImage => hephy_core::BuiltImage,
        backend::Confidence => hephy_core::Confidence,
        backend::Detection => hephy_core::Detection,
        config::AppConfig => hephy_core::AppConfig,
        config::BackendChoice => hephy_core::BackendChoice,
        config::BackendSettings => hephy_core::BackendSettings,
        config::BuildConfig => hephy_core::BuildConfig,
        config::ConfigError => hephy_core::ConfigError,
        config::DeployConfig => hephy_core::DeployConfig,
        config::Egress => hephy_core::Egress,
        config::HealthCheck => hephy_core::HealthCheck,
        config::PlatformFailurePolicy => hephy_core::PlatformFailurePolicy,
        config::Resources => hephy_core::Resources,
        config::Strategy => hephy_core::Strategy,
        context::BuildContext => hephy_core::BuildContext,
        context::Revision => hephy_core::Revision,
        deploy::DeployError => hephy_core::DeployError,
        digest::Digest => hephy_core::Digest,
        digest::DigestError => hephy_core::DigestError,
        error::BoxError => hephy_core::BoxError,
        event::Event => hephy_core::Event,
        event::EventKind => hephy_core::EventKind,
        event::EventStream => hephy_core::EventStream,
        event::Events => hephy_core::Events,
        event::Outcome => hephy_core::Outcome,
        event::Stage => hephy_core::Stage,
        fs::FileMode => hephy_core::fs::FileMode,
        job::Job => hephy_core::Job,
        job::Report => hephy_core::Report,
        pipeline::Pipeline => hephy_core::Pipeline,
        pipeline::PipelineBuildError => hephy_core::PipelineBuildError,
        pipeline::PipelineBuilder => hephy_core::PipelineBuilder,
        pipeline::PipelineError => hephy_core::PipelineError,
        pipeline::PlatformFailure => hephy_core::PlatformFailure,
        platform::Platform => hephy_core::Platform,
        platform::PlatformError => hephy_core::PlatformError,
        publish::PublishError => hephy_core::PublishError,
        publish::PublishRequest => hephy_core::PublishRequest,
        publish::Published => hephy_core::Published,
        reference::Reference => hephy_core::Reference,
        reference::ReferenceError => hephy_core::ReferenceError,
        release::ConfigChange => hephy_core::ConfigChange,
        release::ConfigVarError => hephy_core::ConfigVarError,
        release::ConfigVars => hephy_core::ConfigVars,
        release::NewRelease => hephy_core::NewRelease,
        release::Release => hephy_core::Release,
        release::ReleaseCause => hephy_core::ReleaseCause,
        release::ReleaseVersion => hephy_core::ReleaseVersion,
        release::ReleaseVersionError => hephy_core::ReleaseVersionError,
        runtime::RuntimeError => hephy_core::RuntimeError,
        source::SourceError => hephy_core::SourceError,
    }
}

#[test]
fn auto_traits_of_public_types() {
    let lines: Vec<String> = table()
        .into_iter()
        .map(|(name, facts)| format!("{name}: {facts}"))
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn the_probe_sees_missing_auto_traits() {
    let rc = Probe::<std::rc::Rc<()>>(PhantomData);
    assert!(!rc.send() && !rc.sync(), "Rc is neither Send nor Sync");
    let pinned = Probe::<std::marker::PhantomPinned>(PhantomData);
    assert!(!pinned.unpin(), "PhantomPinned is not Unpin");
    let cell = Probe::<std::cell::Cell<u8>>(PhantomData);
    assert!(
        cell.send() && !cell.ref_unwind_safe(),
        "Cell is Send, not RefUnwindSafe"
    );
    let mut_ref = Probe::<&mut u8>(PhantomData);
    assert!(!mut_ref.unwind_safe(), "&mut is not UnwindSafe");
}

#[test]
fn every_public_type_is_listed() -> Result {
    let listed: BTreeSet<String> = table().into_iter().map(|(name, _)| name).collect();
    let public = crate::api::public_types()?;
    let missing: Vec<_> = public.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&public).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "add these public types to the list in tests/core/auto_traits.rs: {missing:?}; \
         remove these, which are no longer public types: {gone:?}"
    );
    Ok(())
}
