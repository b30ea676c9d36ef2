//! `vigil intents submit|list|show|verify`.

use super::{print_json, Exit};
use anyhow::bail;
use std::path::PathBuf;
use vigil::app::App;
use vigil::clock::rfc3339_ms;
use vigil::intent::{inbox, Intent, IntentStatus, NewIntent};
use vigil::store::{IntentQuery, IntentStore};

#[derive(clap::Subcommand)]
pub enum IntentsCommand {
    /// Propose an intent through the inbox (works with or without a running daemon).
    Submit {
        /// Intent type, e.g. alert_gpu_oom.
        intent_type: String,
        /// 0-4 informational, 5-7 actionable, 8-10 critical.
        #[arg(long, short, value_parser = clap::value_parser!(u8).range(0..=10))]
        priority: u8,
        #[arg(long, short)]
        reason: String,
        /// A JSON object of extra data, e.g. '{"alloc_gib": 2.5}'.
        #[arg(long)]
        data: Option<String>,
        /// Same type and dedup key within an hour is one intent (default: a hash of data).
        #[arg(long)]
        dedup_key: Option<String>,
    },
    /// List intents, newest first.
    List {
        #[arg(long)]
        json: bool,
        /// Only this status: pending, running, done, denied, failed, restore_failed, expired, unmatched.
        #[arg(long)]
        status: Option<IntentStatus>,
        /// Only this intent type.
        #[arg(long = "type")]
        intent_type: Option<String>,
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
    },
    /// Show one intent as JSON.
    Show { id: i64 },
    /// Verify an intent file's checksum and fields: exit 0 when valid, 1 when not.
    Verify { file: PathBuf },
}

pub fn run(app: &App, cmd: IntentsCommand) -> Exit {
    match cmd {
        IntentsCommand::Submit {
            intent_type,
            priority,
            reason,
            data,
            dedup_key,
        } => {
            let data = match data {
                None => Default::default(),
                Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Object(m)) => m,
                    Ok(_) => bail!("--data must be a JSON object, like '{{\"alloc_gib\": 2.5}}'"),
                    Err(e) => bail!("--data is not valid JSON ({e}); write a JSON object, like '{{\"alloc_gib\": 2.5}}'"),
                },
            };
            let mut body = serde_json::json!({
                "intent_type": intent_type, "priority": priority, "reason": reason, "data": data,
            });
            if let Some(k) = dedup_key {
                body["dedup_key"] = k.into();
            }
            let body = body.as_object().expect("an object");
            let intent = NewIntent::from_body(body, "cli").map_err(|e| anyhow::anyhow!(e))?;
            let path = inbox::write(&app.inbox_dir(), &intent, app.clock.now_ms())?;
            println!("{}", path.display());
            Ok(0)
        }
        IntentsCommand::List {
            json,
            status,
            intent_type,
            limit,
        } => {
            let list = app.store()?.intents(&IntentQuery {
                status,
                intent_type,
                limit: Some(limit),
            })?;
            if json {
                return print_json(&list);
            }
            print_table(&list);
            Ok(0)
        }
        IntentsCommand::Show { id } => match app.store()?.intent(id)? {
            Some(i) => print_json(&i),
            None => bail!("no intent with id {id}; `vigil intents list` shows the ids"),
        },
        IntentsCommand::Verify { file } => {
            match inbox::read(&file, app.config.intents.max_file_size) {
                Ok(i) => {
                    println!(
                        "{}: valid ({} priority {})",
                        file.display(),
                        i.intent_type,
                        i.priority
                    );
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("{}: invalid: {e}", file.display());
                    Ok(1)
                }
            }
        }
    }
}

/// The listing; a HOST column when the intents are of more than one host (a fleet's store).
fn print_table(list: &[Intent]) {
    if list.is_empty() {
        println!("no intents");
        return;
    }
    let fleet = list.iter().any(|i| i.host != list[0].host);
    let host = |h: &str| {
        if fleet {
            format!("{h:<12} ")
        } else {
            String::new()
        }
    };
    println!(
        "{:>6}  {:<25} {}{:<32} {:>3}  {:<14} REASON",
        "ID",
        "CREATED",
        host("HOST"),
        "TYPE",
        "PRI",
        "STATUS"
    );
    for i in list {
        println!(
            "{:>6}  {:<25} {}{:<32} {:>3}  {:<14} {}",
            i.id,
            rfc3339_ms(i.created_at),
            host(&i.host),
            i.intent_type,
            i.priority,
            i.status.as_str(),
            i.reason
        );
    }
}
