//! Customer notifications: the outbox through the embedding API (queued once per log
//! position, attempts, limits, a restart), and over HTTP with the two senders a shop
//! uses — the JSON-lines file (templates, preferences, guests) and SMTP against a real
//! SMTP receiver on loopback that answers busy, refuses a recipient and recovers
//! (retries backed off, a permanent refusal failed at once, a retry by staff).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emporium_engine::*;
use emporium_server::notifications::{NotificationSettings, SenderKind};
use emporium_tests::*;
use serde_json::{json, Value};

use crate::http_support::*;

fn new_message(kind: NotificationKind, event: &str, to: &str) -> NewNotification {
    NewNotification {
        kind,
        event_id: event.into(),
        order_id: None,
        customer_id: None,
        to: to.into(),
        subject: format!("about {event}"),
        body: "body".into(),
    }
}

fn queue(te: &TestEngine, through: u64, messages: Vec<NewNotification>) -> Result<usize> {
    te.shop.send(QueueNotifications { through: Lsn(through), notifications: messages })
}

fn attempt(id: NotificationId, outcome: AttemptOutcome) -> NotificationAttempt {
    NotificationAttempt { notification_id: id, outcome }
}

#[test]
fn the_outbox_queues_each_log_position_once_and_records_attempts() {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "N-1", 100, 10);
    let lsn = te.engine.last_lsn().0;
    assert_eq!(te.state().notifications_queued_through(), Lsn(0));
    let first = vec![
        new_message(NotificationKind::OrderConfirmation, "evt_1_0", "a@example.com"),
        new_message(NotificationKind::PaymentReceived, "evt_2_0", "b@example.com"),
    ];
    assert_eq!(queue(&te, lsn, first.clone()).unwrap(), 2);
    assert_eq!(te.state().notifications_queued_through(), Lsn(lsn));
    // The same position again (a restart, a repeat, a promoted standby): nothing.
    assert_eq!(queue(&te, lsn, first).unwrap(), 0);
    assert_eq!(queue(&te, lsn - 1, vec![]).unwrap(), 0);
    assert_eq!(te.state().notification_count(NotificationStatus::Pending), 2);
    // Not beyond the log, and within the limits.
    let beyond = queue(&te, te.engine.last_lsn().0 + 5, vec![]).unwrap_err();
    assert_eq!(error_code(&beyond), "validation_failed: through");
    let bad = vec![new_message(NotificationKind::OrderShipped, "evt", "")];
    let here = te.engine.last_lsn().0;
    assert_eq!(
        error_code(&queue(&te, here, bad).unwrap_err()),
        "validation_failed: notifications[0].to"
    );

    let due = te.state().notifications_due(te.clock.now_ms(), 10);
    assert_eq!(due.len(), 2);
    let (a, b) = (due[0].id, due[1].id);
    assert_eq!(due[0].subject, "about evt_1_0", "oldest first");
    let later = te.clock.now_ms() + 60_000;
    let retry = AttemptOutcome::Retry { error: "451 busy".into(), next_attempt_at: later };
    let recorded = te
        .shop
        .send(RecordNotificationAttempts {
            attempts: vec![attempt(a, AttemptOutcome::Sent), attempt(b, retry)],
        })
        .unwrap();
    assert_eq!(recorded, 2);
    let state = te.state();
    assert_eq!(state.notification(&a).unwrap().status, NotificationStatus::Sent);
    let waiting = state.notification(&b).unwrap();
    assert_eq!((waiting.status, waiting.attempts), (NotificationStatus::Pending, 1));
    assert_eq!(waiting.last_error, "451 busy");
    assert!(state.notifications_due(te.clock.now_ms(), 10).is_empty(), "b waits for its time");
    assert_eq!(state.next_notification_due(), Some(later));
    // An attempt on a message no longer pending is ignored.
    let late = RecordNotificationAttempts {
        attempts: vec![attempt(a, AttemptOutcome::Failed { error: "x".into() })],
    };
    assert_eq!(te.shop.send(late).unwrap(), 0);
    assert_eq!(te.state().notification(&a).unwrap().status, NotificationStatus::Sent);

    let failed = RecordNotificationAttempts {
        attempts: vec![attempt(b, AttemptOutcome::Failed { error: "550 no such user".into() })],
    };
    te.shop.send(failed).unwrap();
    assert_eq!(te.state().notification(&b).unwrap().status, NotificationStatus::Failed);
    let sent = RetryNotification { notification_id: a.to_string() };
    assert_eq!(error_code(&te.shop.send(sent).unwrap_err()), "invalid_state");
    let retried = te.shop.send(RetryNotification { notification_id: b.to_string() }).unwrap();
    assert_eq!((retried.status, retried.attempts), (NotificationStatus::Pending, 0));
    assert_eq!(te.state().notifications_due(te.clock.now_ms(), 10).len(), 1);

    // Everything holds over a restart.
    let te = te.reopen();
    let state = te.state();
    assert_eq!(state.notifications_queued_through(), Lsn(lsn));
    assert_eq!(state.notification(&a).unwrap().status, NotificationStatus::Sent);
    assert_eq!(state.notification(&b).unwrap().status, NotificationStatus::Pending);
    assert_eq!(state.notification_count(NotificationStatus::Sent), 1);
    assert_eq!(state.notifications(NotificationStatus::Sent, None, 10)[0].id, a);
}

