//! Customer notifications: order confirmation, payment, shipment and refund messages,
//! rendered from templates into the engine's outbox and handed to a sender.
//!
//! Two tasks run on the primary:
//!
//! - **The renderer** follows the durable log from the position the outbox was last
//!   queued through ([`State::notifications_queued_through`]; on the first start, the
//!   log's end: nothing that happened before is announced). For each event-feed record
//!   `order.placed`, `order.paid`, `order.fulfilled` and `order.refunded` it renders the
//!   kind's template (the shop's, or the default) for the order's recipient — skipping
//!   a customer who turned the kind off — and queues the messages with the position
//!   they come from in one command ([`QueueNotifications`]). The engine applies each
//!   position once, so a restart, a repeat or a promoted standby queues nothing twice;
//!   it runs as the registered log consumer `notifications`, so the log is kept until
//!   it has been read.
//! - **The sender** takes the pending messages as they fall due and hands each to the
//!   [`Sender`] (a JSON-lines file by default, standard output, or SMTP), recording each
//!   attempt through the engine: sent, retried after a delay (exponential backoff with
//!   jitter, from `backoff_ms` up to an hour), or failed after `attempts_max` attempts
//!   or at once when the sender says the message can never go (a malformed address).
//!   A failed message stays in the outbox for staff to retry.
//!
//! Delivery is at least once: a message sent just before a crash, whose attempt was not
//! yet recorded, is sent again after the restart.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use emporium_engine::*;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior, Value};
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value as Json};
use tokio::sync::{watch, Notify};

use crate::wire::rfc3339;

/// The renderer's log consumer.
pub const CONSUMER: &str = "notifications";

/// The feed record types that make messages, with their kinds.
const KINDS: [(&str, NotificationKind); 4] = [
    ("order.placed", NotificationKind::OrderConfirmation),
    ("order.paid", NotificationKind::PaymentReceived),
    ("order.fulfilled", NotificationKind::OrderShipped),
    ("order.refunded", NotificationKind::RefundIssued),
];

/// Log entries read per pass.
const ENTRIES_PER_PASS: usize = 256;

/// Messages sent per batch of recorded attempts (a crash resends at most these).
const SENDS_PER_RECORD: usize = 16;

/// The longest wait between retries.
const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// Template instructions one rendering may run (a loop over a huge range stops there).
const TEMPLATE_FUEL: u64 = 200_000;

/// Where messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderKind {
    /// Appended to a file, one JSON object per line, synced before it counts as sent
    /// (none: `notifications.jsonl` in the data directory).
    File(Option<PathBuf>),
    /// Written to standard output, one JSON object per line.
    Stdout,
    /// Sent through an SMTP server: `smtp://[user:password@]host[:port]`, or `smtps://`
    /// (TLS), or `smtp://…?tls=required` (STARTTLS).
    Smtp(String),
    /// Nowhere: nothing is rendered or queued.
    Off,
}

/// How notifications are made and sent.
#[derive(Clone, Debug)]
pub struct NotificationSettings {
    /// Where they go.
    pub sender: SenderKind,
    /// The From address (`Name <address>` or `address`).
    pub from: String,
    /// The shop's name, as templates see it (`{{ shop.name }}`).
    pub shop_name: String,
    /// Attempts before a message is given up.
    pub attempts_max: u32,
    /// The first retry's delay (doubled per attempt, with jitter, up to an hour).
    pub backoff_ms: u64,
    /// The `file` sender's file at most, in bytes: past it the file is rotated
    /// (`.1` the newest of [`NOTIFICATION_FILES_KEPT`] older files).
    pub file_bytes_max: u64,
}

/// Older files the `file` sender keeps beside its file (`notifications.jsonl.1` to
/// `.4`); the oldest is removed at each rotation, so the sender's files hold at most
/// five times [`NotificationSettings::file_bytes_max`].
pub const NOTIFICATION_FILES_KEPT: usize = 4;

impl Default for NotificationSettings {
    fn default() -> NotificationSettings {
        NotificationSettings {
            sender: SenderKind::File(None),
            from: "Emporium <shop@localhost>".into(),
            shop_name: "Emporium".into(),
            attempts_max: 8,
            backoff_ms: 30_000,
            file_bytes_max: 64 << 20,
        }
    }
}

/// Why a message did not go.
#[derive(Debug)]
pub enum SendError {
    /// It may go later (a connection refused, a server busy, a disk full).
    Transient(String),
    /// It can never go as it is (a malformed address, a refused recipient).
    Permanent(String),
}

/// What [`Sender::send_all`] answers: one result for each message, in their order.
pub type SentAll<'a> = Pin<Box<dyn Future<Output = Vec<Result<(), SendError>>> + Send + 'a>>;

/// What hands a rendered message over: the file, standard output, SMTP, or one of an
/// embedding program's own.
pub trait Sender: Send + Sync + 'static {
    /// Sends `message` from `from`; done when the other side took it.
    fn send<'a>(
        &'a self,
        from: &'a str,
        message: &'a Notification,
    ) -> Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>>;

    /// Sends `messages` from `from`: one result for each, in their order. By default one
    /// [`Sender::send`] after another; a sender that takes several for the price of one
    /// (the file: one sync for all their lines) does so.
    fn send_all<'a>(&'a self, from: &'a str, messages: &'a [Arc<Notification>]) -> SentAll<'a> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(messages.len());
            for message in messages {
                results.push(self.send(from, message).await);
            }
            results
        })
    }
}

