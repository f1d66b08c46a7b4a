//! The registry of every setting nodetool understands: name, one-line description, whether it is a
//! secret, its type and its default. `settings show` renders it in this order, and loading
//! validates every value against its [`ValueKind`].

/// The type of a setting's value, which decides how the raw string is parsed and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Free text.
    Text,
    /// An absolute `http://` or `https://` URL; trailing slashes are removed.
    Url,
    /// Like [`ValueKind::Url`], but a path starting with `/` is accepted too.
    UrlOrPath,
    /// A filesystem path; a leading `~` is expanded to `HOME`.
    Path,
    /// `true/false`, `1/0`, `yes/no` (any case).
    Bool,
    /// A TCP port, 1–65535.
    Port,
    /// A whole number ≥ 1.
    Count,
    /// A duration: whole seconds, or a number with `s`, `m`, `h` or `d`.
    Seconds,
    /// A byte size: a number with an optional binary unit (`512m`, `2g`, `1.5GiB`), as Docker reads it.
    Size,
    /// A positive number of CPUs, fractions allowed (`1.5`).
    Cpus,
    /// Gigabytes, fractions allowed, 0 included (`24`, `7.5`).
    Gigabytes,
    /// A signed whole number.
    Integer,
    /// One of a fixed set of words (any case).
    Choice(&'static [&'static str]),
    /// A comma-separated list of non-empty items.
    List,
    /// A `postgres://` or `postgresql://` URL; shown with its password redacted, not masked
    /// whole, so `settings show` still tells which server and database.
    PostgresUrl,
}

impl ValueKind {
    /// A short name for the type, as `settings show` and the docs print it.
    pub fn describe(self) -> &'static str {
        match self {
            ValueKind::Text => "text",
            ValueKind::Url => "url",
            ValueKind::UrlOrPath => "url or /path",
            ValueKind::Path => "path",
            ValueKind::Bool => "bool",
            ValueKind::Port => "port",
            ValueKind::Count => "count",
            ValueKind::Seconds => "seconds",
            ValueKind::Size => "size",
            ValueKind::Cpus => "cpus",
            ValueKind::Gigabytes => "gigabytes",
            ValueKind::Integer => "integer",
            ValueKind::Choice(_) => "choice",
            ValueKind::List => "list",
            ValueKind::PostgresUrl => "postgres url",
        }
    }
}

/// What a setting is worth when no source sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// Unset: the typed field is `None`.
    None,
    /// A fixed value, parsed like any other.
    Value(&'static str),
    /// The number of CPUs the process may use.
    CpuCount,
    /// Half the host's memory (`/proc/meminfo` `MemTotal`), at most 8 GiB
    /// ([`crate::docker_defaults`]).
    HalfHostMemory,
    /// A file or folder inside the config directory.
    InConfigDir(&'static str),
}

/// One registered setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingDef {
    pub name: &'static str,
    /// Older names still read, each at the same precedence level as `name` (which wins within a level).
    pub aliases: &'static [&'static str],
    pub description: &'static str,
    /// Secrets are masked in `settings show` and in error messages.
    pub secret: bool,
    pub kind: ValueKind,
    pub default: DefaultValue,
}

pub const ENV_CHOICES: &[&str] = &["development", "production", "test"];
pub const AUTH_PROVIDER_CHOICES: &[&str] = &["none", "local", "static", "supabase"];
/// Execution strategies `ALLOWED_STRATEGIES` may name.
pub const STRATEGY_CHOICES: &[&str] = &["threaded", "subprocess", "docker"];
pub const JOB_EXECUTION_CHOICES: &[&str] = &["local", "queue"];
pub const DOCKER_PULL_POLICY_CHOICES: &[&str] = &["never", "missing", "always"];

const fn def(
    name: &'static str,
    kind: ValueKind,
    default: DefaultValue,
    description: &'static str,
) -> SettingDef {
    SettingDef {
        name,
        aliases: &[],
        description,
        secret: false,
        kind,
        default,
    }
}

const fn secret(name: &'static str, description: &'static str) -> SettingDef {
    SettingDef {
        name,
        aliases: &[],
        description,
        secret: true,
        kind: ValueKind::Text,
        default: DefaultValue::None,
    }
}

use DefaultValue as D;
use ValueKind as K;

