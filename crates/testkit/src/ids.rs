//! Ids for tests: literals the tests know are valid.

use nodetool_core::{JobId, UserId};

/// A job id from a literal (a bad one is a bug in the test: it panics).
pub fn jid(id: &str) -> JobId {
    JobId::parse(id).expect("a valid test job id")
}

pub fn uid(id: &str) -> UserId {
    UserId::new(id)
}