/// The JSON line a file or standard output receives.
fn json_line(from: &str, message: &Notification) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({
        "id": message.id.to_string(),
        "kind": message.kind.as_str(),
        "event_id": message.event_id,
        "order_id": message.order_id.map(|id| id.to_string()),
        "from": from,
        "to": message.to,
        "subject": message.subject,
        "body": message.body,
        "queued_at": rfc3339(message.created_at),
    }))
    .expect("a JSON value serializes");
    line.push(b'\n');
    line
}

/// Appends each message to a file, one JSON object per line, synced (once for the
/// messages sent together).
pub struct FileSender {
    file: Arc<OutFile>,
}

struct OutFile {
    path: PathBuf,
    bytes_max: u64,
    /// The open file and its length.
    file: Mutex<Option<(File, u64)>>,
    /// Syncs of the file made (for the tests: how many lines share one).
    syncs: std::sync::atomic::AtomicU64,
}

impl FileSender {
    /// A sender to `path` (created, with its directory, at the first message), rotated
    /// past `bytes_max` bytes.
    pub fn new(path: PathBuf, bytes_max: u64) -> FileSender {
        FileSender { file: Arc::new(OutFile::new(path, bytes_max)) }
    }

    /// Appends and syncs `lines` off the runtime's workers.
    async fn write(&self, lines: Vec<Vec<u8>>) -> std::io::Result<()> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.append(&lines))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    }
}

impl OutFile {
    fn new(path: PathBuf, bytes_max: u64) -> OutFile {
        OutFile { path, bytes_max, file: Mutex::new(None), syncs: Default::default() }
    }

    /// Appends `lines` and syncs them, once at the end (and before a rotation moves the
    /// file away). On an error some may be written: they are sent again with the rest.
    fn append(&self, lines: &[Vec<u8>]) -> std::io::Result<()> {
        let mut file = self.file.lock();
        let written = self.append_locked(&mut file, lines);
        if written.is_err() {
            // Opened again next time (the file may have been moved or its disk fixed).
            *file = None;
        }
        written
    }

    fn append_locked(
        &self,
        file: &mut Option<(File, u64)>,
        lines: &[Vec<u8>],
    ) -> std::io::Result<()> {
        let mut unsynced = false;
        for line in lines {
            if file.is_none() {
                if let Some(dir) = self.dir() {
                    std::fs::create_dir_all(dir)?;
                }
                let open = OpenOptions::new().create(true).append(true).open(&self.path)?;
                let len = open.metadata()?.len();
                if len == 0 {
                    // Perhaps just created: its name must outlast a crash with its lines.
                    self.sync_dir()?;
                }
                *file = Some((open, len));
            }
            let (open, len) = file.as_mut().expect("opened above");
            // A line never straddles two files: one longer than the limit has a file
            // alone.
            if *len > 0 && len.saturating_add(line.len() as u64) > self.bytes_max {
                if unsynced {
                    self.sync(open)?;
                }
                *file = Some((self.rotate()?, 0));
            }
            let (open, len) = file.as_mut().expect("opened above");
            open.write_all(line)?;
            *len += line.len() as u64;
            unsynced = true;
        }
        match file {
            Some((open, _)) if unsynced => self.sync(open),
            _ => Ok(()),
        }
    }

    fn sync(&self, file: &File) -> std::io::Result<()> {
        file.sync_data()?;
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn dir(&self) -> Option<&std::path::Path> {
        self.path.parent().filter(|d| !d.as_os_str().is_empty())
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        File::open(self.dir().unwrap_or(std::path::Path::new(".")))?.sync_all()
    }

    /// The file's `n`th older copy (`n` from 1, the newest).
    fn older(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        name.into()
    }

    /// Moves the file to `.1`, each older copy one further, removes the oldest and
    /// opens a new file; the directory is synced, so no rename or new name is lost in a
    /// crash that keeps the lines written after it.
    fn rotate(&self) -> std::io::Result<File> {
        match std::fs::remove_file(self.older(NOTIFICATION_FILES_KEPT)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..NOTIFICATION_FILES_KEPT).rev() {
            match std::fs::rename(self.older(n), self.older(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.older(1))?;
        let open = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.sync_dir()?;
        Ok(open)
    }
}

impl Sender for FileSender {
    fn send<'a>(
        &'a self,
        from: &'a str,
        message: &'a Notification,
    ) -> Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>> {
        Box::pin(async move {
            self.write(vec![json_line(from, message)])
                .await
                .map_err(|e| SendError::Transient(format!("{}: {e}", self.file.path.display())))
        })
    }

    fn send_all<'a>(&'a self, from: &'a str, messages: &'a [Arc<Notification>]) -> SentAll<'a> {
        Box::pin(async move {
            let written = self.write(messages.iter().map(|m| json_line(from, m)).collect()).await;
            let path = self.file.path.display();
            messages
                .iter()
                .map(|_| match &written {
                    Ok(()) => Ok(()),
                    Err(e) => Err(SendError::Transient(format!("{path}: {e}"))),
                })
                .collect()
        })
    }
}

