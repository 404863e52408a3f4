//! `BuildEnv`'s helpers for builds run as root of a user namespace: the context copy.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use hephy_backends::sandbox::{BuildUser, BUILD_USERNS_BASE};

use crate::support::env;

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

#[test]
fn a_context_copy_belongs_to_the_build_user_and_follows_no_link() -> Result {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("repo");
    std::fs::create_dir_all(src.join("a/b"))?;
    std::fs::write(src.join("a/b/private"), "only root reads the original")?;
    std::fs::set_permissions(
        src.join("a/b/private"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    std::os::unix::fs::symlink("/etc/passwd", src.join("a/passwd"))?;
    // The copy goes inside the tree it copies, as an output directory in a checkout would.
    let dst = src.join("out/copy");
    std::fs::create_dir_all(src.join("out"))?;
    env()?.copy_tree_as(&src, &dst, BuildUser::NamespaceRoot)?;

    let private = std::fs::symlink_metadata(dst.join("a/b/private"))?;
    assert_eq!(private.mode() & 0o7777, 0o600);
    assert_eq!(private.uid(), BUILD_USERNS_BASE);
    assert_eq!(
        std::fs::read_to_string(dst.join("a/b/private"))?,
        "only root reads the original"
    );
    let link = std::fs::symlink_metadata(dst.join("a/passwd"))?;
    assert!(link.file_type().is_symlink(), "a link is copied as a link");
    assert_eq!(link.uid(), BUILD_USERNS_BASE);
    assert_eq!(
        std::fs::read_link(dst.join("a/passwd"))?,
        std::path::Path::new("/etc/passwd")
    );
    assert!(
        !dst.join("out/copy").exists(),
        "the copy must not copy itself"
    );
    Ok(())
}
