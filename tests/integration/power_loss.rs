//! Power loss: the crash test again, on a file system that loses what was not synced.
//!
//! SIGKILL leaves the operating system's page cache intact, so a write that was never
//! synced survives a process crash; only a power cut shows it missing. Here the crash
//! child runs on `lossyfs` (`tests/src/bin/lossyfs.rs`, an in-memory FUSE file system):
//! after each kill, every unsynced file write, directory entry, rename and unlink is
//! undone, sometimes leaving a torn prefix of the last unsynced write, and the directory
//! is then reopened and checked against every acknowledged command.
//!
//! Shown to fail: with `EMPORIUM_CRASH_UNSYNCED_LOG=1` the child's committer writes the
//! log without syncing it, and this test reports acknowledged orders missing.
//!
//! `EMPORIUM_POWER_LOSS_CYCLES` (default 10) and `EMPORIUM_POWER_LOSS_SEED` as for the
//! crash test. FUSE is required (`/dev/fuse` and `fusermount3`, which `scripts/setup`
//! installs): without it the test fails and says so, unless
//! `EMPORIUM_POWER_LOSS=skip` is set, which makes it print that it proved nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use rand::Rng;

use crate::crash::{crash_cycles, env_or};

#[test]
fn acknowledged_commands_survive_power_loss() {
    if std::env::var("EMPORIUM_POWER_LOSS").as_deref() == Ok("skip") {
        eprintln!("power-loss test SKIPPED (EMPORIUM_POWER_LOSS=skip): it proved nothing");
        return;
    }
    let cycles: usize = env_or("EMPORIUM_POWER_LOSS_CYCLES", 10);
    let seed: u64 = env_or("EMPORIUM_POWER_LOSS_SEED", rand::random());
    eprintln!("power-loss test: {cycles} cycles, EMPORIUM_POWER_LOSS_SEED={seed}");
    let work = tempfile::tempdir().unwrap();
    let mut fs = LossyFs::mount(&work.path().join("mnt"));
    let data = fs.mountpoint.join("data");
    let mut torn_total = 0;
    crash_cycles(&data, cycles, seed, &mut |rng| {
        let (files, torn) = fs.lose_power(rng.random(), rng.random_bool(0.5));
        torn_total += usize::from(torn);
        format!(", power lost ({files} files reverted{})", if torn { ", one torn" } else { "" })
    });
    eprintln!("power-loss test: {torn_total} torn writes across {cycles} cycles");
}

/// A mounted `lossyfs`, unmounted on drop.
struct LossyFs {
    mountpoint: PathBuf,
    process: Child,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
}

impl LossyFs {
    /// Mounts a fresh file system on `mountpoint` (created); fails the test, saying why,
    /// where FUSE is unavailable.
    fn mount(mountpoint: &Path) -> LossyFs {
        std::fs::create_dir_all(mountpoint).unwrap();
        let mut process = Command::new(env!("CARGO_BIN_EXE_lossyfs"))
            .arg(mountpoint)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lossyfs");
        let commands = process.stdin.take().unwrap();
        let mut answers = BufReader::new(process.stdout.take().unwrap());
        let mut line = String::new();
        answers.read_line(&mut line).unwrap();
        if line.trim() != "mounted" {
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut process.stderr.take().unwrap(), &mut stderr);
            let _ = process.wait();
            panic!(
                "the power-loss test needs FUSE (/dev/fuse and fusermount3, installed by \
                 scripts/setup); lossyfs could not mount: {stderr}\\nSet \
                 EMPORIUM_POWER_LOSS=skip to run the rest of the suite without it."
            );
        }
        LossyFs { mountpoint: mountpoint.to_path_buf(), process, commands, answers }
    }

    /// Cuts the power: every unsynced change is lost (a write torn with `tear`).
    /// Returns the files reverted and whether a write was torn.
    fn lose_power(&mut self, seed: u64, tear: bool) -> (usize, bool) {
        writeln!(self.commands, "crash {seed} {}", u8::from(tear)).unwrap();
        let mut line = String::new();
        self.answers.read_line(&mut line).unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["crashed", files, torn] => (files.parse().unwrap(), *torn == "true"),
            _ => panic!("lossyfs answered {line:?}"),
        }
    }
}

impl Drop for LossyFs {
    fn drop(&mut self) {
        let _ = writeln!(self.commands, "exit");
        if self.process.wait().is_err() || is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3").arg("-u").arg(&self.mountpoint).status();
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|mounts| mounts.lines().any(|l| l.split(' ').nth(1) == path.to_str()))
        .unwrap_or(false)
}
