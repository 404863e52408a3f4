//! Host user ids of the apps. Every app's containers run in a user namespace whose ids
//! `0..65536` are a range of host ids that belong to that app alone, so an app's root is an
//! unprivileged host user, and two apps never share a host uid.
//!
//! The ranges start at host uid 1,000,000,000, above what `useradd` hands out as subordinate
//! ids (`SUB_UID_MAX` is 600,100,000 by default), and stay below 2^31, which some tools read as
//! negative. An app's range is allocated on its first release and kept as the ledger document
//! `ids`; a destroyed app's range is given to the next new app.

use std::path::Path;

use hephy_core::{AppName, DeployError};

use crate::ledger::Ledger;
use crate::runc::IdRange;

/// The host uid that is root in the first app's containers.
pub(crate) const FIRST_HOST_ID: u32 = 1_000_000_000;

/// How many ids each app has: 0 to 65535, the ids images use.
pub(crate) const IDS_PER_APP: u32 = 65_536;

/// How many apps can have a range below 2^31.
const SLOTS: u32 = ((1u64 << 31) - FIRST_HOST_ID as u64) as u32 / IDS_PER_APP;

/// The ledger document that holds an app's range.
const DOC: &str = "ids";

/// The app's range of host ids, allocated now if it has none. `lock` serializes allocations, so
/// two apps never get the same range.
pub(crate) fn ids_of(
    ledger: &Ledger,
    app: &AppName,
    lock: &std::sync::Mutex<()>,
) -> Result<IdRange, DeployError> {
    if let Some(ids) = ledger.read::<IdRange>(app, DOC)? {
        return Ok(ids);
    }
    // A poisoned lock only means another allocation panicked; the ledger is still consistent.
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ids) = ledger.read::<IdRange>(app, DOC)? {
        return Ok(ids);
    }
    let mut taken = vec![];
    for other in ledger.apps()? {
        if let Some(r) = ledger.read::<IdRange>(&other, DOC)? {
            taken.push(r.host_first);
        }
    }
    let free = (0..SLOTS)
        .map(|slot| FIRST_HOST_ID + slot * IDS_PER_APP)
        .find(|first| !taken.contains(first))
        .ok_or_else(|| DeployError::Other {
            message: format!(
                "no free range of host user ids is left for {app}: all {SLOTS} are in use; destroy apps that are no longer needed"
            ),
            source: None,
        })?;
    let ids = IdRange {
        host_first: free,
        size: IDS_PER_APP,
    };
    ledger.write(app, DOC, &ids)?;
    Ok(ids)
}

/// Checks that the host uids of `ids` can reach `rootfs`: runc mounts it from inside the
/// container's user namespace, where the container's root is just another host user, so
/// every directory above it must let others pass (`o+x`).
pub(crate) fn check_reachable(rootfs: &Path, ids: IdRange) -> Result<(), DeployError> {
    use std::os::unix::fs::PermissionsExt;

    for dir in rootfs.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(DeployError::Other {
                message: format!(
                    "the app's containers run as host uids {} to {} and cannot reach their root filesystem {}: {} (mode {:o}) does not let others pass; run `chmod o+x {}` or choose a data directory whose parents do",
                    ids.host_first,
                    ids.host_first + (ids.size - 1),
                    rootfs.display(),
                    dir.display(),
                    meta.permissions().mode() & 0o7777,
                    dir.display()
                ),
                source: None,
            });
        }
    }
    Ok(())
}
