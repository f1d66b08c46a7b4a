//! Admission and fair scheduling of jobs across users.
//!
//! `total` jobs run at once (`MAX_WORKFLOW_THREADS`), at most `per_user` of them for one user
//! (`MAX_JOBS_PER_USER`); a user may have `queued_per_user` jobs waiting
//! (`MAX_QUEUED_JOBS_PER_USER`), and a submission past that is refused with
//! [`ErrorKind::RateLimited`] carrying a `retry_after` (seconds) context the HTTP edge turns
//! into `429` + `Retry-After`. Within a user jobs start in submission order; between users a
//! freed slot goes to the waiting user served least recently (every start counts, the ones that
//! found a free slot at submit too), so one user's many jobs take turns with another's one job
//! instead of running first.
//!
//! A [`Slot`] is a running job's place; dropping it frees the place and starts the next job. A
//! [`Ticket`] is a waiting job's place in its user's queue; dropping it (a cancel) leaves the
//! queue, and if the slot was granted just then, frees it again.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use nodetool_core::{Error, ErrorKind, Result, UserId};

/// Seconds a client refused for a full queue is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 5;

/// The limits (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerLimits {
    pub total: usize,
    pub per_user: Option<usize>,
    pub queued_per_user: usize,
}

pub struct Scheduler {
    limits: SchedulerLimits,
    state: Mutex<State>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Scheduler")
            .field("limits", &self.limits)
            .field("running", &st.running)
            .field("users", &st.users.len())
            .finish()
    }
}

#[derive(Default)]
struct State {
    running: usize,
    /// Users with a running or waiting job (others are forgotten).
    users: HashMap<UserId, UserState>,
    /// Grants so far; a user's `last_served` is the number of its latest grant.
    grants: u64,
    next_ticket: u64,
}

#[derive(Default)]
struct UserState {
    running: usize,
    queue: VecDeque<Waiter>,
    last_served: u64,
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<()>,
}

/// A submission's place: a slot now, or a ticket in the user's queue.
#[derive(Debug)]
pub enum Admission {
    Now(Slot),
    Queued(Ticket),
}

/// A running job's place; dropping it frees the place.
pub struct Slot {
    sched: Arc<Scheduler>,
    user: UserId,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("user", &self.user).finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.sched.release(&self.user);
    }
}

/// A waiting job's place in its user's queue.
pub struct Ticket {
    sched: Arc<Scheduler>,
    user: UserId,
    id: u64,
    /// Kept here (never moved out) so that it outlives the check in `drop`: a grant succeeds
    /// only while the receiver exists, so "not in the queue any more" means "granted".
    rx: oneshot::Receiver<()>,
    /// Turned into a [`Slot`].
    done: bool,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("user", &self.user)
            .field("id", &self.id)
            .finish()
    }
}

impl Ticket {
    /// This ticket's number (for [`Scheduler::position`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for a slot. Cancel-safe: dropping the future gives the place up.
    pub async fn wait(mut self) -> Result<Slot> {
        match (&mut self.rx).await {
            Ok(()) => {
                self.done = true;
                Ok(Slot {
                    sched: self.sched.clone(),
                    user: self.user.clone(),
                })
            }
            Err(_) => Err(Error::unexpected("the job scheduler dropped a waiting job")
                .with_operation("jobs.schedule")),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.sched.lock();
        let State { users, .. } = &mut *st;
        let Some(u) = users.get_mut(&self.user) else {
            return;
        };
        if let Some(pos) = u.queue.iter().position(|w| w.id == self.id) {
            u.queue.remove(pos);
            if u.running == 0 && u.queue.is_empty() {
                users.remove(&self.user);
            }
            return;
        }
        // Granted while we were being dropped: the slot's counts were taken; give them back.
        drop(st);
        self.sched.release(&self.user);
    }
}

impl Scheduler {
    pub fn new(limits: SchedulerLimits) -> Arc<Self> {
        Arc::new(Self {
            limits: SchedulerLimits {
                total: limits.total.max(1),
                per_user: limits.per_user.map(|n| n.max(1)),
                queued_per_user: limits.queued_per_user,
            },
            state: Mutex::default(),
        })
    }

    pub fn limits(&self) -> SchedulerLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn user_may_run(&self, u: &UserState) -> bool {
        self.limits.per_user.is_none_or(|cap| u.running < cap)
    }

