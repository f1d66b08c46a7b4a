//! The Python node bridge in the binary: `nodetool python doctor`, and the registry every entry
//! point builds — native nodes first, then the Python worker's (`NODETOOL_PYTHON`) for every
//! other type.
//!
//! - `nodetool run` starts the bridge only when the workflow names a type no native node has;
//!   `nodetool serve` starts it at startup. A bridge that cannot start is logged, and a workflow
//!   naming a Python type then fails validation with the reason.
//! - Secrets: a Python node gets the keys it declares in `required_settings`, from its job, else
//!   from the settings (environment > secrets.yaml > settings.yaml) — except this runtime's own
//!   credentials (storage, auth, signing keys), which never go to a node.
//! - Docker jobs refuse Python nodes ([`RefusePythonNodes`]): the worker image carries no Python
//!   environment.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Subcommand;

use nodetool_bridge::{BridgeConfig, PythonBridge, SecretSource};
use nodetool_config::{PythonSettings, Settings};
use nodetool_engine::{Graph, Registry};

#[derive(Debug, Subcommand)]
pub enum PythonCommand {
    /// Check the Python bridge: interpreter, nodetool-core and protocol versions, node types
    /// per namespace, load errors.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: PythonCommand) -> anyhow::Result<ExitCode> {
    match command {
        PythonCommand::Doctor { json } => doctor(json).await,
    }
}

/// This runtime's own secret settings: never handed to a node, whatever it declares.
fn infrastructure_secrets(settings: &Settings) -> Vec<&'static str> {
    // AI provider keys are the nodes' own secrets (NodeTool hands them to Python provider
    // nodes too); every other secret setting is this runtime's credential.
    settings
        .entries()
        .into_iter()
        .filter(|e| e.secret && !nodetool_config::PROVIDER_SETTINGS.contains(&e.name))
        .map(|e| e.name)
        .collect()
}

/// A node's declared secrets, from the settings' layers.
#[derive(Debug)]
struct SettingsSecrets {
    settings: Arc<Settings>,
    refused: Vec<&'static str>,
}

impl SecretSource for SettingsSecrets {
    fn secret(&self, name: &str) -> Option<String> {
        if self.refused.contains(&name) {
            tracing::warn!(
                secret = name,
                "a python node asked for one of this runtime's own credentials; not given"
            );
            return None;
        }
        self.settings.lookup(name).map(|(v, _)| v.to_owned())
    }
}

/// The bridge's configuration from the settings, `None` when `NODETOOL_PYTHON` is unset.
pub(crate) fn bridge_config(settings: &Settings) -> anyhow::Result<Option<BridgeConfig>> {
    let sources = nodetool_config::Sources::from_process()?;
    Ok(config_from(
        &settings.python,
        &sources.env,
        &infrastructure_secrets(settings),
    ))
}

/// The bridge's configuration from its settings block and an environment to allow-list.
fn config_from(
    py: &PythonSettings,
    env: &BTreeMap<String, String>,
    secret_names: &[&str],
) -> Option<BridgeConfig> {
    let python = py.interpreter.clone()?;
    let mut cfg = BridgeConfig::new(python);
    cfg.workers = py.workers;
    cfg.max_frame_bytes = usize::try_from(py.max_frame_bytes).unwrap_or(usize::MAX);
    cfg.startup_timeout = py.startup_timeout;
    cfg.health_timeout = py.health_timeout;
    cfg.env = nodetool_bridge::env::worker_env(env, secret_names, cfg.max_frame_bytes);
    Some(cfg)
}

/// What a subprocess job's `nodetool worker` needs in its environment to start its own Python
/// worker: the bridge's settings block and the Python worker's allow-listed variables
/// (`PYTHONPATH`, model caches, ...). Nothing when the bridge is off. No secrets: those travel
/// in the request frame.
pub(crate) fn subprocess_env(
    settings: &Settings,
    env: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let secret_names = infrastructure_secrets(settings);
    let Some(cfg) = config_from(&settings.python, env, &secret_names) else {
        return Vec::new();
    };
    let mut out = settings.python.to_env();
    out.extend(cfg.env);
    out
}

/// Starts the bridge (`Ok(None)` when it is not configured).
pub(crate) async fn start_bridge(
    settings: &Arc<Settings>,
) -> anyhow::Result<Option<nodetool_core::Result<PythonBridge>>> {
    let Some(cfg) = bridge_config(settings)? else {
        return Ok(None);
    };
    let secrets = Arc::new(SettingsSecrets {
        settings: settings.clone(),
        refused: infrastructure_secrets(settings),
    });
    Ok(Some(PythonBridge::start_with(cfg, Some(secrets)).await))
}

