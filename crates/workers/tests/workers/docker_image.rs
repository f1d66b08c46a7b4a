//! The Docker worker image for the tests that run jobs in containers, built from this crate's
//! `nodetool-exec-worker` binary.

/// The Docker engine and the test worker's image (built on first use), or `None` after
/// `skip_or_fail` when no engine is here.
pub async fn worker_image(test: &str) -> Option<(bollard::Docker, String)> {
    use nodetool_workers::docker::image;
    let socket = std::path::Path::new("/var/run/docker.sock");
    let client = match nodetool_workers::docker::connect_engine(socket).await {
        Ok(c) => c,
        Err(e) => {
            nodetool_testkit::skip_or_fail(test, &format!("no Docker engine: {e}"));
            return None;
        }
    };
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_nodetool-exec-worker"));
    let tag = image::pinned_tag(binary).expect("image tag");
    if !image::image_exists(&client, &tag)
        .await
        .expect("image lookup")
    {
        image::build_image(
            &client,
            binary,
            std::slice::from_ref(&tag),
            "1000:1000",
            &["worker".into()],
        )
        .await
        .expect("image build");
    }
    Some((client, tag))
}
