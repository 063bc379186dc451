//! A real single-node Slurm cluster for a test: `scripts/slurm-dev.sh` starts Debian's slurmctld
//! and slurmd on loopback in a temporary directory of their own (own ports), stopped — its
//! daemons, steps and jobs only — when dropped. Tests skip, saying so, only when the Slurm
//! binaries are not installed (`. .ci/tools.sh` installs them) and `CI` is not set; in CI they fail.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether every Slurm binary a test needs is on the PATH.
pub(crate) fn slurm_installed() -> bool {
    ["slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel"]
        .iter()
        .all(|b| Command::new("sh").arg("-c").arg(format!("command -v {b}")).output().is_ok_and(|o| o.status.success()))
}

/// `scripts/slurm-dev.sh` of this checkout.
pub(crate) fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-dev.sh")
}

/// A running dev cluster.
pub(crate) struct Cluster {
    pub(crate) dir: tempfile::TempDir,
    /// Its `slurm.conf`: clients find the cluster through `SLURM_CONF`.
    pub(crate) conf: PathBuf,
}

impl Cluster {
    /// Starts one in a fresh directory named with `prefix` (short: slurmd's step sockets live
    /// under it and a Unix socket path has 108 bytes), or `None` (with a message naming `test`)
    /// when Slurm is not installed.
    pub(crate) fn start(test: &str, prefix: &str) -> Option<Cluster> {
        Cluster::start_with(test, prefix, &[])
    }

    /// [`Cluster::start`] with `slurm-dev.sh`'s settings in `env` (`SLURM_DEV_MIN_JOB_AGE`...).
    pub(crate) fn start_with(test: &str, prefix: &str, env: &[(&str, &str)]) -> Option<Cluster> {
        if !slurm_installed() {
            // In CI (`.ci/run` installs Slurm first) a missing cluster is a failure, not a skip.
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: the Slurm binaries are not installed, and CI is set: run `. .ci/tools.sh`"
            );
            eprintln!("SKIPPED {test}: the Slurm binaries are not installed (run `. .ci/tools.sh`)");
            return None;
        }
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("tempdir");
        let out = Command::new(script_path())
            .arg("start")
            .arg(dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let cluster = Cluster { conf: dir.path().join("slurm.conf"), dir };
        assert!(
            out.status.success(),
            "slurm-dev.sh start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            cluster.logs()
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("SLURM_CONF={}", cluster.conf.display()));
        Some(cluster)
    }

    /// The last lines of the cluster's own logs, for a failure message.
    pub(crate) fn logs(&self) -> String {
        ["slurmctld.log", "slurmd.log"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.dir.path().join("log").join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!("--- {f} (last lines)\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script_path()).arg("stop").arg(self.dir.path()).stdin(Stdio::null()).output();
    }
}