    /// A place for a new job of `user`: a slot when one is free for them and none of their
    /// jobs waits, else a ticket; `RateLimited` when their queue is full.
    pub fn admit(self: &Arc<Self>, user: &UserId) -> Result<Admission> {
        let mut st = self.lock();
        let State {
            running,
            users,
            grants,
            next_ticket,
        } = &mut *st;
        let u = users.entry(user.clone()).or_default();
        if *running < self.limits.total && u.queue.is_empty() && self.user_may_run(u) {
            *running += 1;
            u.running += 1;
            *grants += 1;
            u.last_served = *grants;
            return Ok(Admission::Now(Slot {
                sched: self.clone(),
                user: user.clone(),
            }));
        }
        if u.queue.len() >= self.limits.queued_per_user {
            let waiting = u.queue.len();
            if u.running == 0 && u.queue.is_empty() {
                users.remove(user);
            }
            return Err(Error::new(
                ErrorKind::RateLimited,
                format!(
                    "too many jobs waiting: this user has {waiting} scheduled (the limit, \
                     MAX_QUEUED_JOBS_PER_USER, is {}); retry after {RETRY_AFTER_SECS} s",
                    self.limits.queued_per_user
                ),
            )
            .with_operation("jobs.submit")
            .with_context("retry_after", RETRY_AFTER_SECS)
            .set_temporary(true));
        }
        *next_ticket += 1;
        let id = *next_ticket;
        let (tx, rx) = oneshot::channel();
        u.queue.push_back(Waiter { id, tx });
        Ok(Admission::Queued(Ticket {
            sched: self.clone(),
            user: user.clone(),
            id,
            rx,
            done: false,
        }))
    }

    /// Frees a running job's place and hands free places to waiting jobs.
    fn release(&self, user: &UserId) {
        let mut st = self.lock();
        st.running = st.running.saturating_sub(1);
        if let Some(u) = st.users.get_mut(user) {
            u.running = u.running.saturating_sub(1);
            if u.running == 0 && u.queue.is_empty() {
                st.users.remove(user);
            }
        }
        self.dispatch(&mut st);
    }

    /// While a place is free: the waiting user served least recently (and under their own cap)
    /// starts their oldest job.
    fn dispatch(&self, st: &mut State) {
        while st.running < self.limits.total {
            let next = st
                .users
                .iter()
                .filter(|(_, u)| !u.queue.is_empty() && self.user_may_run(u))
                .min_by_key(|(_, u)| u.last_served)
                .map(|(name, _)| name.clone());
            let Some(name) = next else { return };
            let State {
                running,
                users,
                grants,
                ..
            } = st;
            let Some(u) = users.get_mut(&name) else {
                return;
            };
            while let Some(w) = u.queue.pop_front() {
                // A failed send is a waiter already gone: try the user's next one.
                if w.tx.send(()).is_ok() {
                    *running += 1;
                    u.running += 1;
                    *grants += 1;
                    u.last_served = *grants;
                    break;
                }
            }
            if u.running == 0 && u.queue.is_empty() {
                users.remove(&name);
            }
        }
    }