/// Writes each message to standard output, one JSON object per line.
pub struct StdoutSender;

impl Sender for StdoutSender {
    fn send<'a>(
        &'a self,
        from: &'a str,
        message: &'a Notification,
    ) -> Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>> {
        Box::pin(async move {
            let line = json_line(from, message);
            let mut out = std::io::stdout().lock();
            out.write_all(&line)
                .and_then(|()| out.flush())
                .map_err(|e| SendError::Transient(format!("standard output: {e}")))
        })
    }
}

/// Sends each message through an SMTP server (`lettre`, pooled connections).
pub struct SmtpSender {
    /// Always there until dropped.
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    /// The runtime the pool's tasks run on: dropping the pool spawns its shutdown, which
    /// needs a runtime even when the last holder goes after it stopped.
    runtime: tokio::runtime::Handle,
}

impl SmtpSender {
    /// A sender through the server of `url` (inside a Tokio runtime); refused when the
    /// URL is not one.
    pub fn new(url: &str) -> Result<SmtpSender, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the SMTP sender starts inside a Tokio runtime".to_string())?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("smtp_url: {e}"))?
            .timeout(Some(Duration::from_secs(30)))
            .build();
        Ok(SmtpSender { transport: Some(transport), runtime })
    }

    /// Whether `url` names an SMTP server the sender can use.
    pub fn check_url(url: &str) -> Result<(), String> {
        AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map(drop)
            .map_err(|e| format!("smtp_url: {e}"))
    }
}

impl Drop for SmtpSender {
    fn drop(&mut self) {
        let _runtime = self.runtime.enter();
        drop(self.transport.take());
    }
}

impl Sender for SmtpSender {
    fn send<'a>(
        &'a self,
        from: &'a str,
        message: &'a Notification,
    ) -> Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>> {
        Box::pin(async move {
            let permanent = |what: &str, e: &dyn std::fmt::Display| {
                SendError::Permanent(format!("{what}: {e}"))
            };
            let from: Mailbox = from.parse().map_err(|e| permanent("the From address", &e))?;
            let to: Mailbox = message.to.parse().map_err(|e| permanent("the address", &e))?;
            let email = lettre::Message::builder()
                .from(from)
                .to(to)
                .subject(message.subject.clone())
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .body(message.body.clone())
                .map_err(|e| permanent("the message", &e))?;
            let transport = self.transport.as_ref().expect("there until dropped");
            match transport.send(email).await {
                Ok(_) => Ok(()),
                // A mailbox refused for good (550 unavailable, 551 not local, 553 name
                // not allowed). Other refusals — authentication, relaying, policy —
                // are the shop's to fix: retried until then.
                Err(e) if e.is_permanent() && mailbox_refused(&e) => {
                    Err(SendError::Permanent(e.to_string()))
                }
                Err(e) => Err(SendError::Transient(e.to_string())),
            }
        })
    }
}

fn mailbox_refused(error: &lettre::transport::smtp::Error) -> bool {
    error.status().is_some_and(|code| matches!(code.to_string().as_str(), "550" | "551" | "553"))
}

/// The sender the settings name (a file's default place in `data_dir`); `None` when
/// notifications are off.
pub fn sender(
    settings: &NotificationSettings,
    data_dir: &std::path::Path,
) -> Result<Option<Arc<dyn Sender>>, String> {
    Ok(match &settings.sender {
        SenderKind::File(path) => {
            let path = path.clone().unwrap_or_else(|| data_dir.join("notifications.jsonl"));
            Some(Arc::new(FileSender::new(path, settings.file_bytes_max)))
        }
        SenderKind::Stdout => Some(Arc::new(StdoutSender)),
        SenderKind::Smtp(url) => Some(Arc::new(SmtpSender::new(url)?)),
        SenderKind::Off => None,
    })
}

/// The default template of each kind: `(subject, body)`.
pub fn default_template(kind: NotificationKind) -> (&'static str, &'static str) {
    match kind {
        NotificationKind::OrderConfirmation => (
            "Your order {{ order.id }} at {{ shop.name }}",
            "Hello{% if customer.name %} {{ customer.name }}{% endif %},\n\n\
             thank you for your order {{ order.id }}.\n\n\
             {% for line in order.lines %}{{ line.quantity }} x {{ line.title }} ({{ line.sku }}): {{ line.total }}\n{% endfor %}\n\
             {% if order.discount_total_minor %}Discount: -{{ order.discount_total }}\n{% endif %}\
             Total: {{ order.total }}\n\n\
             {{ shop.name }}\n",
        ),
        NotificationKind::PaymentReceived => (
            "Payment received for order {{ order.id }}",
            "Hello{% if customer.name %} {{ customer.name }}{% endif %},\n\n\
             we received your payment of {{ payment.amount }} for order {{ order.id }}.\n\
             We will let you know when it ships.\n\n\
             {{ shop.name }}\n",
        ),
        NotificationKind::OrderShipped => (
            "Your order {{ order.id }} is on its way",
            "Hello{% if customer.name %} {{ customer.name }}{% endif %},\n\n\
             your order {{ order.id }} has shipped.\n\n\
             {% for line in order.lines %}{{ line.quantity }} x {{ line.title }}\n{% endfor %}\n\
             {{ shop.name }}\n",
        ),
        NotificationKind::RefundIssued => (
            "Refund of {{ refund.amount }} for order {{ order.id }}",
            "Hello{% if customer.name %} {{ customer.name }}{% endif %},\n\n\
             we refunded {{ refund.amount }} for order {{ order.id }}\
             {% if refund.reason %} ({{ refund.reason }}){% endif %}.\n\
             It reaches your account within a few days.\n\n\
             {{ shop.name }}\n",
        ),
    }
}

