//! The worker image: `FROM scratch` plus the local `nodetool` binary and the shared libraries it
//! links against, built with the engine's build API so that no registry is needed.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use bytes::Bytes;
use futures::StreamExt;

use nodetool_core::{Error, ErrorKind, Result};

/// Repository of the worker image (`nodetool-worker:<tag>`).
pub const IMAGE_REPO: &str = "nodetool-worker";

/// Where the binary lives inside the image.
pub const BINARY_PATH_IN_IMAGE: &str = "/nodetool";

/// The tag a build without `--tag` gets besides the pinned one, and the image
/// [`super::DockerConfig::from_settings`] uses when `DOCKER_IMAGE` is unset.
pub fn default_image() -> String {
    format!("{IMAGE_REPO}:{}", env!("CARGO_PKG_VERSION"))
}

/// `nodetool-worker:<version>-<first 12 hex of blake3(binary)>`: pinned to one exact binary, so a
/// rebuild of different code never silently replaces what a workflow was tested with.
pub fn pinned_tag(binary: &Path) -> Result<String> {
    let hash = hash_file(binary)?;
    Ok(format!(
        "{IMAGE_REPO}:{}-{}",
        env!("CARGO_PKG_VERSION"),
        &hash[..12]
    ))
}

fn hash_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| io_err("open", path, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_err("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    let kind = if e.kind() == std::io::ErrorKind::NotFound {
        ErrorKind::NotFound
    } else {
        ErrorKind::Unexpected
    };
    Error::new(kind, format!("cannot {what} {}", path.display()))
        .with_operation("docker.build_image")
        .with_context("path", path.display())
        .with_source(e)
}

/// Refuses `latest` and untagged names: images are pinned so workflows do not drift.
pub fn check_tag(tag: &str) -> Result<()> {
    let last = tag.rsplit('/').next().unwrap_or(tag);
    match last.split_once(':') {
        Some((name, t)) if !name.is_empty() && !t.is_empty() && t != "latest" => Ok(()),
        _ => Err(Error::invalid_input(format!(
            "image tag {tag:?} must be name:tag with a fixed tag (never `latest`), e.g. {}",
            default_image()
        ))
        .with_operation("docker.build_image")),
    }
}

/// The shared objects `ldd` resolves for `binary`, dynamic loader included, in ldd's order.
/// A statically linked binary has none. An unresolved library is an error naming it.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| {
            Error::new(
                ErrorKind::Unsupported,
                "cannot run `ldd` to find the binary's shared libraries",
            )
            .with_operation("docker.build_image")
            .with_source(e)
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // glibc's ldd exits 1 and says so for static binaries; musl's prints nothing useful.
    if stdout.contains("statically linked") || stderr.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        return Err(Error::unexpected(format!(
            "`ldd {}` failed: {}",
            binary.display(),
            stderr.trim()
        ))
        .with_operation("docker.build_image"));
    }
    parse_ldd(&stdout)
}

/// Parses `ldd` output: `name => /path (0x..)`, `/path (0x..)`, `name (0x..)` (vdso, skipped) and
/// `name => not found` (an error).
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(Error::not_found(format!(
                        "shared library {} of the binary is not found (ldd)",
                        name.trim()
                    ))
                    .with_operation("docker.build_image"));
                }
                rest
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// The generated Dockerfile. Everything the image holds is under `rootfs/` in the context.
/// `entry_args` follow the binary in the `ENTRYPOINT` (`["worker"]` for the `nodetool` binary).
pub fn dockerfile(user: &str, binary_hash: &str, entry_args: &[String]) -> String {
    let mut entry = vec![format!("{BINARY_PATH_IN_IMAGE:?}")];
    entry.extend(entry_args.iter().map(|a| format!("{a:?}")));
    let entry = entry.join(", ");
    format!(
        "# Generated by `nodetool docker build-image`.\n\
         FROM scratch\n\
         COPY rootfs/ /\n\
         LABEL org.nodetool.worker.binary-blake3=\"{binary_hash}\"\n\
         USER {user}\n\
         WORKDIR /workspace\n\
         ENTRYPOINT [{entry}]\n"
    )
}