    /// Where `user`'s waiting ticket `id` stands: 1 is the next job to start. Follows the
    /// dispatch order (least recently served user first, each user's queue in order) as places
    /// free up one at a time; per-user caps are not foreseen, so where one binds it is an
    /// estimate. `None`: not waiting (started, or gone).
    pub fn position(&self, user: &UserId, id: u64) -> Option<usize> {
        let st = self.lock();
        let mut queues: Vec<(u64, &str, std::collections::vec_deque::Iter<'_, Waiter>)> = st
            .users
            .iter()
            .filter(|(_, u)| !u.queue.is_empty())
            .map(|(name, u)| (u.last_served, name.as_str(), u.queue.iter()))
            .collect();
        let mut grants = st.grants;
        let mut position = 0;
        loop {
            let (served, name, queue) = queues
                .iter_mut()
                .filter(|(_, _, q)| q.len() > 0)
                .min_by_key(|(served, name, _)| (*served, *name))?;
            let waiter = queue.next()?;
            position += 1;
            if *name == user.as_str() && waiter.id == id {
                return Some(position);
            }
            grants += 1;
            *served = grants;
        }
    }

    /// Jobs running now, and waiting, for `user` (0, 0 for a user with none).
    pub fn counts(&self, user: &UserId) -> (usize, usize) {
        self.lock()
            .users
            .get(user)
            .map_or((0, 0), |u| (u.running, u.queue.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn positions_follow_the_fair_order() {
        let s = sched(1, None, 100);
        let _running = s.admit(&u("a")).unwrap();
        let ticket = |user: &str| match s.admit(&u(user)).unwrap() {
            Admission::Queued(t) => t,
            Admission::Now(_) => panic!("the only place is taken"),
        };
        let a: Vec<Ticket> = (0..3).map(|_| ticket("a")).collect();
        let b = ticket("b");
        // b was never served, a just was: b's one job goes first, then a's in order.
        assert_eq!(s.position(&u("b"), b.id()), Some(1));
        assert_eq!(s.position(&u("a"), a[0].id()), Some(2));
        assert_eq!(s.position(&u("a"), a[2].id()), Some(4));
        assert_eq!(s.position(&u("a"), b.id()), None, "another user's ticket");
        drop(b);
        assert_eq!(s.position(&u("a"), a[0].id()), Some(1));
    }

    fn u(id: &str) -> UserId {
        UserId::new(id)
    }

    fn sched(total: usize, per_user: Option<usize>, queued: usize) -> Arc<Scheduler> {
        Scheduler::new(SchedulerLimits {
            total,
            per_user,
            queued_per_user: queued,
        })
    }

    fn now(a: Admission) -> Slot {
        match a {
            Admission::Now(s) => s,
            Admission::Queued(t) => panic!("queued: {t:?}"),
        }
    }

    fn queued(a: Admission) -> Ticket {
        match a {
            Admission::Queued(t) => t,
            Admission::Now(s) => panic!("started: {s:?}"),
        }
    }

    async fn granted(t: &mut tokio::task::JoinHandle<Result<Slot>>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), t)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_user_served_least_recently() {
        let s = sched(1, None, 100);
        let a1 = now(s.admit(&u("a")).unwrap());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, user) in ["a", "a", "a", "b"].into_iter().enumerate() {
            let t = queued(s.admit(&u(user)).unwrap());
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let slot = t.wait().await.unwrap();
                order.lock().unwrap().push(format!("{user}{i}"));
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            }));
        }
        drop(a1);
        for t in tasks {
            t.await.unwrap();
        }
        // b's one job runs right after a's first (the one running, `a1`), not after all of a's.
        assert_eq!(*order.lock().unwrap(), ["b3", "a0", "a1", "a2"]);
        assert_eq!(s.counts(&u("a")), (0, 0));
        assert!(s.lock().users.is_empty());
    }

    #[tokio::test]
    async fn per_user_cap_and_queue_limit() {
        let s = sched(4, Some(1), 2);
        let _a = now(s.admit(&u("a")).unwrap());
        // a is at its cap although slots are free: its next jobs wait; b starts at once.
        let t1 = queued(s.admit(&u("a")).unwrap());
        let _t2 = queued(s.admit(&u("a")).unwrap());
        let err = s.admit(&u("a")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited);
        assert_eq!(err.context_value("retry_after"), Some("5"));
        assert!(err.message().contains("MAX_QUEUED_JOBS_PER_USER"), "{err}");
        let _b = now(s.admit(&u("b")).unwrap());
        assert_eq!(s.counts(&u("a")), (1, 2));
        // A cancelled waiter leaves the queue: room for one more.
        drop(t1);
        assert_eq!(s.counts(&u("a")), (1, 1));
        let _t3 = queued(s.admit(&u("a")).unwrap());
    }

    #[tokio::test]
    async fn dropping_a_ticket_never_leaks_or_double_frees_a_slot() {
        let s = sched(1, None, 10);
        let a = now(s.admit(&u("a")).unwrap());
        let t = queued(s.admit(&u("b")).unwrap());
        let mut w = tokio::spawn(t.wait());
        assert!(!granted(&mut w).await);
        w.abort();
        let _ = w.await;
        assert_eq!(s.counts(&u("b")), (0, 0));
        drop(a);
        // Granted but dropped before it was taken: the slot comes back.
        let a = now(s.admit(&u("a")).unwrap());
        let t = queued(s.admit(&u("b")).unwrap());
        drop(a);
        drop(t);
        assert_eq!(s.lock().running, 0);
        let _c = now(s.admit(&u("c")).unwrap());
        let mut w = tokio::spawn(queued(s.admit(&u("d")).unwrap()).wait());
        assert!(!granted(&mut w).await, "one slot only");
    }
}
