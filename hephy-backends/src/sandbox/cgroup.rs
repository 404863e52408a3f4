//! The cgroups of one build: memory, pids and cpu limits.

use std::path::{Path, PathBuf};

use super::SandboxPolicy;

/// The cgroups of one build: memory, pids and cpu limits (cgroup v2, or v1's hierarchies).
pub(super) struct Cgroup {
    dirs: Vec<PathBuf>,
    /// Why the limits could not be set up, when they could not.
    pub(super) problem: Option<String>,
}

impl Cgroup {
    pub(super) fn create(id: &str, policy: &SandboxPolicy) -> Cgroup {
        match Self::try_create(id, policy) {
            Ok(dirs) => Cgroup {
                dirs,
                problem: None,
            },
            Err(e) => Cgroup {
                dirs: Vec::new(),
                problem: Some(e.to_string()),
            },
        }
    }

    fn try_create(id: &str, policy: &SandboxPolicy) -> std::io::Result<Vec<PathBuf>> {
        let root = Path::new("/sys/fs/cgroup");
        let v2 = std::fs::read_to_string(root.join("cgroup.controllers"))
            .map(|c| c.contains("memory") && c.contains("pids"))
            .unwrap_or(false);
        let mut dirs = Vec::new();
        let mut made = |dir: PathBuf, files: &[(&str, Option<String>)]| -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            dirs.push(dir.clone());
            for (file, value) in files {
                if let Some(v) = value {
                    std::fs::write(dir.join(file), v)?;
                }
            }
            Ok(())
        };
        let memory = policy.memory_bytes.map(|b| b.to_string());
        let pids = policy.pids.map(|p| p.to_string());
        let quota = policy.cpus.map(|c| ((c * 100_000.0) as u64).max(1_000));
        if v2 {
            let parent = root.join("hephy-builds");
            std::fs::create_dir_all(&parent)?;
            std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
            made(
                parent.join(id),
                &[
                    ("memory.max", memory),
                    ("memory.swap.max", Some("0".into())),
                    ("pids.max", pids),
                    ("cpu.max", quota.map(|q| format!("{q} 100000"))),
                ],
            )?;
        } else {
            // cgroup v1: nest the memory cgroup under our own, where the host put us.
            let own = own_v1_cgroup("memory").unwrap_or_default();
            let own = own.trim_start_matches('/');
            made(
                root.join("memory").join(own).join(id),
                &[
                    ("memory.limit_in_bytes", memory),
                    ("memory.swappiness", Some("0".into())),
                ],
            )?;
            made(root.join("pids").join(id), &[("pids.max", pids)])?;
            made(
                root.join("cpu").join(id),
                &[("cpu.cfs_quota_us", quota.map(|q| q.to_string()))],
            )?;
            // The v2 tree, when mounted beside v1, can kill a whole build at once.
            let unified = root.join("unified");
            if unified.join("cgroup.procs").exists() {
                let _ = made(unified.join(id), &[]);
            }
        }
        Ok(dirs)
    }

    pub(super) fn procs_files(&self) -> Vec<String> {
        self.dirs
            .iter()
            .map(|d| d.join("cgroup.procs").display().to_string())
            .collect()
    }

    /// Kills whatever of the build is left and removes its cgroups.
    pub(super) fn kill(&self) {
        for d in &self.dirs {
            if d.join("cgroup.kill").exists() {
                let _ = std::fs::write(d.join("cgroup.kill"), "1");
            }
        }
        for d in &self.dirs {
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.split_whitespace() {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", pid])
                        .env_clear()
                        .status();
                }
            }
        }
        for d in &self.dirs {
            // Emptied just above; the kernel may take a moment to reap.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill();
    }
}

fn own_v1_cgroup(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })
}
