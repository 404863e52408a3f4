//! Refs: the advertisement, checking what a push brings, and compare-and-swap updates with
//! gix-ref transactions.

use std::collections::HashSet;

use gix::bstr::ByteSlice;
use gix::objs::{Find as _, Kind};
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::{FullName, Target};
use gix::ObjectId;

use super::commands::{advertised_capabilities, Command};
use super::pack::ReceivedPack;
use super::pktline;

/// The refs of a repository, sorted by name, with the object each points to.
pub(crate) fn list(repo: &gix::Repository) -> Result<Vec<(String, ObjectId)>, String> {
    let platform = repo.references().map_err(|e| e.to_string())?;
    let mut refs = vec![];
    for r in platform.all().map_err(|e| e.to_string())? {
        let r = r.map_err(|e| e.to_string())?;
        if let Some(id) = r.target().try_id() {
            refs.push((
                r.name().as_bstr().to_str_lossy().into_owned(),
                id.to_owned(),
            ));
        }
    }
    refs.sort();
    Ok(refs)
}

/// The ref advertisement of a receive-pack session, as pkt-lines ending with a flush.
pub(crate) fn advertisement(refs: &[(String, ObjectId)], version1: bool) -> Vec<u8> {
    let mut out = vec![];
    if version1 {
        pktline::encode(b"version 1\n", &mut out);
    }
    let caps = advertised_capabilities();
    if refs.is_empty() {
        let line = format!(
            "{} capabilities^{{}}\0{caps}\n",
            ObjectId::null(gix::hash::Kind::Sha1)
        );
        pktline::encode(line.as_bytes(), &mut out);
    }
    for (i, (name, id)) in refs.iter().enumerate() {
        let line = if i == 0 {
            format!("{id} {name}\0{caps}\n")
        } else {
            format!("{id} {name}\n")
        };
        pktline::encode(line.as_bytes(), &mut out);
    }
    pktline::flush(&mut out);
    out
}

/// Checks a command against the repository before anything changes; the error is the text of
/// its `ng` line.
pub(crate) fn check(
    repo: &gix::Repository,
    cmd: &Command,
    current: Option<ObjectId>,
) -> Result<(), String> {
    if !cmd.name.starts_with("refs/") || FullName::try_from(cmd.name.as_str()).is_err() {
        return Err("funny refname".into());
    }
    let expected = if cmd.old.is_null() {
        None
    } else {
        Some(cmd.old)
    };
    if current != expected {
        return Err("stale info: the ref changed since you fetched; fetch and try again".into());
    }
    // Deletes need no capability in the request: git only checks that delete-refs was
    // advertised before it sends one.
    if cmd.is_delete() {
        return Ok(());
    }
    if cmd.name.starts_with("refs/heads/") {
        match repo.find_header(cmd.new) {
            Ok(h) if h.kind() == Kind::Commit => {}
            Ok(h) => {
                return Err(format!(
                    "a branch must point to a commit, not a {}",
                    h.kind()
                ))
            }
            Err(_) => {
                return Err(format!(
                    "missing necessary objects: {} is not here",
                    cmd.new
                ))
            }
        }
    }
    Ok(())
}

/// Checks that every object reachable from `tip` is in the repository.
///
/// Objects that were here before the push are complete (every push is checked), so the walk only
/// descends into objects of the new pack and stops at the old ones: it costs the size of the
/// push, not of the history.
pub(crate) fn connected(
    repo: &gix::Repository,
    pack: Option<&ReceivedPack>,
    tip: ObjectId,
    seen: &mut HashSet<ObjectId>,
) -> Result<(), String> {
    // (object, whether a tree entry says it is a blob)
    let mut stack = vec![(tip, false)];
    let mut buf = vec![];
    let kind = repo.object_hash();
    while let Some((id, blob)) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let in_pack = pack.is_some_and(|p| p.contains(&id));
        // Blobs link to nothing: being there is enough, so they are never inflated here.
        if !in_pack || blob {
            if in_pack || repo.has_object(id) {
                continue;
            }
            return Err(format!(
                "missing necessary objects: {id} is not in the pack nor in the repository"
            ));
        }
        let data = repo
            .objects
            .try_find(&id, &mut buf)
            .map_err(|e| format!("cannot read object {id}: {e}"))?
            .ok_or_else(|| format!("object {id} of the pack cannot be read"))?;
        match data.kind {
            Kind::Commit => {
                let mut commit = gix::objs::CommitRefIter::from_bytes(data.data, kind);
                let tree = commit
                    .tree_id()
                    .map_err(|e| format!("commit {id} is malformed: {e}"))?;
                stack.push((tree, false));
                stack.extend(
                    gix::objs::CommitRefIter::from_bytes(data.data, kind)
                        .parent_ids()
                        .map(|p| (p, false)),
                );
            }
            Kind::Tree => {
                for entry in gix::objs::TreeRefIter::from_bytes(data.data, kind) {
                    let entry = entry.map_err(|e| format!("tree {id} is malformed: {e}"))?;
                    // Submodule commits live in another repository.
                    if !entry.mode.is_commit() {
                        stack.push((entry.oid.to_owned(), entry.mode.is_blob_or_symlink()));
                    }
                }
            }
            Kind::Tag => {
                let target = gix::objs::TagRefIter::from_bytes(data.data, kind)
                    .target_id()
                    .map_err(|e| format!("tag {id} is malformed: {e}"))?;
                stack.push((target, false));
            }
            Kind::Blob => {}
        }
    }
    Ok(())
}

/// The edit that performs `cmd` if the ref still has the value the client saw.
pub(crate) fn edit(cmd: &Command) -> Result<RefEdit, String> {
    let name = FullName::try_from(cmd.name.as_str()).map_err(|_| "funny refname".to_owned())?;
    let expected = if cmd.old.is_null() {
        PreviousValue::MustNotExist
    } else {
        PreviousValue::MustExistAndMatch(Target::Object(cmd.old))
    };
    let change = if cmd.is_delete() {
        Change::Delete {
            expected,
            log: RefLog::AndReference,
        }
    } else {
        Change::Update {
            log: LogChange {
                mode: RefLog::AndReference,
                force_create_reflog: false,
                message: "push".into(),
            },
            expected,
            new: Target::Object(cmd.new),
        }
    };
    Ok(RefEdit {
        change,
        name,
        deref: false,
    })
}

/// Applies `edits` as one transaction: all or none.
pub(crate) fn apply(repo: &gix::Repository, edits: Vec<RefEdit>, user: &str) -> Result<(), String> {
    let committer = gix::actor::Signature {
        name: user.into(),
        email: format!("{user}@hephy").into(),
        time: gix::date::Time::now_utc(),
    };
    let mut buf = gix::date::parse::TimeBuf::default();
    repo.edit_references_as(edits, Some(committer.to_ref(&mut buf)))
        .map(|_| ())
        .map_err(|e| format!("failed to update ref: {e}"))
}
