//! Settings: the only code in the workspace that reads the environment, `settings.yaml` and
//! `secrets.yaml`, and the rules that pick a backend from them.
//!
//! Precedence, one chain for every setting: **environment > `secrets.yaml` > `settings.yaml` >
//! default**. Both files live in `NODETOOL_CONFIG_DIR`, else `~/.config/nodetool/`, and are flat
//! `KEY: value` maps. Empty values count as unset. Test mode is explicit (`ENV=test`), never sniffed.
//!
//! ```no_run
//! use nodetool_config::{asset_storage, Settings, Sources};
//! # fn main() -> nodetool_core::Result<()> {
//! let settings = Settings::load(&Sources::from_process()?)?;
//! let assets = asset_storage(&settings, false)?;
//! println!("{}: {}", assets.plan.backend_name(), assets.reason);
//! # Ok(()) }
//! ```

pub mod database;
mod media;
mod parse;
mod providers;
pub mod python;
pub mod registry;
mod select;
mod server;
mod settings;
mod sources;
pub mod telemetry;

pub use database::DatabaseSettings;
pub use media::MediaSettings;
pub use parse::{is_path_like, mask, size as parse_size};
pub use providers::{ProviderValues, PROVIDER_SETTINGS};
pub use python::{PythonSettings, PYTHON_SETTINGS};
pub use registry::{registry, DefaultValue, SettingDef, ValueKind};
pub use select::{
    asset_folder, asset_storage, node_cache, storage_base_url, temp_storage, CachePlan, Selection,
    StoragePlan,
};
pub use server::{normalize_origin, ServerSettings};
pub use settings::{
    docker_defaults, AuthProvider, DockerDefaults, Environment, SettingEntry, Settings,
    DOCKER_MEMORY_CAP,
};
pub use sources::{SettingSource, Sources, CONFIG_DIR_VAR, SECRETS_FILE, SETTINGS_FILE};
pub use telemetry::{TelemetrySettings, RELAY_ENV};