/// How many decimals a currency's minor unit has (ISO 4217).
fn exponent(currency: &str) -> u32 {
    const NONE: [&str; 16] = [
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV",
        "XAF", "XOF", "XPF",
    ];
    const THREE: [&str; 7] = ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    if NONE.contains(&currency) {
        0
    } else if THREE.contains(&currency) {
        3
    } else {
        2
    }
}

/// `amount` minor units of `currency` for people: `12.34 USD`, `-5.00 EUR`, `500 JPY`.
pub fn display_money(amount: i64, currency: &str) -> String {
    let exponent = exponent(currency);
    let sign = if amount < 0 { "-" } else { "" };
    let units = amount.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{units} {currency}");
    }
    let scale = 10u64.pow(exponent);
    format!(
        "{sign}{}.{:0width$} {currency}",
        units / scale,
        units % scale,
        width = exponent as usize
    )
}

fn money(m: Money) -> String {
    display_money(m.amount(), m.currency().as_str())
}

/// The data a template sees for one record about `order`.
pub fn template_context(
    shop_name: &str,
    order: &Order,
    customer: Option<&Customer>,
    record: &Json,
) -> Json {
    let currency = order.currency();
    let lines: Vec<Json> = order
        .lines
        .iter()
        .map(|l| {
            let total =
                Money::new(l.unit_price.amount().saturating_mul(i64::from(l.quantity)), currency)
                    .map(money)
                    .unwrap_or_default();
            json!({"sku": l.sku.as_str(), "title": l.title, "quantity": l.quantity,
                   "unit_price": money(l.unit_price), "total": total})
        })
        .collect();
    let amount = |data: &Json| {
        let minor = data["amount"]["amount"].as_i64().unwrap_or(0);
        display_money(minor, data["amount"]["currency"].as_str().unwrap_or(currency.as_str()))
    };
    let data = &record["data"];
    json!({
        "shop": {"name": shop_name},
        "customer": {"name": customer.map_or("", |c| c.name.as_str()),
                     "email": customer.map_or(order.email.as_str(), |c| c.email.as_str())},
        "order": {"id": order.id.to_string(), "status": order.status.as_str(),
                  "email": order.email, "lines": lines,
                  "subtotal": money(order.subtotal),
                  "discount_total": money(order.discount_total),
                  "discount_total_minor": order.discount_total.amount(),
                  "total": money(order.total), "currency": currency.as_str(),
                  "created_at": rfc3339(order.created_at)},
        "payment": {"amount": amount(data), "id": data["payment_id"]},
        "refund": {"amount": amount(data), "id": data["refund_id"], "reason": data["reason"]},
        "event": {"id": record["id"], "type": record["type"], "at": record["at"]},
    })
}

/// An environment for plain-text templates with bounded work.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env
}

/// Templates compiled once (the defaults and the shop's few), by their source.
static COMPILED: LazyLock<RwLock<Environment<'static>>> =
    LazyLock::new(|| RwLock::new(environment()));

/// The most templates kept compiled; past it they are compiled again as used.
const COMPILED_MAX: usize = 64;

/// Renders the template of `source` with `ctx`, compiling it on its first use.
fn render_source(source: &str, ctx: &Value) -> Result<String, minijinja::Error> {
    if let Ok(template) = COMPILED.read().get_template(source) {
        return template.render(ctx);
    }
    let mut env = COMPILED.write();
    if env.templates().count() >= COMPILED_MAX {
        env.clear_templates();
    }
    if env.get_template(source).is_err() {
        env.add_template_owned(source.to_string(), source.to_string())?;
    }
    let env = parking_lot::RwLockWriteGuard::downgrade(env);
    let rendered = env.get_template(source)?.render(ctx);
    rendered
}

/// Renders `(subject, body)` templates with `context`.
pub fn render(subject: &str, body: &str, context: &Json) -> Result<(String, String), String> {
    let ctx = Value::from(Serde(context));
    let subject = render_source(subject, &ctx).map_err(|e| format!("subject: {e:#}"))?;
    let body = render_source(body, &ctx).map_err(|e| format!("body: {e:#}"))?;
    // A subject is one line.
    let subject: String = subject
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(NOTIFICATION_SUBJECT_MAX)
        .collect();
    Ok((subject, cut_body(body)))
}

