//! The registry publisher and puller against Debian's docker-registry, checked with skopeo.

use hephy_backends::testing::{skopeo_list_tags, TestRegistry, TestingError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn test_registry_starts_answers_and_stops() -> TestResult {
    let registry = TestRegistry::start()?;
    let addr = registry.addr();
    let repo = format!("{}/nothing/here", registry.host());
    assert_eq!(skopeo_list_tags(&repo, None)?, Vec::<String>::new());
    assert!(registry.repositories().is_empty());
    registry.stop();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the registry on {addr} should be gone after stop()"
    );
    Ok(())
}

#[test]
fn test_registry_with_auth_refuses_wrong_credentials() -> TestResult {
    let registry = TestRegistry::start_with_auth("hephy", "s3cret")?;
    let repo = format!("{}/nothing/here", registry.host());
    assert_eq!(skopeo_list_tags(&repo, registry.credentials())?, Vec::<String>::new());
    match skopeo_list_tags(&repo, Some(("hephy", "wrong"))) {
        Err(TestingError::Failed { stderr, .. }) => assert!(
            stderr.contains("unauthorized") || stderr.contains("401"),
            "expected skopeo to report 401 unauthorized, got: {stderr}"
        ),
        other => panic!("expected wrong credentials to fail, got {other:?}"),
    }
    Ok(())
}
