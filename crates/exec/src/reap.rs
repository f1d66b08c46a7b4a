//! Reaping a previous process's subprocess workers, by identity and not by pid alone.
//!
//! A job record keeps its worker's pid (also its process-group id). After a restart that pid
//! may belong to anything: the kernel reuses pids. A group is killed only when the process is
//! still that job's worker: its environment (fixed at exec, `/proc/<pid>/environ`) carries
//! [`WORKER_JOB_ENV`]`=<job id>`, it leads its own process group, and it did not start before
//! the job was created (`/proc/<pid>/stat` start time).

use chrono::{DateTime, Utc};

/// Set in every subprocess worker's environment to its job id (the worker ignores it).
pub const WORKER_JOB_ENV: &str = "NODETOOL_WORKER_JOB_ID";

/// Linux reports process start times in `USER_HZ` ticks, 100 on every architecture we run on.
const USER_HZ: u64 = 100;

/// Why a recorded pid is, or is not, the job's worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The job's worker, leading its group.
    Worker,
    Gone,
    /// Not our worker (a reused pid, or another job's worker).
    Other(&'static str),
}

/// Is `pid` still the worker of `job_id` (created at `created`)?
pub fn identify(pid: u32, job_id: &str, created: DateTime<Utc>) -> Identity {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Identity::Gone;
    };
    // `pid (comm) state ppid pgrp ...`: comm may hold spaces and parentheses.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Identity::Other("unreadable stat");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: state is field 3 of stat(5), so field N is index N - 3.
    let (Some(state), Some(pgrp), Some(start)) = (fields.first(), fields.get(2), fields.get(19))
    else {
        return Identity::Other("unreadable stat");
    };
    if *state == "Z" || *state == "X" {
        return Identity::Gone;
    }
    if pgrp.parse::<u32>().ok() != Some(pid) {
        return Identity::Other("not a process-group leader");
    }
    let marker = format!("{WORKER_JOB_ENV}={job_id}");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    if !environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
        return Identity::Other("not this job's worker");
    }
    if let (Some(boot), Ok(ticks)) = (boot_time(), start.parse::<u64>()) {
        let started = boot + (ticks / USER_HZ) as i64;
        // Boot time has a resolution of one second: allow that much.
        if started + 1 < created.timestamp() {
            return Identity::Other("started before the job");
        }
    }
    Identity::Worker
}

/// Seconds since the epoch at boot (`btime` in `/proc/stat`).
fn boot_time() -> Option<i64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Kills the process group a previous process recorded for `job_id`, if it is still that job's
/// worker ([`identify`]); anything else is left alone.
pub fn reap_worker_group(pid: u32, job_id: &str, created: DateTime<Utc>) {
    use nix::sys::signal::{killpg, Signal};
    match identify(pid, job_id, created) {
        Identity::Worker => {
            if let Err(e) = killpg(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL) {
                tracing::debug!(pid, job_id, error = %e, "leftover worker group already gone");
            } else {
                tracing::warn!(pid, job_id, "killed a leftover worker process group");
            }
        }
        Identity::Gone => tracing::debug!(pid, job_id, "leftover worker already gone"),
        Identity::Other(why) => {
            tracing::info!(
                pid,
                job_id,
                why,
                "recorded worker pid now belongs to another process; left alone"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    fn spawn(env: Option<&str>, group: bool) -> std::process::Child {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30; :", "worker"]);
        if let Some(id) = env {
            cmd.env(WORKER_JOB_ENV, id);
        }
        if group {
            cmd.process_group(0);
        }
        cmd.spawn().unwrap()
    }

    #[test]
    fn only_the_jobs_own_group_leader_is_its_worker() {
        let before = Utc::now() - chrono::Duration::seconds(5);
        let mut ours = spawn(Some("job-1"), true);
        let mut other_job = spawn(Some("job-2"), true);
        let mut stranger = spawn(None, true);
        let mut not_leader = spawn(Some("job-1"), false);
        // /proc/<pid>/environ is readable once exec has happened.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(identify(ours.id(), "job-1", before), Identity::Worker);
        assert!(matches!(
            identify(other_job.id(), "job-1", before),
            Identity::Other(_)
        ));
        assert!(matches!(
            identify(stranger.id(), "job-1", before),
            Identity::Other(_)
        ));
        assert!(matches!(
            identify(not_leader.id(), "job-1", before),
            Identity::Other(_)
        ));
        // A job created an hour after the process started: the process cannot be its worker.
        let later = Utc::now() + chrono::Duration::hours(1);
        assert_eq!(
            identify(ours.id(), "job-1", later),
            Identity::Other("started before the job")
        );
        for c in [&mut ours, &mut other_job, &mut stranger, &mut not_leader] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(identify(ours.id(), "job-1", before), Identity::Gone);
    }
}