/// When to start the Python worker.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Need<'a> {
    /// At once, if configured (the server).
    Always,
    /// Only if the graph names a type no native node has (`nodetool run`).
    For(&'a Graph),
}

/// The registry of this process: the native nodes, then the Python worker's. Never fails on a
/// broken Python setup: that is logged, and validation names it for any Python type.
pub(crate) async fn registry(
    settings: &Arc<Settings>,
    need: Need<'_>,
) -> anyhow::Result<(Registry, Option<PythonBridge>)> {
    let mut registry = nodetool_nodes::registry();
    let wanted = match need {
        Need::Always => true,
        Need::For(graph) => graph
            .nodes
            .iter()
            .any(|n| registry.get(&n.node_type).is_none()),
    };
    if !wanted {
        nodetool_bridge::mark_bridge_disabled(&mut registry);
        return Ok((registry, None));
    }
    match start_bridge(settings).await? {
        None => {
            nodetool_bridge::mark_bridge_disabled(&mut registry);
            Ok((registry, None))
        }
        Some(Ok(bridge)) => {
            let added = nodetool_bridge::register_python_nodes(&mut registry, &bridge);
            tracing::info!(
                python_types = added.added.len(),
                shadowed = added.shadowed.len(),
                "python bridge ready"
            );
            Ok((registry, Some(bridge)))
        }
        Some(Err(e)) => {
            tracing::error!(error = %e, "the python bridge did not start; python nodes are unavailable");
            nodetool_bridge::mark_bridge_failed(&mut registry, &e);
            Ok((registry, None))
        }
    }
}

/// Wraps a strategy whose workers have no Python environment (Docker): jobs that name a Python
/// node type are refused before anything starts, saying where they can run.
#[derive(Debug)]
pub(crate) struct RefusePythonNodes {
    inner: Arc<dyn nodetool_exec::ExecutionStrategy>,
    python_types: Arc<BTreeSet<String>>,
}

impl RefusePythonNodes {
    pub(crate) fn wrap(
        inner: Arc<dyn nodetool_exec::ExecutionStrategy>,
        bridge: Option<&PythonBridge>,
    ) -> Arc<dyn nodetool_exec::ExecutionStrategy> {
        match bridge {
            None => inner,
            Some(b) => Arc::new(Self {
                inner,
                python_types: Arc::new(
                    b.discovery()
                        .nodes
                        .iter()
                        .map(|n| n.node_type.clone())
                        .collect(),
                ),
            }),
        }
    }
}

#[async_trait]
impl nodetool_exec::ExecutionStrategy for RefusePythonNodes {
    fn name(&self) -> nodetool_exec::StrategyKind {
        self.inner.name()
    }

    fn capabilities(&self) -> nodetool_exec::Capabilities {
        self.inner.capabilities()
    }

    fn admit(&self, spec: &nodetool_exec::JobSpec) -> nodetool_core::Result<()> {
        self.inner.admit(spec)
    }

    fn shutdown(&self) {
        self.inner.shutdown();
    }

    async fn start(
        &self,
        spec: nodetool_exec::JobSpec,
        sink: Arc<dyn nodetool_engine::EventSink>,
    ) -> nodetool_core::Result<nodetool_exec::JobHandle> {
        let native = nodetool_nodes::registry();
        let python: Vec<String> = spec
            .graph
            .nodes
            .iter()
            .filter(|n| {
                native.get(&n.node_type).is_none() && self.python_types.contains(&n.node_type)
            })
            .map(|n| format!("`{}` ({})", n.id, n.node_type))
            .collect();
        if !python.is_empty() {
            return Err(nodetool_core::Error::new(
                nodetool_core::ErrorKind::Unsupported,
                format!(
                    "Python nodes cannot run in {} jobs: {} need the Python worker, and the \
                     worker image carries no Python environment; run this job with the \
                     threaded or subprocess strategy",
                    self.inner.name(),
                    python.join(", ")
                ),
            )
            .with_operation("exec.start"));
        }
        self.inner.start(spec, sink).await
    }
}

/// Wraps a strategy whose workers start their own Python worker (subprocess): the secrets each
/// Python node of a job declares go into the job's request frame, from the settings when the
/// job does not carry them, since the worker reads no settings.
#[derive(Debug)]
pub(crate) struct LendPythonSecrets {
    inner: Arc<dyn nodetool_exec::ExecutionStrategy>,
    /// Python node type → the settings it declares.
    declared: Arc<HashMap<String, Vec<String>>>,
    secrets: Arc<SettingsSecrets>,
}

