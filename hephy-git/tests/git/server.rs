//! GitServerBuilder: the runtime it needs, the pipeline's source, and hephy's CLI hints.

use std::sync::Arc;

use hephy_core::{Pipeline, PipelineBuildError, RuntimeError};
use hephy_git::auth::User;
use hephy_git::{AppError, GitServer, GitSource, ReceiveError, ServerBuildError};
use hephy_oci::OciLayoutPublisher;
use tokio::io::AsyncReadExt;

use crate::*;

/// A pipeline builder of the files backend with `source`, publishing under `dir`.
fn files_pipeline(source: GitSource, dir: &Path) -> hephy_core::PipelineBuilder {
    Pipeline::builder()
        .source(Arc::new(source))
        .backend(Arc::new(FilesBackend::new()))
        .publisher(Arc::new(OciLayoutPublisher::new(dir.join("images"))))
}

#[test]
fn a_runtime_without_timers_is_refused_by_the_builder_and_by_each_push() -> Result {
    let dir = tempfile::tempdir()?;
    let no_time = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let built = no_time.block_on(async {
        GitServer::builder(dir.path().join("data"))
            .pipeline_with(|source| files_pipeline(source, dir.path()))
            .build()
            .map(|_| ())
    });
    let Err(ServerBuildError::Runtime(e)) = built else {
        return Err(format!("expected a runtime error, got {built:?}").into());
    };
    assert_eq!(e, RuntimeError::TimeDisabled);
    insta::assert_snapshot!(e.to_string());

    // Built outside any runtime (to manage apps), the server takes no push on that runtime:
    // the session says why instead of panicking at its first keepalive.
    let server = GitServer::builder(dir.path().join("data")).build()?;
    let app: AppName = "hello".parse()?;
    server.create_app(&app, "alice")?;
    let user = User::new("alice", true);
    let r =
        no_time.block_on(server.receive_pack(&user, &app, tokio::io::empty(), tokio::io::sink()));
    assert!(
        matches!(r, Err(ReceiveError::Runtime(RuntimeError::TimeDisabled))),
        "expected the runtime error, got {r:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_builder_refuses_a_pipeline_that_reads_other_repositories() -> Result {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let other = dir.path().join("other");
    let message = |e: ServerBuildError| {
        e.to_string()
            .replace(&dir.path().display().to_string(), "[tmp]")
    };

    // A GitSource on another data directory would answer "no repository" for every push.
    let pipeline = files_pipeline(GitSource::new(&other), dir.path()).build()?;
    let e = GitServer::builder(&data)
        .pipeline(Arc::new(pipeline))
        .build()
        .err()
        .ok_or("a source on another data directory was accepted")?;
    assert!(matches!(e, ServerBuildError::ForeignSource { .. }));
    insta::assert_snapshot!("foreign_source", message(e));

    // One repository for every app reads the wrong repository, and builds it.
    let pipeline = files_pipeline(GitSource::repository(&other), dir.path()).build()?;
    let e = GitServer::builder(&data)
        .pipeline(Arc::new(pipeline))
        .build()
        .err()
        .ok_or("a one-repository source was accepted")?;
    assert!(matches!(e, ServerBuildError::ForeignSource { .. }));

    // No source: no push could be built.
    let pipeline = Pipeline::builder()
        .backend(Arc::new(FilesBackend::new()))
        .publisher(Arc::new(OciLayoutPublisher::new(dir.path().join("images"))))
        .build()?;
    let e = GitServer::builder(&data)
        .pipeline(Arc::new(pipeline))
        .build()
        .err()
        .ok_or("a pipeline without a source was accepted")?;
    insta::assert_snapshot!("no_source", message(e));

    // pipeline_with supplies the right source, and returns the pipeline's own errors.
    let e = GitServer::builder(&data)
        .pipeline_with(|source| Pipeline::builder().source(Arc::new(source)))
        .build()
        .err()
        .ok_or("a pipeline without a publisher was accepted")?;
    assert!(matches!(
        e,
        ServerBuildError::Pipeline(PipelineBuildError::NoPublisher)
    ));
    GitServer::builder(&data)
        .pipeline_with(|source| files_pipeline(source, dir.path()))
        .build()?;
    // The same directory spelled another way is the same directory.
    let pipeline = files_pipeline(GitSource::new(data.join(".")), dir.path()).build()?;
    GitServer::builder(&data)
        .pipeline(Arc::new(pipeline))
        .build()?;
    Ok(())
}

#[tokio::test]
async fn messages_speak_the_library_and_hints_are_shown_only_when_asked() -> Result {
    let dir = tempfile::tempdir()?;
    let server = GitServer::builder(dir.path()).build()?;
    let nope: AppName = "nope".parse()?;

    let e = server
        .delete_app(&nope)
        .err()
        .ok_or("deleted an unknown app")?;
    assert!(matches!(e, AppError::Unknown { .. }));
    assert_eq!(e.to_string(), "app nope does not exist: create it first");
    assert_eq!(e.hint().as_deref(), Some("run `hephy apps create nope`"));

    // A push to an unknown app gets the message alone from a server without cli_hints.
    let (client, server_end) = tokio::io::duplex(64 * 1024);
    let (input, output) = tokio::io::split(server_end);
    let user = User::new("alice", true);
    let e = server
        .receive_pack(&user, &nope, input, output)
        .await
        .err()
        .ok_or("a push to an unknown app was served")?;
    assert_eq!(e.hint().as_deref(), Some("run `hephy apps create nope`"));
    let (mut read, _write) = tokio::io::split(client);
    let mut answer = vec![0; 200];
    let n = read.read(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(
        answer.ends_with("ERR app nope does not exist: create it first\n"),
        "{answer}"
    );
    Ok(())
}
