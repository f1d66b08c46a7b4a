//! `GET /api/config`: what the NodeTool web app reads at boot (`web/src/lib/runtimeConfig.ts`)
//! to learn its auth mode without guessing. Public (no token): the app asks before anyone has
//! signed in, and nothing in it is secret.
//!
//! NodeTool's fields: `authMode` (`"supabase"` when `AUTH_PROVIDER=supabase`, else `"local"`:
//! the app knows only those two), `supabaseUrl`, `supabaseAnonKey` (`SUPABASE_ANON_KEY`, the
//! public key, never the service key), `authRedirectUrl`, `googleWorkspace` (always false),
//! `googleScopes`, `version`. Ours beside them: `authProvider` (the exact `AUTH_PROVIDER`,
//! e.g. `static`, whose clients send `SERVER_AUTH_TOKEN` themselves) and `features`, which
//! routes this server offers.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use nodetool_config::AuthProvider;
use serde_json::{json, Value};

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/config", get(config))
}

async fn config(State(state): State<AppState>) -> Json<Value> {
    let settings = state.resources.settings();
    let provider = settings.auth_provider;
    let supabase = provider == AuthProvider::Supabase;
    Json(json!({
        "authMode": if supabase { "supabase" } else { "local" },
        "authProvider": provider.as_str(),
        "supabaseUrl": if supabase { settings.supabase_url.clone() } else { None },
        "supabaseAnonKey": if supabase { settings.server.supabase_anon_key.clone() } else { None },
        "authRedirectUrl": null,
        "googleWorkspace": false,
        "googleScopes": [],
        "version": env!("CARGO_PKG_VERSION"),
        "features": {
            "jobs": state.jobs.is_some(),
            "websocket": state.jobs.is_some(),
            "trpc": true,
            "workflows": true,
            "workflowVersions": true,
            "examples": state.options.examples_dir.is_some(),
            "terminal": state.options.terminal,
            "presignedStorage": state.options.presign_redirect,
        },
    }))
}
