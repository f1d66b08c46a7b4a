//! Shared by the integration tests: a moto server with a fresh bucket, and configs for it.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use nodetool_storage_s3::{S3Config, S3Storage};
use nodetool_testkit::s3_server::{self, S3Server, MOTO_ACCESS_KEY_ID, MOTO_SECRET_ACCESS_KEY};

/// A moto server and a bucket created on it.
pub struct Moto {
    pub server: S3Server,
    pub bucket: String,
}

impl Moto {
    /// Starts moto and creates a bucket; `None` (after `skip_or_fail`) when moto is missing.
    pub async fn start(test: &str) -> Option<Self> {
        let Some(server) = s3_server::start().await else {
            nodetool_testkit::skip_or_fail(
                test,
                "moto_server not found (pip install 'moto[server]')",
            );
            return None;
        };
        let bucket = format!("nodetool-{}", &nodetool_core::id::new_id()[..12]);
        server.create_bucket(&bucket).await.unwrap();
        Some(Self { server, bucket })
    }

    pub fn config(&self) -> S3Config {
        config_for(&self.server.endpoint(), &self.bucket)
    }

    pub fn storage(&self) -> S3Storage {
        S3Storage::new(self.config()).unwrap()
    }

    /// An unsigned GET on the server (moto answers without auth), e.g. `?uploads`.
    pub async fn raw_get(&self, path_and_query: &str) -> String {
        let url = format!(
            "{}/{}{}",
            self.server.endpoint(),
            self.bucket,
            path_and_query
        );
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }
}

/// A config for moto's any-key-goes auth, with short deadlines.
pub fn config_for(endpoint: &str, bucket: &str) -> S3Config {
    S3Config {
        endpoint: Some(endpoint.to_owned()),
        access_key_id: Some(MOTO_ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(MOTO_SECRET_ACCESS_KEY.to_owned()),
        timeout: Duration::from_secs(20),
        max_retries: 2,
        ..S3Config::new(bucket)
    }
}
