//! Reaping a previous process's subprocess workers, by identity and not by pid alone.
//!
//! A job record keeps its worker's pid (also its process-group id). After a restart that pid
//! may belong to anything: the kernel reuses pids. A group is killed only when the process is
//! still that job's worker: its environment (fixed at exec, `/proc/<pid>/environ`) carries
//! [`WORKER_JOB_ENV`]`=<job id>`, it leads its own process group, and it did not start before
//! the job was created (`/proc/<pid>/stat` start time).
//!
//! A warm worker (pre-forked by the subprocess strategy's pool, see
//! `nodetool_workers::subprocess`) starts before it has a job, so its environment cannot name one. It carries a second identity instead:
//! [`WARM_WORKER_ENV`]`=<parent pid>:<parent start time>`, the server that spawned it. A warm
//! worker whose server is gone (no such pid, or a pid now started at another time) is a leftover,
//! whether it was idle or ran a job: [`identify`] says so for a recorded pid, and
//! [`reap_leftover_warm_workers`] finds the idle ones, which no job record names. A warm worker
//! of a server that still runs (another server on the same host) is never touched.

use chrono::{DateTime, Utc};
use nodetool_core::JobId;

/// Set in every cold-spawned subprocess worker's environment to its job id (the worker ignores
/// it).
pub const WORKER_JOB_ENV: &str = "NODETOOL_WORKER_JOB_ID";

/// Set in every warm (pre-forked) worker's environment to the identity of the server process
/// that spawned it ([`this_process`]): `<pid>:<start time in clock ticks>`.
pub const WARM_WORKER_ENV: &str = "NODETOOL_WARM_WORKER_OF";

/// Linux reports process start times in `USER_HZ` ticks, 100 on every architecture we run on.
const USER_HZ: u64 = 100;

/// Why a recorded pid is, or is not, the job's worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The job's worker, leading its group.
    Worker,
    /// A warm worker, leading its group, whose server is gone (it may have served this job: a
    /// warm worker's environment cannot name its job).
    LeftoverWarm,
    Gone,
    /// Not our worker (a reused pid, or another job's worker).
    Other(&'static str),
}

/// What `/proc/<pid>/stat` says: state, process group and start time (clock ticks after boot).
struct Stat {
    state: String,
    pgrp: Option<u32>,
    start: Option<u64>,
}

fn stat(pid: u32) -> Option<std::result::Result<Stat, &'static str>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`: comm may hold spaces and parentheses.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Some(Err("unreadable stat"));
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: state is field 3 of stat(5), so field N is index N - 3.
    let (Some(state), Some(pgrp), Some(start)) = (fields.first(), fields.get(2), fields.get(19))
    else {
        return Some(Err("unreadable stat"));
    };
    Some(Ok(Stat {
        state: (*state).to_owned(),
        pgrp: pgrp.parse().ok(),
        start: start.parse().ok(),
    }))
}

impl Stat {
    fn gone(&self) -> bool {
        self.state == "Z" || self.state == "X"
    }
}

/// Whether our child `pid` is exiting or gone by `/proc` (its main thread a zombie, or no
/// entry). A killed multi-threaded process shows this before `waitpid` can reap it — its other
/// threads are still exiting — so `try_wait` alone would call it alive.
pub fn exiting(pid: u32) -> bool {
    match stat(pid) {
        Some(Ok(s)) => s.gone(),
        Some(Err(_)) => false,
        None => true,
    }
}

/// This process's identity for [`WARM_WORKER_ENV`]: `<pid>:<start time in clock ticks>` (a pid
/// alone is reused; with its start time it names one process for the host's uptime). Without a
/// readable start time it is the pid alone, which [`reap_leftover_warm_workers`] never judges
/// gone: such workers are left to exit when their stdin closes.
pub fn this_process() -> String {
    let pid = std::process::id();
    match stat(pid).and_then(|s| s.ok()).and_then(|s| s.start) {
        Some(start) => format!("{pid}:{start}"),
        None => pid.to_string(),
    }
}

/// Is the process named by a [`this_process`] identity (`<pid>:<start>`, as [`WARM_WORKER_ENV`]
/// and a Docker job container's owner label carry it) still running? An identity that cannot be
/// parsed or checked counts as alive: nothing is killed on a guess.
pub fn process_alive(identity: &str) -> bool {
    let Some((pid, start)) = identity.split_once(':') else {
        // Unparseable: not ours to judge; treat as alive so nothing is killed on a guess.
        return true;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return true;
    };
    match stat(pid) {
        None => false,
        Some(Err(_)) => true,
        Some(Ok(s)) => !s.gone() && s.start == Some(start),
    }
}

/// The value of `name` in `environ` (NUL-separated `NAME=value` entries).
fn env_value<'a>(environ: &'a [u8], name: &str) -> Option<&'a [u8]> {
    environ.split(|b| *b == 0).find_map(|v| {
        v.strip_prefix(name.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
    })
}

/// Is `environ` a warm worker's whose server is gone?
fn leftover_warm(environ: &[u8]) -> bool {
    env_value(environ, WARM_WORKER_ENV)
        .is_some_and(|of| !process_alive(&String::from_utf8_lossy(of)))
}