/// The build context: a tar with the Dockerfile, the binary at `/nodetool`, every library at the
/// path `ldd` reported (and at its canonical path, when a symlink such as `/lib` → `/usr/lib`
/// differs), and empty `/tmp` and `/workspace` mount points.
pub fn build_context(
    binary: &Path,
    libs: &[PathBuf],
    user: &str,
    entry_args: &[String],
) -> Result<Vec<u8>> {
    let hash = hash_file(binary)?;
    let mut tar = tar::Builder::new(Vec::new());
    // Symlinked libraries go in as the files they point to: there is no /lib symlink in scratch.
    tar.follow_symlinks(true);
    // The legacy builder rejects GNU sparse entries (type 'S'), which the binary may become.
    tar.sparse(false);
    let docker_file = dockerfile(user, &hash, entry_args);
    append_bytes(&mut tar, "Dockerfile", docker_file.as_bytes(), 0o644)?;
    append_dir(&mut tar, "rootfs/tmp", 0o1777)?;
    append_dir(&mut tar, "rootfs/workspace", 0o755)?;
    tar.append_path_with_name(binary, "rootfs/nodetool")
        .map_err(|e| io_err("add to the build context", binary, e))?;

    let mut seen = BTreeSet::new();
    for lib in libs {
        let mut paths = vec![lib.clone()];
        if let Ok(canonical) = std::fs::canonicalize(lib) {
            paths.push(canonical);
        }
        for p in paths {
            let rel = p.strip_prefix("/").unwrap_or(&p).to_path_buf();
            if !seen.insert(rel.clone()) {
                continue;
            }
            tar.append_path_with_name(lib, Path::new("rootfs").join(&rel))
                .map_err(|e| io_err("add to the build context", lib, e))?;
        }
    }
    tar.into_inner()
        .map_err(|e| io_err("finish", Path::new("build context"), e))
}

fn append_bytes(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data)
        .map_err(|e| io_err("add to the build context", Path::new(path), e))
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(mode);
    header.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut header, path, std::io::empty())
        .map_err(|e| io_err("add to the build context", Path::new(path), e))
}

/// What [`build_image`] produced.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Every tag applied, the pinned one first.
    pub tags: Vec<String>,
    pub image_id: Option<String>,
    /// Shared libraries copied in.
    pub libraries: Vec<PathBuf>,
    pub context_bytes: usize,
}

/// Builds the worker image from `binary`, tagged with every entry of `tags` (each checked with
/// [`check_tag`]). `user` is the image's default `USER` (`uid:gid`); `entry_args` follow
/// `/nodetool` in the entrypoint (`["worker"]` for the `nodetool` binary).
pub async fn build_image(
    docker: &Docker,
    binary: &Path,
    tags: &[String],
    user: &str,
    entry_args: &[String],
) -> Result<BuiltImage> {
    let Some(first) = tags.first() else {
        return Err(Error::invalid_input("build_image needs at least one tag")
            .with_operation("docker.build_image"));
    };
    for t in tags {
        check_tag(t)?;
    }
    let binary = binary.to_path_buf();
    let user_owned = user.to_owned();
    let args = entry_args.to_vec();
    // ldd, hashing and tarring ~100 MB are blocking work.
    let (libs, context) = tokio::task::spawn_blocking(move || -> Result<_> {
        let libs = shared_libraries(&binary)?;
        let ctx = build_context(&binary, &libs, &user_owned, &args)?;
        Ok((libs, ctx))
    })
    .await
    .map_err(|e| Error::unexpected("the build-context task failed").with_source(e))??;
    let context_bytes = context.len();

    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(first)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(
        options,
        None,
        Some(bollard::body_full(Bytes::from(context))),
    );
    let mut image_id = None;
    let mut log = String::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            Error::new(ErrorKind::Unavailable, format!("building {first} failed"))
                .with_operation("docker.build_image")
                .with_context("image", first)
                .with_source(e)
                .set_temporary(false)
        })?;
        if let Some(err) = info.error_detail.and_then(|d| d.message).or(info.error) {
            return Err(Error::unexpected(format!(
                "the engine refused to build {first}: {err}; build log:\n{log}"
            ))
            .with_operation("docker.build_image")
            .with_context("image", first));
        }
        if let Some(s) = info.stream {
            log.push_str(&s);
        }
        if let Some(id) = info.aux.and_then(|a| a.id) {
            image_id = Some(id);
        }
    }
    for extra in &tags[1..] {
        let (repo, tag) = extra.rsplit_once(':').unwrap_or((extra, ""));
        let opts = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        docker.tag_image(first, Some(opts)).await.map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("cannot tag {first} as {extra}"),
            )
            .with_operation("docker.build_image")
            .with_source(e)
        })?;
    }
    Ok(BuiltImage {
        tags: tags.to_vec(),
        image_id,
        libraries: libs,
        context_bytes,
    })
}

