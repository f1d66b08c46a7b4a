//! Identifiers. UUIDv7 everywhere: time-ordered, so they sort and paginate without a second column.
//!
//! [`JobId`] and [`UserId`] are distinct types so a user id cannot be passed where a job id is
//! expected. Both serialize as the bare string (wire frames, JSON bodies and DB columns are the
//! same bytes as when they were `String`s) and hold an `Arc<str>`: the manager and the event
//! path clone a job's ids per event, and a clone is then a reference-count bump.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A new time-ordered identifier as 32 lowercase hex digits (NodeTool ids carry no dashes).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Longest job id accepted (a UUID is 36 characters).
pub const MAX_JOB_ID_LEN: usize = 64;

/// A job's id: 1 to [`MAX_JOB_ID_LEN`] ASCII letters, digits, `-` or `_` (a UUID, with or
/// without dashes, fits), so it is safe in paths, container labels, logs and URLs.
///
/// Made by [`JobId::generate`], by [`JobId::parse`] from anything a client or another process
/// sent (REST body, /ws command, CLI flag, worker frame: `Deserialize` parses too), or by
/// [`JobId::from_trusted`] for ids read back from our own job store, which only ever held
/// parsed or generated ids.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(Arc<str>);

impl JobId {
    /// A fresh id (UUIDv7, 32 lowercase hex digits, like [`new_id`]).
    pub fn generate() -> Self {
        Self(new_id().into())
    }

    /// Checks an id from outside: `InvalidInput` naming the rule when it breaks it.
    pub fn parse(id: &str) -> Result<Self> {
        let ok = !id.is_empty()
            && id.len() <= MAX_JOB_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            return Ok(Self(id.into()));
        }
        let shown: String = id.chars().take(MAX_JOB_ID_LEN).collect();
        // The operation is the one the check had when it lived in the exec crate, so the
        // error a client sees is unchanged.
        Err(Error::invalid_input(format!(
            "job_id {shown:?} is not a valid job id: use 1 to {MAX_JOB_ID_LEN} letters, digits, \
             '-' or '_' (a UUID fits)"
        ))
        .with_operation("exec.validate"))
    }

    /// An id read back from our own store (a job row, a queue row, an event row): it was
    /// parsed or generated before it was written, so it is not checked again.
    pub fn from_trusted(id: impl Into<String>) -> Self {
        Self(id.into().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who the auth layer says the caller is. Not validated: each auth provider decides what its
/// user ids look like; storage scoping ([`crate::KeyScope`]) checks them where they become keys.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(Arc<str>);

/// The id of the one user of single-user auth providers (`none`, `local`, `static`) and of
/// local runs (`nodetool run`), as in NodeTool.
pub const LOCAL_USER: &str = "1";

impl UserId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into().into())
    }

    /// The single-user providers' user, [`LOCAL_USER`].
    pub fn local() -> Self {
        Self(LOCAL_USER.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Infallible, unlike a job id's: any string the auth layer vouches for is a user id.
impl From<&str> for UserId {
    fn from(id: &str) -> Self {
        Self::new(id)
    }
}

impl From<String> for UserId {
    fn from(id: String) -> Self {
        Self::new(id)
    }
}

macro_rules! string_id {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Sound for maps and sets: `Hash`, `Eq` and `Ord` are derived from the inner `str`'s.
        impl Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl PartialEq<String> for $t {
            fn eq(&self, other: &String) -> bool {
                *self.0 == **other
            }
        }

        impl PartialEq<$t> for str {
            fn eq(&self, other: &$t) -> bool {
                self == &*other.0
            }
        }

        impl PartialEq<$t> for &str {
            fn eq(&self, other: &$t) -> bool {
                *self == &*other.0
            }
        }

        impl PartialEq<$t> for String {
            fn eq(&self, other: &$t) -> bool {
                **self == *other.0
            }
        }

        impl From<$t> for String {
            fn from(id: $t) -> String {
                id.0.as_ref().to_owned()
            }
        }

        // Transparent: the bare string, as when the id was a `String`.
        impl Serialize for $t {
            fn serialize<S: Serializer>(
                &self,
                serializer: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

string_id!(JobId);
string_id!(UserId);

/// Parses ([`JobId::parse`]): a job id in a request or a worker frame is untrusted.
impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        JobId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(UserId::new(String::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn ids_are_hex_and_ordered() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(a < b, "UUIDv7 ids must sort by creation time: {a} !< {b}");
    }

    #[test]
    fn job_id_parse_takes_ids_in_the_rule_and_refuses_the_rest() {
        for good in ["a", "job-1_X", "0190c1a2-7b3c-7d4e-8f90-123456789abc"] {
            assert_eq!(JobId::parse(good).unwrap(), good);
        }
        assert!(JobId::parse(&"x".repeat(MAX_JOB_ID_LEN)).is_ok());
        assert!(JobId::generate().as_str().len() == 32);

        let too_long = "x".repeat(MAX_JOB_ID_LEN + 1);
        for bad in ["", too_long.as_str(), "a/b", "a b", "é", "../x"] {
            let err = JobId::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
            assert!(
                err.to_string()
                    .contains("is not a valid job id: use 1 to 64 letters, digits, '-' or '_'"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn ids_serialize_as_bare_strings_and_job_ids_parse_on_the_way_in() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Row {
            job_id: JobId,
            user_id: UserId,
        }
        let row = Row {
            job_id: JobId::parse("job-1").unwrap(),
            user_id: UserId::new("u1"),
        };
        let json = serde_json::to_string(&row).unwrap();
        assert_eq!(json, r#"{"job_id":"job-1","user_id":"u1"}"#);
        assert_eq!(serde_json::from_str::<Row>(&json).unwrap(), row);

        let err = serde_json::from_str::<Row>(r#"{"job_id":"a/b","user_id":"u1"}"#).unwrap_err();
        assert!(err.to_string().contains("is not a valid job id"), "{err}");
    }

    #[test]
    fn maps_keyed_by_ids_are_looked_up_by_str() {
        let id = JobId::generate();
        let map = std::collections::HashMap::from([(id.clone(), 1)]);
        assert_eq!(map.get(id.as_str()), Some(&1));
        assert_eq!(format!("{id}"), id.as_str());
        assert_eq!(format!("{:?}", UserId::local()), "\"1\"");
    }
}