#[test]
fn the_outbox_keeps_the_latest_sent_messages_and_refuses_past_its_pending_limit() {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "N-2", 100, 10);
    let mut through = te.engine.last_lsn().0;
    let mut ids = Vec::new();
    let total = NOTIFICATIONS_KEPT + 30;
    while ids.len() < total {
        let n = (total - ids.len()).min(NOTIFICATIONS_PER_COMMAND_MAX);
        let batch = (0..n)
            .map(|i| new_message(NotificationKind::OrderShipped, &format!("e{i}"), "x@example.com"))
            .collect();
        queue(&te, through, batch).unwrap();
        let due = te.state().notifications_due(te.clock.now_ms(), usize::MAX);
        let sent: Vec<NotificationAttempt> =
            due.iter().map(|m| attempt(m.id, AttemptOutcome::Sent)).collect();
        ids.extend(sent.iter().map(|a| a.notification_id));
        te.shop.send(RecordNotificationAttempts { attempts: sent }).unwrap();
        through = te.engine.last_lsn().0;
        // Each command moves the log: the next batch comes from a later position.
    }
    let state = te.state();
    assert_eq!(state.notification_count(NotificationStatus::Sent), NOTIFICATIONS_KEPT);
    assert!(state.notification(&ids[29]).is_none(), "the oldest sent ones go");
    assert!(state.notification(&ids[30]).is_some());
    let newest: Vec<NotificationId> =
        state.notifications(NotificationStatus::Sent, None, 3).iter().map(|m| m.id).collect();
    assert_eq!(newest, ids[total - 3..].iter().rev().copied().collect::<Vec<_>>());

    // Pending messages are bounded: past the limit, queueing is refused as overload.
    let mut pending = 0;
    loop {
        let through = te.engine.last_lsn().0;
        let batch: Vec<NewNotification> = (0..NOTIFICATIONS_PER_COMMAND_MAX)
            .map(|i| new_message(NotificationKind::OrderShipped, &format!("p{i}"), "x@example.com"))
            .collect();
        match queue(&te, through, batch) {
            Ok(n) => pending += n,
            Err(e) => {
                assert!(matches!(e, EngineError::Overloaded), "{e:?}");
                break;
            }
        }
        // Something else moves the log, so the next command is a new position.
        stocked_sku(&te.shop, &format!("P-{pending}"), 100, 1);
    }
    assert!(pending <= NOTIFICATIONS_PENDING_MAX);
    assert!(pending + NOTIFICATIONS_PER_COMMAND_MAX > NOTIFICATIONS_PENDING_MAX);
}