/// Is `pid` still the worker of `job_id` (created at `created`)?
pub fn identify(pid: u32, job_id: &JobId, created: DateTime<Utc>) -> Identity {
    let stat = match stat(pid) {
        None => return Identity::Gone,
        Some(Err(why)) => return Identity::Other(why),
        Some(Ok(s)) => s,
    };
    if stat.gone() {
        return Identity::Gone;
    }
    if stat.pgrp != Some(pid) {
        return Identity::Other("not a process-group leader");
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    if env_value(&environ, WORKER_JOB_ENV) != Some(job_id.as_str().as_bytes()) {
        if leftover_warm(&environ) {
            return Identity::LeftoverWarm;
        }
        return Identity::Other("not this job's worker");
    }
    if let (Some(boot), Some(ticks)) = (boot_time(), stat.start) {
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
pub fn reap_worker_group(pid: u32, job_id: &JobId, created: DateTime<Utc>) {
    use nix::sys::signal::{killpg, Signal};
    match identify(pid, job_id, created) {
        Identity::Worker | Identity::LeftoverWarm => {
            if let Err(e) = killpg(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL) {
                tracing::debug!(pid, %job_id, error = %e, "leftover worker group already gone");
            } else {
                tracing::warn!(pid, %job_id, "killed a leftover worker process group");
            }
        }
        Identity::Gone => tracing::debug!(pid, %job_id, "leftover worker already gone"),
        Identity::Other(why) => {
            tracing::info!(
                pid,
                %job_id,
                why,
                "recorded worker pid now belongs to another process; left alone"
            )
        }
    }
}

/// Kills every warm worker (idle or not) whose server is gone: a previous process's pool, when
/// that process died without killing it (SIGKILL, a crash). Such workers normally exit by
/// themselves (their stdin closes with their server), so this is the second line. Only
/// process-group leaders whose environment this user may read are looked at. Returns how many
/// groups were killed.
pub fn reap_leftover_warm_workers() -> usize {
    use nix::sys::signal::{killpg, Signal};
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(Ok(stat)) = stat(pid) else { continue };
        if stat.gone() || stat.pgrp != Some(pid) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !leftover_warm(&environ) {
            continue;
        }
        match killpg(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL) {
            Ok(()) => {
                killed += 1;
                tracing::warn!(pid, "killed a leftover warm worker process group");
            }
            Err(e) => tracing::debug!(pid, error = %e, "leftover warm worker already gone"),
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobId {
        JobId::parse(id).unwrap()
    }
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
        assert_eq!(identify(ours.id(), &job("job-1"), before), Identity::Worker);
        assert!(matches!(
            identify(other_job.id(), &job("job-1"), before),
            Identity::Other(_)
        ));
        assert!(matches!(
            identify(stranger.id(), &job("job-1"), before),
            Identity::Other(_)
        ));
        assert!(matches!(
            identify(not_leader.id(), &job("job-1"), before),
            Identity::Other(_)
        ));
        // A job created an hour after the process started: the process cannot be its worker.
        let later = Utc::now() + chrono::Duration::hours(1);
        assert_eq!(
            identify(ours.id(), &job("job-1"), later),
            Identity::Other("started before the job")
        );
        for c in [&mut ours, &mut other_job, &mut stranger, &mut not_leader] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(identify(ours.id(), &job("job-1"), before), Identity::Gone);
    }

    fn spawn_warm(of: &str) -> std::process::Child {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30; :", "worker"])
            .env(WARM_WORKER_ENV, of)
            .process_group(0);
        cmd.spawn().unwrap()
    }

    fn alive(pid: u32) -> bool {
        matches!(stat(pid), Some(Ok(s)) if !s.gone())
    }

    #[test]
    fn a_warm_worker_is_a_leftover_only_once_its_server_is_gone() {
        let before = Utc::now() - chrono::Duration::seconds(5);
        let me = this_process();
        // Our pid with another start time: the server that spawned it is gone (its pid reused).
        let (pid, start) = me.split_once(':').expect("our start time is readable");
        let dead = format!("{pid}:{}", start.parse::<u64>().unwrap() + 1);
        let mut live_worker = spawn_warm(&me);
        let mut leftover = spawn_warm(&dead);
        let mut unjudged = spawn_warm("garbage");
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(matches!(
            identify(live_worker.id(), &job("job-1"), before),
            Identity::Other(_)
        ));
        assert_eq!(
            identify(leftover.id(), &job("job-1"), before),
            Identity::LeftoverWarm,
            "a warm worker cannot name its job; its server being gone is enough"
        );
        // Another test's manager may reap it first: what counts is that it is killed.
        reap_leftover_warm_workers();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(leftover.wait().unwrap().signal(), Some(9));
        assert!(
            alive(live_worker.id()),
            "a live server's warm worker is left alone"
        );
        assert!(
            alive(unjudged.id()),
            "an identity that cannot be judged is left alone"
        );
        for c in [&mut live_worker, &mut unjudged] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