impl LendPythonSecrets {
    pub(crate) fn wrap(
        inner: Arc<dyn nodetool_exec::ExecutionStrategy>,
        bridge: Option<&PythonBridge>,
        settings: &Arc<Settings>,
    ) -> Arc<dyn nodetool_exec::ExecutionStrategy> {
        let Some(bridge) = bridge else { return inner };
        let declared: HashMap<String, Vec<String>> = bridge
            .discovery()
            .nodes
            .iter()
            .filter(|n| !n.required_settings.is_empty())
            .map(|n| (n.node_type.clone(), n.required_settings.clone()))
            .collect();
        if declared.is_empty() {
            return inner;
        }
        Arc::new(Self {
            inner,
            declared: Arc::new(declared),
            secrets: Arc::new(SettingsSecrets {
                settings: settings.clone(),
                refused: infrastructure_secrets(settings),
            }),
        })
    }
}

#[async_trait]
impl nodetool_exec::ExecutionStrategy for LendPythonSecrets {
    fn name(&self) -> nodetool_exec::StrategyKind {
        self.inner.name()
    }

    fn capabilities(&self) -> nodetool_exec::Capabilities {
        self.inner.capabilities()
    }

    fn admit(&self, spec: &nodetool_exec::JobSpec) -> nodetool_core::Result<()> {
        self.inner.admit(spec)
    }

    fn shutdown(&self) {
        self.inner.shutdown();
    }

    async fn start(
        &self,
        mut spec: nodetool_exec::JobSpec,
        sink: Arc<dyn nodetool_engine::EventSink>,
    ) -> nodetool_core::Result<nodetool_exec::JobHandle> {
        let keys: BTreeSet<&String> = spec
            .graph
            .nodes
            .iter()
            .filter_map(|n| self.declared.get(&n.node_type))
            .flatten()
            .collect();
        for key in keys {
            if !spec.secrets.contains_key(key) {
                if let Some(v) = self.secrets.secret(key) {
                    spec.secrets.insert(key.clone(), v);
                }
            }
        }
        self.inner.start(spec, sink).await
    }
}

/// The registry of a `nodetool worker` child: the built-in nodes, plus its own Python worker's
/// when the job names a type they lack. The bridge's settings come from the variables the
/// parent put in the child's environment ([`subprocess_env`]); the child reads nothing else.
#[derive(Debug, Clone, Default)]
pub(crate) struct WorkerRegistry {
    python: Option<PythonSettings>,
    env: BTreeMap<String, String>,
    bridge: Arc<std::sync::Mutex<Option<PythonBridge>>>,
}

impl WorkerRegistry {
    pub(crate) fn from_process() -> anyhow::Result<Self> {
        let env = nodetool_config::Sources::from_process()?.env;
        Ok(Self {
            python: Some(PythonSettings::from_env(&env)?),
            env,
            bridge: Arc::default(),
        })
    }

    /// Lets the job's Python worker finish and exit.
    pub(crate) async fn shutdown(&self) {
        let bridge = self.bridge.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(b) = bridge {
            b.shutdown(Duration::from_secs(2)).await;
        }
    }
}

#[async_trait]
impl nodetool_workers::worker::RegistrySource for WorkerRegistry {
    async fn registry_for(&self, spec: &nodetool_exec::JobSpec) -> Arc<Registry> {
        let mut registry = nodetool_nodes::registry();
        let needed = spec
            .graph
            .nodes
            .iter()
            .any(|n| registry.get(&n.node_type).is_none());
        let cfg = self
            .python
            .as_ref()
            .and_then(|py| config_from(py, &self.env, &[]));
        match (needed, cfg) {
            (false, _) => {}
            (true, None) => nodetool_bridge::mark_bridge_disabled(&mut registry),
            (true, Some(cfg)) => match PythonBridge::start(cfg).await {
                Ok(bridge) => {
                    nodetool_bridge::register_python_nodes(&mut registry, &bridge);
                    *self.bridge.lock().unwrap_or_else(|p| p.into_inner()) = Some(bridge);
                }
                Err(e) => nodetool_bridge::mark_bridge_failed(&mut registry, &e),
            },
        }
        Arc::new(registry)
    }
}