/// `body` within [`NOTIFICATION_BODY_MAX`] bytes: a longer one (an order of a hundred
/// lines) is cut at a character boundary and says so, rather than not sent.
fn cut_body(mut body: String) -> String {
    const MARK: &str = "\n[…]\n";
    if body.len() > NOTIFICATION_BODY_MAX {
        let mut end = NOTIFICATION_BODY_MAX - MARK.len();
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
        body.push_str(MARK);
    }
    body
}

/// Checks a shop's template: it parses and renders a sample order.
pub fn check_template(subject: &str, body: &str) -> Result<(), (&'static str, String)> {
    let env = environment();
    env.template_from_str(subject).map_err(|e| ("subject", format!("{e:#}")))?;
    env.template_from_str(body).map_err(|e| ("body", format!("{e:#}")))?;
    let context = sample_context();
    render(subject, body, &context).map(drop).map_err(|e| {
        let field = if e.starts_with("subject:") { "subject" } else { "body" };
        (field, e)
    })
}

/// A sample context (templates are checked against it).
fn sample_context() -> Json {
    json!({
        "shop": {"name": "Shop"},
        "customer": {"name": "Ada", "email": "ada@example.com"},
        "order": {"id": "ord_sample", "status": "paid", "email": "ada@example.com",
                  "lines": [{"sku": "SKU-1", "title": "Item", "quantity": 2,
                             "unit_price": "5.00 USD", "total": "10.00 USD"}],
                  "subtotal": "10.00 USD", "discount_total": "0.00 USD",
                  "discount_total_minor": 0, "total": "10.00 USD", "currency": "USD",
                  "created_at": "2026-01-01T00:00:00Z"},
        "payment": {"amount": "10.00 USD", "id": "pay_sample"},
        "refund": {"amount": "10.00 USD", "id": "ref_sample", "reason": "damaged"},
        "event": {"id": "evt_1_0", "type": "order.placed", "at": "2026-01-01T00:00:00Z"},
    })
}

/// The renderer and the sender of one server.
pub struct Notifier {
    engine: Engine,
    settings: NotificationSettings,
    sender: Option<Arc<dyn Sender>>,
    /// Woken when messages were queued.
    queued: Notify,
    stop: watch::Sender<bool>,
    /// The durable end at the start, on a primary.
    started_at: Option<Lsn>,
}

impl Notifier {
    /// Starts rendering and sending (on a primary; a standby starts when promoted).
    ///
    /// On the first start over a shop with a history, the outbox is marked as queued
    /// through the log's end before anything is served (and again by the renderer
    /// until the mark holds): what happened before notifications existed is not
    /// announced. A new shop's are, from its first entry.
    pub async fn start(
        engine: Engine,
        settings: NotificationSettings,
        sender: Option<Arc<dyn Sender>>,
    ) -> Arc<Notifier> {
        let (stop, _) = watch::channel(false);
        let primary = engine.role() == NodeRole::Primary;
        let started_at = primary.then(|| engine.durable_lsn());
        let queued = Notify::new();
        let notifier = Arc::new(Notifier { engine, settings, sender, queued, stop, started_at });
        let engine = &notifier.engine;
        let first = engine.state().notifications_queued_through() == Lsn(0);
        if notifier.sender.is_some() && first && engine.role() == NodeRole::Primary {
            let now = QueueNotifications { through: engine.durable_lsn(), notifications: vec![] };
            if let Err(error) = engine.send(now).await {
                tracing::warn!(%error, "notifications: cannot mark where they start");
            }
        }
        if notifier.sender.is_some() {
            tokio::spawn(notifier.clone().render_loop());
            tokio::spawn(notifier.clone().send_loop());
        } else {
            // Off: no position of the log is held for it.
            let _ = notifier.engine.unregister_consumer(CONSUMER);
        }
        notifier
    }

    /// Has the sender look at the outbox now (a message was made due).
    pub fn wake(&self) {
        self.queued.notify_one();
    }