#[test]
fn preferences_belong_to_known_customers() {
    let te = TestEngine::new();
    let unknown =
        SetNotificationPreferences { customer_id: CustomerId::from_seq(99), changes: vec![] };
    assert_eq!(error_code(&te.shop.send(unknown).unwrap_err()), "not_found: customer");
    let ada = te
        .shop
        .send(RegisterCustomer {
            email: "ada@example.com".into(),
            name: "Ada".into(),
            role: Role::Customer,
            credential: "hash".into(),
        })
        .unwrap()
        .id;
    assert!(te.state().wants_notification(&ada, NotificationKind::PaymentReceived));
    let changes = vec![
        (NotificationKind::PaymentReceived, false),
        (NotificationKind::OrderShipped, false),
        (NotificationKind::PaymentReceived, false),
    ];
    let prefs = te.shop.send(SetNotificationPreferences { customer_id: ada, changes }).unwrap();
    assert_eq!(prefs.muted, [NotificationKind::OrderShipped, NotificationKind::PaymentReceived]);
    // A later change names one kind: the other stays muted.
    let changes = vec![(NotificationKind::OrderShipped, true)];
    let prefs = te.shop.send(SetNotificationPreferences { customer_id: ada, changes }).unwrap();
    assert_eq!(prefs.muted, [NotificationKind::PaymentReceived]);
    let te = te.reopen();
    assert!(!te.state().wants_notification(&ada, NotificationKind::PaymentReceived));
    assert!(te.state().wants_notification(&ada, NotificationKind::OrderShipped));
}

/// Polls `done` until it holds, for up to 20 s.
fn wait_for(what: &str, done: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(20), done)
}

/// The messages the file sender wrote.
fn file_messages(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect()
}

fn of_order<'a>(messages: &'a [Value], order: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["order_id"] == order).collect()
}