/// `nodetool python doctor`.
async fn doctor(json: bool) -> anyhow::Result<ExitCode> {
    let settings = Arc::new(crate::load_settings()?);
    let Some(cfg) = bridge_config(&settings)? else {
        if json {
            println!("{}", serde_json::json!({"enabled": false}));
        } else {
            println!(
                "Python bridge: off (NODETOOL_PYTHON is not set)\n\
                 Set NODETOOL_PYTHON to a Python interpreter that has nodetool-core and your node \
                 packs installed, e.g. python3 -m venv ~/nodetool-py && ~/nodetool-py/bin/pip \
                 install nodetool-core==0.8.2, then NODETOOL_PYTHON=~/nodetool-py/bin/python."
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let versions = interpreter_versions(&cfg).await;
    let started = std::time::Instant::now();
    let bridge = match start_bridge(&settings).await? {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "enabled": true, "ok": false, "python": cfg.python.display().to_string(),
                        "versions": versions, "error": e.to_string(),
                    })
                );
            } else {
                println!("Python bridge: BROKEN");
                println!("  interpreter:  {}", cfg.python.display());
                print_versions(&versions);
                println!("  error:        {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
        None => anyhow::bail!("NODETOOL_PYTHON vanished between two reads"),
    };
    let start_secs = started.elapsed().as_secs_f64();
    let status = bridge.status().await;
    let native = nodetool_nodes::registry();
    let shadowed: Vec<String> = bridge
        .discovery()
        .nodes
        .iter()
        .map(|n| n.node_type.clone())
        .filter(|t| native.get(t).is_some())
        .collect();
    if json {
        let report = serde_json::json!({
            "enabled": true,
            "ok": true,
            "versions": versions,
            "start_seconds": start_secs,
            "status": status,
            "shadowed_by_native": shadowed,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("Python bridge: ok (started in {start_secs:.2}s)");
        println!("  interpreter:  {}", status.python);
        print_versions(&versions);
        println!(
            "  protocol:     {} (this runtime speaks {}, needs at least {})",
            status.protocol_version,
            nodetool_bridge::PROTOCOL_VERSION,
            nodetool_bridge::MIN_PROTOCOL_VERSION
        );
        println!("  workers:      {} configured", cfg.workers);
        println!("  node types:   {}", status.node_count);
        for (ns, n) in &status.namespaces {
            println!("    {ns:<24} {n}");
        }
        if !shadowed.is_empty() {
            println!(
                "  native nodes replace {} Python type(s): {}",
                shadowed.len(),
                shadowed.join(", ")
            );
        }
        if status.load_errors.is_empty() {
            println!("  load errors:  none");
        } else {
            println!("  load errors:  {}", status.load_errors.len());
            for e in &status.load_errors {
                println!("    {e}");
            }
        }
    }
    bridge.shutdown(Duration::from_secs(2)).await;
    Ok(ExitCode::SUCCESS)
}

fn print_versions(v: &serde_json::Value) {
    let get = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or("unknown")
            .to_owned()
    };
    println!("  python:       {}", get("python"));
    println!("  nodetool-core {}", get("nodetool_core"));
}

/// The interpreter's Python and nodetool-core versions (from a separate short run).
async fn interpreter_versions(cfg: &BridgeConfig) -> serde_json::Value {
    const SCRIPT: &str = "import sys, json\n\
        try:\n    from importlib.metadata import version\n    core = version('nodetool-core')\n\
        except Exception as e:\n    core = 'not installed (%s)' % type(e).__name__\n\
        print(json.dumps({'python': sys.version.split()[0], 'nodetool_core': core}))";
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&cfg.python)
            .args(["-c", SCRIPT])
            .env_clear()
            .envs(&cfg.env)
            .output(),
    )
    .await;
    match out {
        Ok(Ok(o)) if o.status.success() => {
            serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
        }
        Ok(Ok(o)) => serde_json::json!({
            "error": String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").to_owned()
        }),
        Ok(Err(e)) => serde_json::json!({"error": e.to_string()}),
        Err(_) => serde_json::json!({"error": "timed out"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_their_declared_secrets_but_never_the_runtimes_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env: BTreeMap<String, String> = [
            ("SUPABASE_KEY", "service-role"),
            ("NODETOOL_URL_SIGNING_KEY", "0123456789abcdef0123"),
            ("OPENAI_API_KEY", "sk-node"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = Arc::new(
            Settings::load(&nodetool_config::Sources::new(env, dir.path())).expect("settings"),
        );
        let source = SettingsSecrets {
            refused: infrastructure_secrets(&settings),
            settings,
        };
        assert_eq!(source.secret("OPENAI_API_KEY").as_deref(), Some("sk-node"));
        assert_eq!(source.secret("SUPABASE_KEY"), None);
        assert_eq!(source.secret("NODETOOL_URL_SIGNING_KEY"), None);
        assert_eq!(source.secret("NOT_SET_ANYWHERE"), None);
    }
}