    /// Stops both tasks (what was not sent goes after the restart).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps up to `pause`, or until stopped or `wake` fires; whether stopped.
    async fn pause(&self, pause: Duration, wake: Option<&Notify>) -> bool {
        let mut stopped = self.stop.subscribe();
        if *stopped.borrow() {
            return true;
        }
        let woken = async {
            match wake {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.changed() => {}
            _ = woken => {}
        }
        self.stopped()
    }

    /// Waits while this node is not the primary; false once stopped.
    async fn on_primary(&self) -> bool {
        loop {
            if self.stopped() {
                return false;
            }
            if self.engine.role() == NodeRole::Primary {
                return true;
            }
            if self.pause(Duration::from_millis(500), None).await {
                return false;
            }
        }
    }

    async fn render_loop(self: Arc<Notifier>) {
        let mut durable = self.engine.subscribe();
        let mut start = None;
        while self.on_primary().await {
            // A promoted standby begins where it is promoted.
            let start =
                *start.get_or_insert_with(|| self.started_at.unwrap_or(self.engine.durable_lsn()));
            match self.render_pass(start).await {
                Ok(true) => tokio::task::yield_now().await,
                Ok(false) => {
                    let mut stopped = self.stop.subscribe();
                    tokio::select! {
                        _ = durable.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = stopped.changed() => return,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "notifications: rendering paused");
                    if self.pause(Duration::from_secs(1), None).await {
                        return;
                    }
                }
            }
        }
    }

    /// Renders and queues the messages of the entries after the renderer's position;
    /// whether it found any entries.
    ///
    /// The position is the later of the outbox's `queued_through` and the consumer's:
    /// entries that make no message move the consumer only, so an idle shop writes
    /// nothing (the renderer's own `Queued` entries make no message either).
    ///
    /// `start` is the durable end when this node began rendering: with nothing queued
    /// yet, a shop that had a history then (or a promoted standby whose primary never
    /// rendered) starts there, and a new one (nothing durable yet) at its first entry.
    async fn render_pass(self: &Arc<Notifier>, start: Lsn) -> Result<bool, EngineError> {
        let state = self.engine.state();
        let queued_through = state.notifications_queued_through();
        let durable = self.engine.durable_lsn();
        if queued_through == Lsn(0) && start > Lsn(0) {
            // Retried until it holds (a strict-sync primary refuses writes until its
            // standbys connect).
            let mark = QueueNotifications { through: start, notifications: vec![] };
            self.engine.send(mark).await?;
            return Ok(true);
        }
        let known = self.engine.consumers().iter().any(|(name, _)| name == CONSUMER);
        let consumer = self.engine.register_consumer(CONSUMER)?;
        if !known && queued_through > Lsn(0) && queued_through.0 + 1 < self.engine.first_log_lsn().0
        {
            // Following again after a while off (or after being dropped for lagging):
            // the log let entries go since the outbox was queued, and what it still
            // holds is as stale. Go on from its end.
            tracing::warn!(
                from = queued_through.0 + 1,
                to = durable.0,
                "notifications: the log was trimmed past the renderer while it was off; it goes on from the log's end"
            );
            let skip = QueueNotifications { through: durable, notifications: vec![] };
            self.engine.send(skip).await?;
            consumer.advance(durable)?;
            return Ok(true);
        }
        if consumer.position() < queued_through {
            consumer.advance(queued_through)?;
        }
        let from = consumer.position().max(queued_through);
        if from >= durable {
            return Ok(false);
        }
        let engine = self.engine.clone();
        let read =
            tokio::task::spawn_blocking(move || engine.read_log(Lsn(from.0 + 1), ENTRIES_PER_PASS))
                .await
                .unwrap_or_else(|e| Err(EngineError::Unavailable(e.to_string())));
        let entries = match read {
            Ok(entries) => entries,
            Err(EngineError::LogTrimmed { first, .. }) => {
                // The log let the entries go (the consumer was dropped, or the sender
                // was off): what they held is too old to announce now.
                tracing::warn!(
                    from = from.0 + 1,
                    to = durable.0,
                    first = first.0,
                    "notifications: the log was trimmed past the renderer; it goes on from the log's end"
                );
                let _ = self.engine.unregister_consumer(CONSUMER);
                let skip = QueueNotifications { through: durable, notifications: vec![] };
                self.engine.send(skip).await?;
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        // Rendering is CPU work (up to the fuel limit per message): off the runtime.
        let me = self.clone();
        let rendered = tokio::task::spawn_blocking(move || me.render_entries(&entries))
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let Some((through, mut batch)) = rendered else {
            return Ok(false);
        };
        if batch.is_empty() && queued_through != Lsn(0) {
            consumer.advance(through)?;
            return Ok(true);
        }
        loop {
            let queued = batch.len();
            let command = QueueNotifications { through, notifications: batch.clone() };
            match self.engine.send(command).await {
                Ok(_) => {
                    let _ = consumer.advance(through);
                    if queued > 0 {
                        self.queued.notify_one();
                    }
                    return Ok(true);
                }
                // The outbox is full: the sender catches up first.
                Err(EngineError::Overloaded) => {
                    self.pause(Duration::from_millis(200), None).await;
                    return Ok(true);
                }
                // A message the outbox refuses cannot be made valid by waiting: it is
                // dropped, the others go.
                Err(EngineError::Validation(fields)) => {
                    let bad: Vec<usize> = fields
                        .iter()
                        .filter_map(|f| {
                            let index =
                                f.field.strip_prefix("notifications[")?.split(']').next()?;
                            index.parse().ok()
                        })
                        .collect();
                    tracing::error!(
                        ?fields,
                        through = through.0,
                        "notifications: messages refused by the outbox were dropped"
                    );
                    if bad.is_empty() || batch.is_empty() {
                        // Not about a message (it cannot be dropped): the pass is
                        // retried after the pause.
                        return Err(EngineError::Validation(fields));
                    } else {
                        batch = batch
                            .into_iter()
                            .enumerate()
                            .filter(|(i, _)| !bad.contains(i))
                            .map(|(_, m)| m)
                            .collect();
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The messages of `entries` (whole entries, up to a command's worth), and the
    /// last entry they cover; `None` when there were no entries.
    fn render_entries(&self, entries: &[LogEntry]) -> Option<(Lsn, Vec<NewNotification>)> {
        let state = self.engine.state();
        let types: Vec<&str> = KINDS.iter().map(|(t, _)| *t).collect();
        let mut batch = Vec::new();
        let mut through = None;
        for entry in entries {
            let (records, _) =
                crate::handlers::events::page(std::slice::from_ref(entry), &types, usize::MAX, 0);
            if batch.len() + records.len() > NOTIFICATIONS_PER_COMMAND_MAX && !batch.is_empty() {
                break;
            }
            for record in &records {
                if let Some(message) = self.message(state, record) {
                    batch.push(message);
                }
            }
            // One entry cannot make more (an entry holds a command's few events).
            batch.truncate(NOTIFICATIONS_PER_COMMAND_MAX);
            through = Some(entry.lsn);
        }
        through.map(|through| (through, batch))
    }

    /// The message a feed record makes, if any.
    fn message(&self, state: &State, record: &Json) -> Option<NewNotification> {
        let kind = KINDS.iter().find(|(t, _)| record["type"] == *t)?.1;
        let order_id = OrderId::parse(record["data"]["order_id"].as_str()?)?;
        let order = state.order(&order_id)?;
        let customer = order.customer_id.and_then(|id| state.customer(&id));
        if let Some(customer) = &customer {
            if !state.wants_notification(&customer.id, kind) {
                return None;
            }
        }
        let context =
            template_context(&self.settings.shop_name, &order, customer.as_deref(), record);
        let template = state.notification_template(kind);
        let (default_subject, default_body) = default_template(kind);
        let rendered = match &template {
            Some(t) => render(&t.subject, &t.body, &context).or_else(|error| {
                tracing::warn!(kind = kind.as_str(), %error, "notifications: the shop's template failed; the default is used");
                render(default_subject, default_body, &context)
            }),
            None => render(default_subject, default_body, &context),
        };
        let (subject, body) = match rendered {
            Ok(rendered) => rendered,
            Err(error) => {
                tracing::error!(kind = kind.as_str(), %error, "notifications: cannot render");
                return None;
            }
        };
        Some(NewNotification {
            kind,
            event_id: record["id"].as_str().unwrap_or_default().to_string(),
            order_id: Some(order.id),
            customer_id: customer.as_ref().map(|c| c.id),
            to: customer.map_or_else(|| order.email.clone(), |c| c.email.clone()),
            subject,
            body,
        })
    }

    async fn send_loop(self: Arc<Notifier>) {
        let sender = self.sender.clone().expect("started with a sender");
        while self.on_primary().await {
            let now = self.engine.now_ms();
            let state = self.engine.state();
            let due = state.notifications_due(now, SENDS_PER_RECORD);
            if due.is_empty() {
                let wait = state
                    .next_notification_due()
                    .map_or(1_000, |at| (at - now).clamp(1, 1_000) as u64);
                if self.pause(Duration::from_millis(wait), Some(&self.queued)).await {
                    return;
                }
                continue;
            }
            let mut results = sender.send_all(&self.settings.from, &due).await.into_iter();
            let mut attempts = Vec::with_capacity(due.len());
            for message in &due {
                let result = results.next().unwrap_or_else(|| {
                    Err(SendError::Transient("the sender gave no result for it".into()))
                });
                let outcome = match result {
                    Ok(()) => AttemptOutcome::Sent,
                    Err(SendError::Permanent(error)) => AttemptOutcome::Failed { error },
                    Err(SendError::Transient(error))
                        if message.attempts + 1 >= self.settings.attempts_max =>
                    {
                        AttemptOutcome::Failed { error }
                    }
                    Err(SendError::Transient(error)) => {
                        // From when it failed: a slow server must not eat the wait.
                        let delay = backoff(self.settings.backoff_ms, message.attempts);
                        let next_attempt_at = self.engine.now_ms() + delay as i64;
                        AttemptOutcome::Retry { error, next_attempt_at }
                    }
                };
                if !matches!(outcome, AttemptOutcome::Sent) {
                    tracing::warn!(notification = %message.id, ?outcome, "notifications: an attempt failed");
                }
                attempts.push(NotificationAttempt { notification_id: message.id, outcome });
            }
            // Recorded until it holds: a message sent and not recorded is sent again.
            loop {
                match self
                    .engine
                    .send(RecordNotificationAttempts { attempts: attempts.clone() })
                    .await
                {
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "notifications: cannot record attempts");
                        if self.pause(Duration::from_secs(1), None).await {
                            return;
                        }
                        if self.engine.role() != NodeRole::Primary {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// The delay before attempt `attempts + 1`: the base doubled per attempt made, capped at
/// an hour, the upper half of it random.
fn backoff(base_ms: u64, attempts: u32) -> u64 {
    crate::webhooks::jittered(Duration::from_millis(base_ms), attempts, BACKOFF_MAX).as_millis()
        as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_rotated_past_its_limit_and_keeps_four_older_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out").join("notifications.jsonl");
        let out = OutFile::new(path.clone(), 100);
        // 30 lines of 40 bytes: two to a file, so fifteen files were started.
        for n in 0..30 {
            out.append(&[format!("{n:039}\n").into_bytes()]).unwrap();
        }
        let lines = |p: &std::path::Path| -> Vec<u64> {
            std::fs::read_to_string(p).unwrap().lines().map(|l| l.parse().unwrap()).collect()
        };
        assert_eq!(lines(&path), [28, 29]);
        for n in 1..=NOTIFICATION_FILES_KEPT {
            let first = 28 - 2 * n as u64;
            assert_eq!(lines(&out.older(n)), [first, first + 1], "file .{n}");
        }
        assert!(!out.older(NOTIFICATION_FILES_KEPT + 1).exists());
        // A line longer than the limit has a file of its own; a restart counts what the
        // file already holds.
        let reopened = OutFile::new(path.clone(), 100);
        let long = format!("{}\n", "7".repeat(150));
        reopened.append(&[long.clone().into_bytes()]).unwrap();
        reopened.append(&[b"1\n".to_vec()]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        assert_eq!(std::fs::read_to_string(out.older(1)).unwrap(), long);
        assert_eq!(lines(&out.older(2)), [28, 29]);
    }

    /// Lines appended together share one sync, and a rotation among them syncs the
    /// file it moves away first: every line is synced once `append` returns.
    #[test]
    fn lines_appended_together_share_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifications.jsonl");
        let out = OutFile::new(path.clone(), 1 << 20);
        let syncs = || out.syncs.load(std::sync::atomic::Ordering::Relaxed);
        let lines = |from: u64, to: u64| -> Vec<Vec<u8>> {
            (from..to).map(|n| format!("{n:039}\n").into_bytes()).collect()
        };
        out.append(&lines(0, 16)).unwrap();
        assert_eq!(syncs(), 1);
        out.append(&lines(16, 17)).unwrap();
        assert_eq!(syncs(), 2);
        out.append(&[]).unwrap();
        assert_eq!(syncs(), 2, "nothing written, nothing synced");
        let read = |p: &std::path::Path| -> Vec<u64> {
            std::fs::read_to_string(p).unwrap().lines().map(|l| l.parse().unwrap()).collect()
        };
        assert_eq!(read(&path), (0..17).collect::<Vec<_>>());

        // Two lines to a file: six lines after one fill the first file and three more,
        // each synced once.
        let small = OutFile::new(dir.path().join("small.jsonl"), 100);
        small.append(&lines(0, 1)).unwrap();
        let before = small.syncs.load(std::sync::atomic::Ordering::Relaxed);
        small.append(&lines(1, 7)).unwrap();
        let made = small.syncs.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert_eq!(made, 4, "the three files moved away and the new one");
        assert_eq!(read(&small.path), [6]);
        assert_eq!(read(&small.older(1)), [4, 5]);
        assert_eq!(read(&small.older(3)), [0, 1]);
    }

    #[test]
    fn money_is_shown_with_the_currency_s_decimals() {
        assert_eq!(display_money(1234, "USD"), "12.34 USD");
        assert_eq!(display_money(5, "EUR"), "0.05 EUR");
        assert_eq!(display_money(-500, "USD"), "-5.00 USD");
        assert_eq!(display_money(500, "JPY"), "500 JPY");
        assert_eq!(display_money(1234, "KWD"), "1.234 KWD");
    }

    #[test]
    fn default_templates_render_the_sample() {
        for kind in NotificationKind::ALL {
            let (subject, body) = default_template(kind);
            check_template(subject, body).unwrap();
            let (subject, body) = render(subject, body, &sample_context()).unwrap();
            assert!(subject.contains("ord_sample"), "{subject}");
            assert!(body.contains("ord_sample") && body.contains("Shop"), "{body}");
        }
    }

    #[test]
    fn templates_are_bounded_and_checked() {
        assert_eq!(check_template("{{ order.id", "x").unwrap_err().0, "subject");
        assert_eq!(check_template("x", "{% for %}").unwrap_err().0, "body");
        let endless =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        assert!(check_template("x", endless).is_err(), "fuel stops a runaway template");
        let (subject, _) = render("a\n{{ shop.name }}\r\nb", "x", &sample_context()).unwrap();
        assert_eq!(subject, "a Shop b");
    }

    #[test]
    fn a_long_body_is_cut_not_refused() {
        let long = "é".repeat(NOTIFICATION_BODY_MAX);
        let cut = cut_body(long);
        assert!(cut.len() <= NOTIFICATION_BODY_MAX && cut.ends_with("[…]\n"), "{}", cut.len());
        assert_eq!(cut_body("short".into()), "short");
        let lines = "{% for i in range(2000) %}line {{ i }} of a long order\n{% endfor %}";
        let (_, body) = render("s", lines, &sample_context()).unwrap();
        assert!(body.len() <= NOTIFICATION_BODY_MAX);
        assert_eq!(check_template("{{ 1 // 0 }}", "x").unwrap_err().0, "subject");
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        for attempts in 0..40 {
            let full = (100u64 << attempts.min(30)).min(3_600_000);
            let delay = backoff(100, attempts);
            assert!((full / 2..=full).contains(&delay), "{attempts}: {delay}");
        }
    }
}