/// Every setting, in the order `settings show` lists them.
#[rustfmt::skip]
pub const REGISTRY: &[SettingDef] = &[
    def("ENV", K::Choice(ENV_CHOICES), D::Value("development"),
        "Run mode: development, production or test (test selects in-memory storage)"),
    // Storage.
    def("ASSET_BUCKET", K::Text, D::Value("assets"),
        "Asset bucket (S3/Supabase), or folder name or path for local storage"),
    def("ASSET_DOMAIN", K::Text, D::None,
        "Public domain serving the S3 asset bucket (URLs become https://{domain}/{key})"),
    def("ASSET_TEMP_BUCKET", K::Text, D::None,
        "Separate bucket for temporary files (S3/Supabase)"),
    def("ASSET_TEMP_DOMAIN", K::Text, D::None,
        "Public domain serving the S3 temp bucket"),
    def("ASSET_FOLDER", K::Path, D::None,
        "Folder for local asset storage (overrides ASSET_BUCKET)"),
    def("S3_ENDPOINT_URL", K::Url, D::None,
        "S3-compatible endpoint (MinIO, Wasabi); unset means AWS"),
    secret("S3_ACCESS_KEY_ID", "S3 access key id; setting it selects S3 storage"),
    secret("S3_SECRET_ACCESS_KEY", "S3 secret access key; setting it selects S3 storage"),
    def("S3_REGION", K::Text, D::Value("us-east-1"), "S3 region"),
    def("S3_TIMEOUT_SECONDS", K::Seconds, D::Value("30"),
        "Deadline for one S3 request"),
    def("SUPABASE_URL", K::Url, D::None,
        "Supabase project URL; with SUPABASE_KEY selects Supabase storage"),
    secret("SUPABASE_KEY", "Supabase service-role key (server side only)"),
    secret("SUPABASE_JWT_SECRET", "Supabase JWT secret for verifying user tokens"),
    def("SUPABASE_ANON_KEY", K::Text, D::None,
        "Supabase anon (public) key the web app signs in with; GET /api/config serves it"),
    def("NODETOOL_API_URL", K::Url, D::None,
        "Public base URL of this API, used to build absolute storage URLs"),
    def("NODETOOL_STORAGE_PUBLIC_URL", K::UrlOrPath, D::None,
        "Public base URL for file/memory storage (e.g. a CDN); beats NODETOOL_API_URL"),
    def("NODETOOL_MAX_UPLOAD_BYTES", K::Size, D::Value("1g"),
        "Largest accepted upload body"),
    def("FILE_READ_CACHE_BYTES", K::Size, D::Value("32m"),
        "Memory for small (<= 64 KiB) local-file objects kept after a read; 0 turns it off"),
    secret("NODETOOL_URL_SIGNING_KEY", "HMAC key for signed storage URLs (at least 16 characters)"),
    def("ASSET_TEMP_TTL", K::Seconds, D::Value("86400"),
        "Lifetime of temporary objects"),
    def("DB_PATH", K::Path, D::InConfigDir("nodetool.db"),
        "SQLite database file: jobs, job events, asset records, workflows (unused when DATABASE_URL is set)"),
    // Database (crate::database).
    SettingDef {
        secret: true,
        ..def("DATABASE_URL", K::PostgresUrl, D::None,
            "PostgreSQL URL (postgres://user:password@host:5432/db): jobs, job events, asset records \
             and workflows go there, nothing to DB_PATH. Unset: everything in DB_PATH")
    },
    def("JOB_EVENTS_MAX_PER_JOB", K::Count, D::Value("10000"),
        "Events of one job kept in the database (the latest), replayable after a restart"),
    def("JOB_EVENT_RETENTION", K::Seconds, D::Value("7d"),
        "How long a finished job's events stay in the database"),
    def("JOB_EXECUTION", K::Choice(JOB_EXECUTION_CHOICES), D::Value("local"),
        "local: `nodetool serve` runs the jobs it accepts; queue: it only enqueues them in \
         DATABASE_URL's PostgreSQL and `nodetool work` processes run them (needs DATABASE_URL)"),
    def("JOB_LEASE_SECONDS", K::Seconds, D::Value("30"),
        "Queue mode: how long a worker's claim on a job lasts without a heartbeat (renewed every \
         third of it); a job whose lease expires is retried or failed \"worker lost\""),
    def("JOB_MAX_ATTEMPTS", K::Count, D::Value("2"),
        "Queue mode: runs of one job at most when its worker is lost (2: one retry); only jobs \
         whose nodes are all idempotent are retried, others fail \"worker lost\""),
    def("JOB_QUEUE_MAX_RUNNING", K::Count, D::None,
        "Queue mode: queued jobs running at once across all workers (unset: no cap). Workers \
         enforce it, with MAX_JOBS_PER_USER, when they claim: give every worker the same value"),
    def("JOB_CLAIM_TIMEOUT_SECONDS", K::Seconds, D::Value("300"),
        "Queue mode: how long a job whose worker_tags or strategy no live worker offers waits \
         before it fails (naming the tags it needs and those the live workers offer)"),
    // Caches.
    def("MEMCACHE_HOST", K::Text, D::None,
        "Memcached host; with MEMCACHE_PORT selects the memcached node cache"),
    def("MEMCACHE_PORT", K::Port, D::None, "Memcached port"),
    def("NODE_CACHE_MAX_BYTES", K::Size, D::Value("268435456"),
        "Capacity of the in-process node cache"),
    def("NODE_CACHE_TTL", K::Seconds, D::Value("3600"), "Default lifetime of a cached node result"),
    def("URI_CACHE_TTL", K::Seconds, D::Value("300"), "Lifetime of a cached asset URI"),
    // Node paths.
    def("FONT_PATH", K::Path, D::None, "Font folder for image nodes"),
    def("COMFY_FOLDER", K::Path, D::None, "ComfyUI installation folder"),
    def("CHROMA_PATH", K::Path, D::None, "ChromaDB data folder"),
    // Auth and API.
    def("AUTH_PROVIDER", K::Choice(AUTH_PROVIDER_CHOICES), D::Value("local"),
        "Authentication: none, local, static (SERVER_AUTH_TOKEN) or supabase"),
    secret("SERVER_AUTH_TOKEN",
        "Bearer token(s) for AUTH_PROVIDER=static; comma-separated to rotate"),
    def("AUTH_CACHE_TTL", K::Seconds, D::Value("60"), "Lifetime of a cached token check"),
    def("NODETOOL_ENABLE_TERMINAL_WS", K::Bool, D::Value("false"),
        "Enable the terminal WebSocket (never in production)"),
    // HTTP server hardening (crate::server; `nodetool serve`).
    def("ALLOWED_ORIGINS", K::List, D::None,
        "Browser origins (https://host[:port]) besides the server's own allowed on /ws and state-changing routes under AUTH_PROVIDER none/local"),
    def("NODETOOL_CONTENT_DOMAIN", K::Text, D::None,
        "Host name that serves user content as a separate origin: there, HTML/SVG/JS objects are served inline (elsewhere as attachments)"),
    def("NODETOOL_WS_MAX_MESSAGE_BYTES", K::Size, D::Value("8m"),
        "Largest /ws message accepted (larger ones close the socket with 1009)"),
    def("NODETOOL_MAX_JSON_BODY_BYTES", K::Size, D::Value("8m"),
        "Largest JSON request body accepted by the REST API (uploads have NODETOOL_MAX_UPLOAD_BYTES)"),
    def("SERVER_HEADER_TIMEOUT", K::Seconds, D::Value("15"),
        "Time a client has to send a request head; also how long an idle keep-alive connection stays open"),
    def("SERVER_BODY_TIMEOUT", K::Seconds, D::Value("30"),
        "A request body must deliver at least 16 KiB in every window this long, else 408 and the connection is closed (slow bodies)"),
    def("SERVER_MAX_CONNECTIONS", K::Count, D::None,
        "Open connections served at once (more wait to be accepted); unset: 3/4 of the open-file limit"),
    def("NODETOOL_EXAMPLES_DIR", K::Path, D::None,
        "Folder of example workflow JSON files served at /api/workflows/examples; unset: ./examples when the working directory has one"),
    // Execution.
    def("THREAD_POOL_SIZE", K::Count, D::CpuCount, "Worker threads of the threaded strategy"),
    def("MAX_WORKFLOW_THREADS", K::Count, D::None,
        "Jobs running at once, every strategy together (the rest wait as scheduled); unset: THREAD_POOL_SIZE"),
    def("MAX_JOBS_PER_USER", K::Count, D::None,
        "Jobs one user runs at once (of MAX_WORKFLOW_THREADS; freed slots go round-robin between users); unset: no per-user cap"),
    def("NODETOOL_VRAM_GB", K::Gigabytes, D::None,
        "GPU memory this process offers its jobs: a job with a node whose VRAM hint \
         (requires_vram_gb) is larger is refused at submit, naming the node; a queue worker claims \
         only jobs that fit (0: no GPU). Unset: hints are not checked"),
    def("MAX_QUEUED_JOBS_PER_USER", K::Count, D::Value("100"),
        "Jobs one user may have waiting as scheduled; a submission beyond it is refused (429 with Retry-After, an error frame on /ws)"),
    def("JOB_TIMEOUT_SECONDS", K::Seconds, D::None,
        "Per-job deadline, a ceiling: a request's time_seconds may only lower it; unset means none"),
    def("ALLOWED_STRATEGIES", K::List, D::None,
        "Execution strategies jobs may use (threaded, subprocess, docker; comma-separated); \
         unset: subprocess only under AUTH_PROVIDER=supabase, all three otherwise"),
    def("SUBPROCESS_WARM_WORKERS", K::Integer, D::Value("2"),
        "Subprocess workers kept started ahead of jobs, 0 to 64 (each still runs one job, then exits; \
         0: every job starts its own)"),
    def("DOCKER_IMAGE", K::Text, D::None,
        "Worker image for the Docker strategy (tagged, never :latest)"),
    def("DOCKER_ALLOWED_IMAGES", K::List, D::None,
        "Images a job request's docker_image may name besides DOCKER_IMAGE, comma-separated (a trailing * matches by prefix); unset: only DOCKER_IMAGE"),
    def("DOCKER_CPU_LIMIT", K::Cpus, D::CpuCount, "CPUs per Docker job (e.g. 1.5); default: the host's CPUs"),
    SettingDef {
        aliases: &["DOCKER_MEM_LIMIT"],
        ..def("DOCKER_MEMORY_LIMIT", K::Size, D::HalfHostMemory,
            "Memory per Docker job (e.g. 2g; no swap); default: half the host's memory, at most 8g")
    },
    def("DOCKER_SHM_SIZE", K::Size, D::None, "/dev/shm size per Docker job (e.g. 512m)"),
    def("DOCKER_PIDS_LIMIT", K::Integer, D::Value("512"), "Process limit per Docker job"),
    def("DOCKER_USER", K::Text, D::Value("1000:1000"), "User (uid:gid) Docker jobs run as"),
    def("DOCKER_GPU_DEVICES", K::List, D::None,
        "GPU devices for Docker jobs, comma-separated (e.g. 0,1 or all)"),
    def("DOCKER_PULL_POLICY", K::Choice(DOCKER_PULL_POLICY_CHOICES), D::Value("missing"),
        "When to pull the worker image: never, missing or always (images are built locally)"),
    // nodes-b: settings of built-in node types.
    def("NODETOOL_WORKSPACE_DIR", K::Path, D::None,
        "Workspace folder of lib.sqlite databases (one subfolder per user); unset, they are refused"),
    def("FFMPEG_PATH", K::Text, D::Value("ffmpeg"),
        "ffmpeg binary of the video nodes (a bare name is looked up in PATH)"),
    def("FFMPEG_TIMEOUT_SECONDS", K::Seconds, D::Value("600"),
        "Longest one ffmpeg run of a video node may take"),
    // Media refs and HTTP fetches made by nodes (crate::media; ARCHITECTURE "crates/engine").
    def("NODETOOL_DATA_URI_MAX_BYTES", K::Size, D::Value("32m"),
        "Largest decoded data: URI or inline data in a media ref"),
    def("NODETOOL_IMAGE_MAX_PIXELS", K::Count, D::Value("89478485"),
        "Largest image nodes decode, in pixels (width x height), checked from the header first"),
    def("NODETOOL_FILE_ROOTS", K::List, D::None,
        "Folders file:// refs, plain paths and folder nodes may read, comma-separated (the asset folder is always one)"),
    def("NODETOOL_HTTP_MAX_BYTES", K::Size, D::Value("64m"),
        "Largest body an http(s):// ref or HTTP node downloads"),
    def("NODETOOL_HTTP_TIMEOUT_SECONDS", K::Seconds, D::Value("30"),
        "Deadline for one HTTP fetch by a node, redirects included"),
    def("NODETOOL_HTTP_MAX_REDIRECTS", K::Integer, D::Value("5"),
        "Redirects an HTTP fetch by a node follows (every hop is checked by the address guard)"),
    def("NODETOOL_HTTP_ALLOW_PRIVATE", K::Bool, D::Value("false"),
        "Let nodes fetch loopback, private, link-local, CGNAT and metadata addresses"),
    def("NODETOOL_HTTP_ALLOW_HOSTS", K::List, D::None,
        "host:port pairs nodes may fetch although they resolve to private addresses, comma-separated"),
    // AI providers (crates/providers; names as in NodeTool). A job's secrets of the same name
    // beat these, as NodeTool's per-user secrets do. Read through `providers::ProviderValues`.
    secret("OPENAI_API_KEY", "OpenAI API key (provider openai)"),
    def("OPENAI_BASE_URL", K::Url, D::None,
        "OpenAI-compatible base URL for provider openai (default https://api.openai.com/v1); a custom URL needs no key"),
    secret("ANTHROPIC_API_KEY", "Anthropic API key (provider anthropic)"),
    def("ANTHROPIC_BASE_URL", K::Url, D::None,
        "Anthropic API base URL (default https://api.anthropic.com)"),
    secret("GEMINI_API_KEY", "Google Gemini API key (provider gemini)"),
    def("GEMINI_BASE_URL", K::Url, D::None,
        "Gemini API base URL (default https://generativelanguage.googleapis.com)"),
    def("OLLAMA_API_URL", K::Url, D::Value("http://127.0.0.1:11434"), "Ollama server (provider ollama)"),
    def("LLAMA_CPP_URL", K::Url, D::None, "llama.cpp server, e.g. http://127.0.0.1:8080 (provider llama_cpp)"),
    def("VLLM_BASE_URL", K::Url, D::None, "vLLM server (provider vllm)"),
    secret("VLLM_API_KEY", "vLLM API key, if the server wants one"),
    def("LMSTUDIO_API_URL", K::Url, D::Value("http://127.0.0.1:1234"), "LM Studio server (provider lmstudio)"),
    secret("LMSTUDIO_API_KEY", "LM Studio API key, if set"),
    secret("OPENROUTER_API_KEY", "OpenRouter API key (provider openrouter)"),
    def("OPENROUTER_BASE_URL", K::Url, D::None,
        "OpenRouter base URL (default https://openrouter.ai/api/v1)"),
    secret("SERPAPI_API_KEY", "SerpAPI key: gives agents the google_search tool"),
    def("NODETOOL_AI_CONNECT_TIMEOUT", K::Seconds, D::Value("10"), "Connect timeout of model calls"),
    def("NODETOOL_AI_IDLE_TIMEOUT", K::Seconds, D::Value("120"),
        "Longest silence of a model server (waiting for headers or the next streamed bytes)"),
    def("NODETOOL_AI_MAX_RETRIES", K::Integer, D::Value("2"),
        "Retries of a model call that failed transiently before any answer (429 honours retry-after)"),
    def("NODETOOL_AI_MAX_RESPONSE_BYTES", K::Size, D::Value("64m"), "Hard cap on one model response, streamed or not"),
    def("NODETOOL_MODEL_OVERRIDE", K::List, D::None,
        "Rewrite model refs before a run: type=provider:model, comma-separated (as nodetool run --model-override)"),
    // Tracing (crate::telemetry): the standard OpenTelemetry variables.
    def("OTEL_EXPORTER_OTLP_ENDPOINT", K::Url, D::None,
        "OTLP/HTTP collector base URL (spans go to its /v1/traces); unset: no span export"),
    def("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", K::Url, D::None,
        "OTLP/HTTP traces URL, used as given (beats OTEL_EXPORTER_OTLP_ENDPOINT)"),
    def("OTEL_SERVICE_NAME", K::Text, D::Value("nodetool"), "service.name of exported spans"),
    // Python node bridge (crate::python).
    def("NODETOOL_PYTHON", K::Path, D::None,
        "Python interpreter with nodetool-core and node packs, for Python nodes; unset: none"),
    def("NODETOOL_PYTHON_WORKERS", K::Count, D::Value("1"),
        "Python worker processes (each runs many nodes at once)"),
    def("NODETOOL_BRIDGE_MAX_FRAME_SIZE", K::Size, D::Value("256m"),
        "Largest Python bridge frame either way (the worker enforces the same cap)"),
    def("NODETOOL_PYTHON_STARTUP_TIMEOUT", K::Seconds, D::Value("60"),
        "Time a Python worker has to start and list its nodes"),
    def("NODETOOL_PYTHON_HEALTH_TIMEOUT", K::Seconds, D::Value("30"),
        "A busy Python worker that does not answer a health check this long is restarted"),
];

/// Every registered setting, in display order.
pub fn registry() -> &'static [SettingDef] {
    REGISTRY
}

/// The definition of `name` (its canonical name or an alias).
pub fn find(name: &str) -> Option<&'static SettingDef> {
    REGISTRY
        .iter()
        .find(|d| d.name == name || d.aliases.contains(&name))
}
