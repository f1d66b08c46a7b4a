//! How many of a job's events the database keeps, and for how long (`JOB_EVENTS_MAX_PER_JOB`,
//! `JOB_EVENT_RETENTION`).

use std::time::Duration;

use nodetool_core::Result;

use crate::parse;
use crate::settings::Reader;

/// `JOB_EVENTS_MAX_PER_JOB`, `JOB_EVENT_RETENTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    /// The latest events of one job kept for replay after a restart.
    pub job_events_max_per_job: u64,
    /// How long a finished job's events are kept.
    pub job_event_retention: Duration,
}

impl DatabaseSettings {
    pub(crate) fn read(r: &Reader<'_>) -> Result<Self> {
        Ok(Self {
            job_events_max_per_job: r.require("JOB_EVENTS_MAX_PER_JOB", parse::count)? as u64,
            job_event_retention: r.require("JOB_EVENT_RETENTION", parse::seconds)?,
        })
    }
}