/// Runs `/nodetool <args>` in a throw-away, network-less container of `image` (like
/// `docker run --rm --entrypoint /nodetool <image> <args>`) and returns its output. Proves that
/// the binary and its libraries load; a non-zero exit is an error carrying the output.
pub async fn run_binary(docker: &Docker, image: &str, args: &[&str]) -> Result<String> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::{LogsOptionsBuilder, RemoveContainerOptionsBuilder};
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(vec![BINARY_PATH_IN_IMAGE.to_owned()]),
        cmd: Some(args.iter().map(|a| (*a).to_owned()).collect()),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let op_err = |what: &str, e: bollard::errors::Error| {
        Error::new(
            ErrorKind::Unexpected,
            format!("cannot {what} a container of {image}"),
        )
        .with_operation("docker.verify_image")
        .with_context("image", image)
        .with_source(e)
    };
    let id = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .map_err(|e| op_err("create", e))?
        .id;
    let result = async {
        docker
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| op_err("start", e))?;
        let code = match docker
            .wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>)
            .next()
            .await
        {
            Some(Ok(r)) => r.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(op_err("wait for", e)),
            None => -1,
        };
        let mut logs = docker.logs(
            &id,
            Some(
                LogsOptionsBuilder::default()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        let mut text = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.push_str(&chunk.to_string());
        }
        if code != 0 {
            return Err(Error::unexpected(format!(
                "`{BINARY_PATH_IN_IMAGE} {}` in {image} exited with code {code}: {}",
                args.join(" "),
                text.trim()
            ))
            .with_operation("docker.verify_image"));
        }
        Ok(text)
    }
    .await;
    let opts = RemoveContainerOptionsBuilder::default().force(true).build();
    if let Err(e) = docker.remove_container(&id, Some(opts)).await {
        tracing::warn!(container = %id, error = %e, "cannot remove the verification container");
    }
    result
}

/// Whether `image` exists in the engine.
pub async fn image_exists(docker: &Docker, image: &str) -> Result<bool> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(Error::new(
            ErrorKind::Unavailable,
            format!("cannot inspect image {image}"),
        )
        .with_operation("docker.image")
        .with_source(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_parse() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f21)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f21)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f21)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn missing_library_is_named() {
        let err = parse_ldd("\tlibfoo.so.3 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libfoo.so.3"), "{err}");
    }

    #[test]
    fn latest_and_untagged_are_refused() {
        assert!(check_tag("nodetool-worker:latest").is_err());
        assert!(check_tag("nodetool-worker").is_err());
        assert!(check_tag("localhost:5000/nodetool-worker").is_err());
        assert!(check_tag("nodetool-worker:0.1.0").is_ok());
        assert!(check_tag("localhost:5000/nodetool-worker:0.1.0-abc").is_ok());
    }

    #[test]
    fn dockerfile_is_scratch_non_root_worker() {
        let d = dockerfile("1000:1000", "abc", &["worker".to_owned()]);
        assert!(d.contains("FROM scratch\n"), "{d}");
        assert!(d.contains("USER 1000:1000\n"), "{d}");
        assert!(d.contains("ENTRYPOINT [\"/nodetool\", \"worker\"]"), "{d}");
    }

    #[test]
    fn context_holds_binary_libs_and_mount_points() {
        let exe = std::env::current_exe().unwrap();
        let libs = shared_libraries(&exe).unwrap();
        let ctx = build_context(&exe, &libs, "1000:1000", &[]).unwrap();
        let mut archive = tar::Archive::new(ctx.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        for want in [
            "Dockerfile",
            "rootfs/nodetool",
            "rootfs/tmp",
            "rootfs/workspace",
        ] {
            assert!(
                names.iter().any(|n| n.trim_end_matches('/') == want),
                "{want} missing from {names:?}"
            );
        }
        for lib in &libs {
            let rel = format!("rootfs{}", lib.display());
            assert!(names.contains(&rel), "{rel} missing from {names:?}");
        }
    }
}
