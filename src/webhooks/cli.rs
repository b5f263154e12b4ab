//! `payrelay webhooks …`: the operator's view of the endpoints and their log, on the node's
//! database (`database_url` of `--config`). A running node sees changes within about a second.
//! Output is one JSON document per line, for `jq`.

use std::process::ExitCode;

use clap::Subcommand;

use super::config::WebhooksConfig;
use super::manage::{self, EndpointPatch, ManageError, NewEndpoint, Scope};
use super::store::OutboxStore;

#[derive(Subcommand)]
pub enum WebhooksAction {
    /// List endpoints (never their secrets).
    List {
        #[arg(long)]
        merchant: Option<String>,
    },
    /// Create an endpoint; its signing secret is printed once.
    Create {
        #[arg(long)]
        url: String,
        /// The merchant whose events it receives; without it, the app's own endpoint.
        #[arg(long)]
        merchant: Option<String>,
        /// An event name or `prefix*` wildcard; repeat for several. None: every event.
        #[arg(long = "event")]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Show one endpoint.
    Show { id: String },
    /// Change an endpoint's URL, filter or state.
    Update {
        id: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long = "event")]
        events: Vec<String>,
        /// Every event again.
        #[arg(long, conflicts_with = "events")]
        all_events: bool,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// Delete an endpoint with its log.
    Delete { id: String },
    /// A new secret (printed once); the old one keeps signing for the overlap.
    RotateSecret { id: String },
    /// An endpoint's messages, newest first, with their attempts.
    Messages {
        id: String,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        before: Option<String>,
    },
    /// Send one message again.
    Retry { id: String, message_id: String },
    /// Send every failed message since a unix time (seconds) again.
    Recover {
        id: String,
        #[arg(long)]
        since: i64,
    },
}

/// Runs one action for `app` against `store`.
pub async fn run(
    store: &OutboxStore,
    config: &WebhooksConfig,
    app: &str,
    action: WebhooksAction,
) -> anyhow::Result<ExitCode> {
    let scope = Scope::App;
    let printed = |value: serde_json::Value| {
        println!("{value}");
        ExitCode::SUCCESS
    };
    let result: Result<ExitCode, ManageError> = async {
        Ok(match action {
            WebhooksAction::List { merchant } => {
                for endpoint in manage::list(store, app, &scope, merchant.as_deref()).await? {
                    println!("{}", serde_json::to_value(endpoint).unwrap_or_default());
                }
                ExitCode::SUCCESS
            }
            WebhooksAction::Create {
                url,
                merchant,
                events,
                description,
            } => {
                let request = NewEndpoint {
                    url,
                    merchant_id: merchant,
                    events: (!events.is_empty()).then_some(events),
                    description,
                };
                let view = manage::create(store, config, None, app, &scope, request).await?;
                eprintln!("Store the secret now: it is shown only once.");
                printed(serde_json::to_value(view).unwrap_or_default())
            }
            WebhooksAction::Show { id } => {
                let row = manage::get(store, app, &scope, &id).await?;
                printed(serde_json::to_value(manage::EndpointView::of(&row)).unwrap_or_default())
            }
            WebhooksAction::Update {
                id,
                url,
                events,
                all_events,
                enable,
                disable,
            } => {
                let patch = EndpointPatch {
                    url,
                    events: if all_events {
                        Some(None)
                    } else {
                        (!events.is_empty()).then_some(Some(events))
                    },
                    enabled: (enable || disable).then_some(enable),
                    description: None,
                };
                let view = manage::update(store, config, None, app, &scope, &id, patch).await?;
                printed(serde_json::to_value(view).unwrap_or_default())
            }
            WebhooksAction::Delete { id } => {
                manage::delete(store, None, app, &scope, &id).await?;
                eprintln!("Deleted {id}.");
                ExitCode::SUCCESS
            }
            WebhooksAction::RotateSecret { id } => {
                let view = manage::rotate_secret(store, config, None, app, &scope, &id).await?;
                eprintln!("Store the new secret now: it is shown only once.");
                printed(serde_json::to_value(view).unwrap_or_default())
            }
            WebhooksAction::Messages {
                id,
                status,
                limit,
                before,
            } => printed(
                manage::messages(
                    store,
                    app,
                    &scope,
                    &id,
                    status.as_deref(),
                    Some(limit),
                    before.as_deref(),
                )
                .await?,
            ),
            WebhooksAction::Retry { id, message_id } => {
                manage::retry(store, app, &scope, &id, &message_id).await?;
                eprintln!("{message_id} is pending again.");
                ExitCode::SUCCESS
            }
            WebhooksAction::Recover { id, since } => {
                let count = manage::recover(store, app, &scope, &id, since).await?;
                eprintln!("{count} failed messages are pending again.");
                ExitCode::SUCCESS
            }
        })
    }
    .await;
    match result {
        Ok(code) => Ok(code),
        Err(ManageError::Database(e)) => Err(e.into()),
        Err(e) => {
            eprintln!("payrelay: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
