//! A real llama.cpp server (`python -m llama_cpp.server` from `llama-cpp-python[server]`)
//! serving the tiny random-weight GGUF model on a free loopback port, killed on drop. Its chat
//! format is `chatml-function-calling`, so tool requests get real `tool_calls` frames (whose
//! arguments, from random weights, are usually invalid JSON).

use std::process::Stdio;
use std::time::Duration;

use crate::ai_env::{ai_env, AiEnv};

/// A running llama.cpp server. `start` returns `Err(why)` when the environment is missing:
/// callers then `skip_or_fail` and return.
#[derive(Debug)]
pub struct LlamaServer {
    child: Option<tokio::process::Child>,
    port: u16,
    env: AiEnv,
}

impl LlamaServer {
    pub async fn start() -> Result<Self, String> {
        let env = ai_env()?;
        let port = crate::free_port();
        let child = tokio::process::Command::new(&env.python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&env.model)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--n_ctx",
                // Room for the tool schemas the function-calling format puts in the prompt and
                // for the examples' max_tokens (8192); the KV cache of this model stays ~4 MB.
                "16384",
                "--n_threads",
                "1",
                "--chat_format",
                "chatml-function-calling",
                // Queue concurrent requests (two agents of one workflow) instead of cutting off
                // the running stream, llama-cpp-python's default.
                "--interrupt_requests",
                "False",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn llama_cpp.server: {e}"))?;
        let server = Self {
            child: Some(child),
            port,
            env,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let url = format!("{}/models", self.base_url());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            let pid = self.child.as_ref().and_then(|c| c.id()).unwrap_or(0);
            if crate::wait_for_child_port(pid, self.port, Duration::from_millis(200)).await {
                // The port opens before the model is loaded; /v1/models answers once it is.
                if let Ok(Ok(resp)) =
                    tokio::time::timeout(Duration::from_secs(2), http_get(&url)).await
                {
                    if resp.starts_with("HTTP/1.1 200") {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "llama.cpp server on port {} was not ready within 60 s",
            self.port
        ))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (what `LLAMA_CPP_URL` takes).
    pub fn root_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.root_url())
    }

    pub fn env(&self) -> &AiEnv {
        &self.env
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A minimal HTTP/1.1 GET over a fresh socket (the testkit has no HTTP client).
async fn http_get(url: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