#[test]
fn orders_send_messages_rendered_from_templates_to_those_who_want_them() {
    let s = TestServer::with(|c| {
        c.notifications.sender = SenderKind::File(None);
        c.notifications.shop_name = "Test Shop".into();
    });
    let file = s.config().data_dir.join("notifications.jsonl");
    let admin = s.admin();
    s.product(&admin, "NTF-1", 1250, 100);
    let ada = s.register("ada@example.com");

    // One order through its life: placed, paid, shipped, refunded.
    let order = s.order(Some(&ada.token), "NTF-1", 2);
    let id = text(&order, "id").to_string();
    s.pay(Some(&ada.token), &id, "pay-1", "tok_visa").expect(201);
    s.post(&format!("/v1/orders/{id}/fulfillments")).bearer(&admin).send().expect(200);
    let refund = json!({"amount": {"amount": 500, "currency": "USD"}, "reason": "a dented box"});
    s.post(&format!("/v1/orders/{id}/refunds"))
        .bearer(&admin)
        .key("r-1")
        .json(refund)
        .send()
        .expect(201);
    wait_for("four messages", || of_order(&file_messages(&file), &id).len() == 4);
    let messages = file_messages(&file);
    let mine = of_order(&messages, &id);
    let kinds: Vec<&str> = mine.iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["order_confirmation", "payment_received", "order_shipped", "refund_issued"]);
    for m in &mine {
        assert_eq!(m["to"], "ada@example.com");
        assert_eq!(m["from"], "Emporium <shop@localhost>");
        assert!(m["body"].as_str().unwrap().contains("Test Shop"), "{m}");
    }
    assert_eq!(mine[0]["subject"], format!("Your order {id} at Test Shop"));
    let confirmation = mine[0]["body"].as_str().unwrap();
    assert!(confirmation.contains("Hello Test Customer,"), "{confirmation}");
    assert!(
        confirmation.contains("2 x ") && confirmation.contains("(NTF-1): 25.00 USD"),
        "{confirmation}"
    );
    assert!(confirmation.contains("Total: 25.00 USD"), "{confirmation}");
    assert!(mine[1]["body"].as_str().unwrap().contains("payment of 25.00 USD"));
    assert_eq!(mine[3]["subject"], format!("Refund of 5.00 USD for order {id}"));
    assert!(mine[3]["body"].as_str().unwrap().contains("(a dented box)"));
    // Each message names the feed record it came from.
    let feed = s.get("/v1/events?types=order.paid").bearer(&admin).send().expect(200);
    let paid =
        feed["data"].as_array().unwrap().iter().find(|r| r["data"]["order_id"] == id.as_str());
    assert_eq!(mine[1]["event_id"], paid.expect("the paid record")["id"]);

    // Ada turns payment messages off.
    let prefs = "/v1/customers/me/notification-preferences";
    let before = s.get(prefs).bearer(&ada.token).send().expect(200);
    assert_eq!(before["payment_received"], true);
    assert_eq!(before["updated_at"], Value::Null);
    s.patch(prefs)
        .bearer(&ada.token)
        .json(json!({"colour": "red"}))
        .send()
        .problem(422, "validation_failed");
    let not_bool = s.patch(prefs).bearer(&ada.token).json(json!({"payment_received": "no"}));
    assert_eq!(not_bool.send().invalid_fields(), ["payment_received"]);
    let not_object = s.patch(prefs).bearer(&ada.token).json(json!([true]));
    assert_eq!(not_object.send().status, 422);
    let after = s
        .patch(prefs)
        .bearer(&ada.token)
        .json(json!({"payment_received": false}))
        .send()
        .expect(200);
    assert_eq!(
        (after["payment_received"].clone(), after["order_confirmation"].clone()),
        (json!(false), json!(true))
    );
    s.get(prefs).send().problem(401, "unauthenticated");
    let second = s.order(Some(&ada.token), "NTF-1", 1);
    let second_id = text(&second, "id").to_string();
    s.pay(Some(&ada.token), &second_id, "pay-2", "tok_visa").expect(201);
    // A guest's order goes to the order's address; it comes after Ada's payment in the
    // log, so once it is sent, a message of that payment would have been too.
    let guest = s.order(None, "NTF-1", 1);
    let guest_id = text(&guest, "id").to_string();
    wait_for("the guest's confirmation", || of_order(&file_messages(&file), &guest_id).len() == 1);
    let messages = file_messages(&file);
    assert_eq!(of_order(&messages, &guest_id)[0]["to"], "guest@example.com");
    let second_kinds: Vec<&Value> =
        of_order(&messages, &second_id).iter().map(|m| &m["kind"]).collect();
    assert_eq!(second_kinds, [&json!("order_confirmation")], "no payment message for Ada");

    // The shop's own template, checked before it is taken.
    let path = "/v1/admin/notification-templates/order_confirmation";
    let put = |subject: &str, body: &str| {
        s.put(path).bearer(&admin).json(json!({"subject": subject, "body": body})).send()
    };
    assert_eq!(put("{{ order.id", "x").invalid_fields(), ["subject"]);
    let runaway =
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    assert_eq!(put("ok", runaway).invalid_fields(), ["body"]);
    s.put("/v1/admin/notification-templates/postcard")
        .bearer(&admin)
        .json(json!({"subject": "a", "body": "b"}))
        .send()
        .problem(404, "not_found");
    let saved = put(
        "Thanks, {{ customer.name }}: {{ order.total }}",
        "Order {{ order.id }} at {{ shop.name }}.",
    )
    .expect(200);
    assert_eq!(saved["custom"], true);
    let list = s.get("/v1/admin/notification-templates").bearer(&admin).send().expect(200);
    let custom: Vec<&Value> =
        list["data"].as_array().unwrap().iter().map(|t| &t["custom"]).collect();
    assert_eq!(custom, [&json!(true), &json!(false), &json!(false), &json!(false)]);
    let third = s.order(Some(&ada.token), "NTF-1", 1);
    let third_id = text(&third, "id").to_string();
    wait_for("the custom confirmation", || of_order(&file_messages(&file), &third_id).len() == 1);
    let message = of_order(&file_messages(&file), &third_id)[0].clone();
    assert_eq!(message["subject"], "Thanks, Test Customer: 12.50 USD");
    assert_eq!(message["body"], format!("Order {third_id} at Test Shop."));
    s.delete(path).bearer(&admin).send().expect(204);
    let list = s.get("/v1/admin/notification-templates").bearer(&admin).send().expect(200);
    assert_eq!(list["data"][0]["custom"], false);

    // The outbox: everything sent, listed newest first; a sent message is not retried.
    let sent_count = |s: &TestServer| {
        let page = s.get("/v1/admin/notifications?status=sent").bearer(&admin).send().expect(200);
        page["total"].as_u64()
    };
    wait_for("the last attempt recorded", || sent_count(&s) == Some(7));
    let outbox =
        s.get("/v1/admin/notifications?status=sent&limit=2").bearer(&admin).send().expect(200);
    assert_eq!(outbox["total"], 7);
    assert_eq!(outbox["data"][0]["order_id"], third_id.as_str());
    let cursor = outbox["next_cursor"].as_str().expect("more pages").to_string();
    let rest = s
        .get(&format!("/v1/admin/notifications?status=sent&limit=100&cursor={cursor}"))
        .bearer(&admin)
        .send()
        .expect(200);
    assert_eq!(rest["data"].as_array().unwrap().len(), 5);
    assert_eq!(rest["next_cursor"], Value::Null);
    let pending = s.get("/v1/admin/notifications").bearer(&admin).send().expect(200);
    assert_eq!(pending["total"], 0);
    let one = outbox["data"][0]["id"].as_str().unwrap();
    let got = s.get(&format!("/v1/admin/notifications/{one}")).bearer(&admin).send().expect(200);
    assert_eq!((got["status"].clone(), got["attempts"].clone()), (json!("sent"), json!(1)));
    s.post(&format!("/v1/admin/notifications/{one}/retry"))
        .bearer(&admin)
        .send()
        .problem(409, "invalid_state");
    s.get("/v1/admin/notifications?status=lost")
        .bearer(&admin)
        .send()
        .problem(400, "malformed_request");
    s.get("/v1/admin/notifications").bearer(&ada.token).send().problem(403, "forbidden");

    // A restart queues nothing again, and goes on with what follows.
    let mut s = s;
    s.restart();
    let ada_token = s.password_grant("ada@example.com", PASSWORD).expect(200)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let fourth = s.order(Some(&ada_token), "NTF-1", 1);
    let fourth_id = text(&fourth, "id").to_string();
    wait_for("a message after the restart", || {
        of_order(&file_messages(&file), &fourth_id).len() == 1
    });
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for m in file_messages(&file) {
        *per_event.entry(m["event_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_event.len(), 8);
    assert!(per_event.values().all(|n| *n == 1), "{per_event:?}");
    // Once everything is sent, an idle shop writes nothing: entries that make no
    // message (the outbox's own among them) move the renderer, not the log.
    wait_for("the last attempt recorded", || {
        let page = s.get("/v1/admin/notifications").bearer(&admin).send().expect(200);
        page["total"] == 0
    });
    // Its entry is applied before it is durable: wait for the sync, not for a time.
    let engine = &s.app().engine;
    wait_for("the last entry durable", || s.durable_lsn() == engine.last_lsn().0);
    let idle = s.durable_lsn();
    // What is asserted is an absence: nothing written over a second and a half.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.durable_lsn(), idle, "an idle shop's log stays still");
}

/// How the SMTP receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Smtp {
    Take,
    /// 451 to MAIL FROM: try again later.
    Busy,
}

/// A received message, or a refused attempt.
#[derive(Clone, Debug)]
struct Mail {
    to: String,
    data: String,
}

/// An SMTP server on loopback: one thread per connection; `reject` recipients are
/// refused for good (550).
struct SmtpReceiver {
    port: u16,
    mode: Arc<Mutex<Smtp>>,
    mails: Arc<Mutex<Vec<Mail>>>,
    /// Recipients refused.
    refused: Arc<Mutex<usize>>,
    /// When each MAIL FROM came, with the answer's code.
    attempts: Arc<Mutex<Vec<(Instant, u16)>>>,
}

impl SmtpReceiver {
    fn start(mode: Smtp) -> SmtpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = SmtpReceiver {
            port,
            mode: Arc::new(Mutex::new(mode)),
            mails: Arc::default(),
            refused: Arc::default(),
            attempts: Arc::default(),
        };
        let (mode, mails, attempts) =
            (receiver.mode.clone(), receiver.mails.clone(), receiver.attempts.clone());
        let refused = receiver.refused.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (mode, mails, attempts) = (mode.clone(), mails.clone(), attempts.clone());
                let refused = refused.clone();
                std::thread::spawn(move || {
                    let mut out = stream.try_clone().unwrap();
                    let mut lines = BufReader::new(stream);
                    let mut reply = |text: &str| out.write_all(format!("{text}\r\n").as_bytes());
                    if reply("220 test ESMTP").is_err() {
                        return;
                    }
                    let mut to = String::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let command = line.trim_end().to_ascii_uppercase();
                        let answer = if command.starts_with("EHLO") || command.starts_with("HELO") {
                            "250 test".to_string()
                        } else if command.starts_with("MAIL FROM") {
                            let busy = *mode.lock().unwrap() == Smtp::Busy;
                            let code = if busy { 451 } else { 250 };
                            attempts.lock().unwrap().push((Instant::now(), code));
                            if busy { "451 4.3.2 try again later" } else { "250 OK" }.to_string()
                        } else if command.starts_with("RCPT TO") {
                            to = line.trim_end()[8..].trim().trim_matches(['<', '>']).to_string();
                            if to.starts_with("reject") {
                                *refused.lock().unwrap() += 1;
                                "550 5.1.1 no such user"
                            } else {
                                "250 OK"
                            }
                            .to_string()
                        } else if command == "DATA" {
                            if reply("354 go on").is_err() {
                                return;
                            }
                            let mut data = String::new();
                            loop {
                                line.clear();
                                if lines.read_line(&mut line).unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                                data.push_str(&line);
                            }
                            mails.lock().unwrap().push(Mail { to: to.clone(), data });
                            "250 queued".to_string()
                        } else if command == "QUIT" {
                            let _ = reply("221 bye");
                            return;
                        } else {
                            "250 OK".to_string()
                        };
                        if reply(&answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        receiver
    }

    fn set(&self, mode: Smtp) {
        *self.mode.lock().unwrap() = mode;
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

fn outbox_message(s: &TestServer, admin: &str, order: &str) -> Option<Value> {
    ["pending", "sent", "failed"].iter().find_map(|status| {
        let page = s
            .get(&format!("/v1/admin/notifications?status={status}&limit=100"))
            .bearer(admin)
            .send()
            .expect(200);
        page["data"].as_array().unwrap().iter().find(|m| m["order_id"] == order).cloned()
    })
}

#[test]
fn smtp_deliveries_back_off_while_the_server_is_busy_and_fail_for_good_on_a_refusal() {
    let smtp = SmtpReceiver::start(Smtp::Busy);
    let s = TestServer::with(|c| {
        c.notifications = NotificationSettings {
            sender: SenderKind::Smtp(format!("smtp://127.0.0.1:{}", smtp.port)),
            from: "Test Shop <shop@example.com>".into(),
            shop_name: "Test Shop".into(),
            attempts_max: 10,
            backoff_ms: 100,
            ..NotificationSettings::default()
        };
    });
    let admin = s.admin();
    s.product(&admin, "SMTP-1", 990, 100);
    let ada = s.register("ada@example.com");
    let order = s.order(Some(&ada.token), "SMTP-1", 1);
    let id = text(&order, "id").to_string();

    // Busy: the attempts are recorded with their error, further and further apart.
    wait_for("three refused attempts", || smtp.attempts.lock().unwrap().len() >= 3);
    let message = outbox_message(&s, &admin, &id).expect("the confirmation is in the outbox");
    assert_eq!(message["status"], "pending");
    assert!(message["last_error"].as_str().unwrap().contains("try again later"), "{message}");
    let times: Vec<Instant> = smtp.attempts.lock().unwrap().iter().map(|(t, _)| *t).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // 100 ms doubled per attempt, the upper half of it random: at least 50, then 100 ms.
    // (The wait counts from the failure; a few ms of slack for the connection.)
    assert!(gaps[0] >= Duration::from_millis(45), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(90), "{gaps:?}");
    assert!(smtp.mails().is_empty());

    // The server recovers: the message goes, once.
    smtp.set(Smtp::Take);
    wait_for("the confirmation", || !smtp.mails().is_empty());
    wait_for("the outbox to record it", || {
        outbox_message(&s, &admin, &id).is_some_and(|m| m["status"] == "sent")
    });
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, "ada@example.com");
    assert!(
        mails[0].data.contains(&format!("Subject: Your order {id} at Test Shop")),
        "{}",
        mails[0].data
    );
    assert!(
        mails[0].data.contains("From: \"Test Shop\" <shop@example.com>")
            || mails[0].data.contains("From: Test Shop <shop@example.com>"),
        "{}",
        mails[0].data
    );

    // A recipient the server refuses for good: failed at the first attempt.
    let cart = s.cart(None);
    s.add(None, &cart, "SMTP-1", 1).expect(200);
    let refused =
        s.checkout(None, &cart, "refused", json!({"email": "reject@example.com"})).expect(201);
    let refused_id = text(&refused, "id").to_string();
    wait_for("the refusal", || {
        outbox_message(&s, &admin, &refused_id).is_some_and(|m| m["status"] == "failed")
    });
    let failed = outbox_message(&s, &admin, &refused_id).unwrap();
    assert_eq!(failed["attempts"], 1);
    assert!(failed["last_error"].as_str().unwrap().contains("no such user"), "{failed}");
    let listed = s.get("/v1/admin/notifications?status=failed").bearer(&admin).send().expect(200);
    assert_eq!(listed["total"], 1);
    // Staff retry it: pending again, refused again.
    assert_eq!(*smtp.refused.lock().unwrap(), 1);
    let retry = format!("/v1/admin/notifications/{}/retry", failed["id"].as_str().unwrap());
    let retried = s.post(&retry).bearer(&admin).send().expect(200);
    assert_eq!(
        (retried["status"].clone(), retried["attempts"].clone()),
        (json!("pending"), json!(0))
    );
    wait_for("the second refusal", || {
        *smtp.refused.lock().unwrap() == 2
            && outbox_message(&s, &admin, &refused_id).is_some_and(|m| m["status"] == "failed")
    });
    assert_eq!(smtp.mails().len(), 1, "nothing reached a refused recipient");
}

#[test]
fn a_sigkill_loses_no_queued_message() {
    let smtp = SmtpReceiver::start(Smtp::Busy);
    let work = tempfile::tempdir().unwrap();
    let (data, search) = (work.path().join("data"), work.path().join("search"));
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    let env = [
        ("EMPORIUM_SMTP_URL", url.as_str()),
        ("EMPORIUM_NOTIFICATION_BACKOFF_MS", "20"),
        // Busy for as long as the test takes: no message may be given up meanwhile.
        ("EMPORIUM_NOTIFICATION_ATTEMPTS_MAX", "50"),
    ];
    let mut server = crate::power_loss::ServerChild::start_with(&data, &search, &env);
    let s = TestServer::remote(&server.url);
    let admin = s.admin();
    s.product(&admin, "KILL-1", 500, 1000);
    // Orders while the mail server is busy: their messages wait in the outbox, and
    // the process dies without a warning.
    let mut orders = Vec::new();
    for round in 0..2 {
        let s = TestServer::remote(&server.url);
        for _ in 0..10 {
            orders.push(text(&s.order(None, "KILL-1", 1), "id").to_string());
        }
        let queued = |s: &TestServer| {
            let page = s.get("/v1/admin/notifications?limit=100").bearer(&admin).send().expect(200);
            page["total"].as_u64() == Some(orders.len() as u64)
        };
        wait_for("the round's messages in the outbox", || queued(&s));
        server.kill();
        if round == 1 {
            smtp.set(Smtp::Take);
        }
        server = crate::power_loss::ServerChild::start_with(&data, &search, &env);
    }
    let received = || {
        let mails = smtp.mails();
        orders.iter().all(|id| mails.iter().any(|m| m.data.contains(id.as_str())))
    };
    // A retry backed off while the server was busy (doubling from 20 ms) may be due
    // some seconds after it recovered.
    wait_until("every order's confirmation after the kills", Duration::from_secs(60), received);
    let mails = smtp.mails();
    assert!(mails.iter().all(|m| m.to == "guest@example.com"));
    drop(server);
}

#[test]
fn switched_on_over_a_history_notifications_announce_only_what_follows() {
    let mut s = TestServer::start();
    let admin = s.admin();
    s.product(&admin, "HIST-1", 700, 100);
    let old = text(&s.order(None, "HIST-1", 1), "id").to_string();
    s.stop();
    s.config_mut().notifications.sender = SenderKind::File(None);
    s.start_again();
    let file = s.config().data_dir.join("notifications.jsonl");
    let new = text(&s.order(None, "HIST-1", 1), "id").to_string();
    wait_for("the new order's confirmation", || of_order(&file_messages(&file), &new).len() == 1);
    assert!(of_order(&file_messages(&file), &old).is_empty(), "the old order is not announced");
    // The old order's payment is news: it is announced.
    s.pay(None, &old, "pay-old", "tok_visa").expect(201);
    wait_for("the old order's payment", || of_order(&file_messages(&file), &old).len() == 1);
    assert_eq!(of_order(&file_messages(&file), &old)[0]["kind"], "payment_received");
}

#[test]
fn the_outbox_lists_messages_in_the_order_they_reached_their_status() {
    let te = TestEngine::new();
    stocked_sku(&te.shop, "N-3", 100, 10);
    let through = te.engine.last_lsn().0;
    let batch = ["first", "second", "third"]
        .iter()
        .map(|e| new_message(NotificationKind::OrderShipped, e, "x@example.com"))
        .collect();
    queue(&te, through, batch).unwrap();
    let due = te.state().notifications_due(te.clock.now_ms(), 10);
    let (first, second, third) = (due[0].id, due[1].id, due[2].id);
    // Sent in the reverse order of their queueing, one command each.
    for id in [third, second, first] {
        let sent = vec![attempt(id, AttemptOutcome::Sent)];
        te.shop.send(RecordNotificationAttempts { attempts: sent }).unwrap();
    }
    let order = |te: &TestEngine| -> Vec<NotificationId> {
        te.state().notifications(NotificationStatus::Sent, None, 10).iter().map(|m| m.id).collect()
    };
    assert_eq!(order(&te), [first, second, third], "the last sent first");
    let page = te.state().notifications(NotificationStatus::Sent, None, 1);
    let rest = te.state().notifications(NotificationStatus::Sent, Some(page[0].status_seq), 10);
    assert_eq!(rest.iter().map(|m| m.id).collect::<Vec<_>>(), [second, third]);
    let te = te.reopen();
    assert_eq!(order(&te), [first, second, third], "the same after a restart");
}
