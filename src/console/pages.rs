//! The console's handlers: each reads with the ledger's queries or acts
//! through the gateway's operator actions, then renders a template.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::{self, User};
use super::view::{age, amount, chart};
use super::{ConsoleError, ConsoleState};
use crate::channels::sftp_server::limits::NotChecked;
use crate::config::{Console, Role};
use crate::day::Status;
use crate::intake::{Carried, Gateway};
use crate::ledger::{FileRow, NewSession};

/// Shown where a difference of amounts is beyond what a decimal holds.
const OUT_OF_RANGE: &str = "beyond range";
use crate::model::{FileState, OverrideAction, Verdict};

/// Rows per page of a list.
const PAGE: i64 = 50;
/// Business days in the chart.
const CHART_DAYS: usize = 30;

type Page = Result<Response, ConsoleError>;

impl ConsoleState {
    fn gw(&self) -> Arc<Gateway> {
        self.current.borrow().clone()
    }

    fn render(&self, name: &str, user: Option<&User>, mut ctx: Value) -> Page {
        if let Some(u) = user {
            ctx["user"] = json!({
                "login": u.login,
                "role": u.role.as_str(),
                "csrf": u.csrf,
                "can_act": u.role == Role::Operator,
            });
        }
        let html = self.templates.get_template(name)?.render(&ctx)?;
        Ok(Html(html).into_response())
    }
}

fn console(gw: &Gateway) -> Result<&Console, ConsoleError> {
    gw.config.console.as_ref().ok_or(ConsoleError::Off)
}

/// The logged-in user, or `None` (no cookie, unknown or idle session, or a
/// login the configuration no longer has).
async fn user(gw: &Gateway, headers: &HeaderMap) -> Result<Option<User>, ConsoleError> {
    let c = console(gw)?;
    let Some(token) = session::session_token(headers) else {
        return Ok(None);
    };
    let hash = session::token_hash(&token);
    let now = gw.clock.now();
    let idle = chrono::Duration::from_std(c.idle).unwrap_or(chrono::Duration::minutes(30));
    let Some(s) = gw.ledger.touch_session(&hash, now - idle, now).await? else {
        return Ok(None);
    };
    let Some(op) = c.operator(&s.login) else {
        gw.ledger.end_session(&hash).await?;
        return Ok(None);
    };
    Ok(Some(User {
        login: s.login,
        role: op.role,
        csrf: s.csrf_token,
        token_hash: hash,
    }))
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// A form's fields (url-encoded body).
fn form(body: &Bytes) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// A state-changing request: logged in, carrying this session's CSRF token,
/// and (unless `any_role`) an operator. Every refusal is logged with who
/// and what; nothing is changed.
async fn acting(
    gw: &Gateway,
    headers: &HeaderMap,
    fields: &BTreeMap<String, String>,
    what: &str,
    any_role: bool,
) -> Result<User, ConsoleError> {
    let Some(u) = user(gw, headers).await? else {
        tracing::warn!(action = what, "console: refused: not logged in");
        return Err(ConsoleError::Forbidden(
            "not logged in (or the session expired): log in again".into(),
        ));
    };
    let csrf_ok = fields
        .get("csrf")
        .is_some_and(|t| session::same_token(t, &u.csrf));
    if !csrf_ok {
        tracing::warn!(login = %u.login, action = what, "console: refused: the form did not carry the session's CSRF token");
        return Err(ConsoleError::Forbidden(
            "refused: the form did not carry this session's token (reload the page and try again)"
                .into(),
        ));
    }
    if !any_role && u.role != Role::Operator {
        tracing::warn!(login = %u.login, role = u.role.as_str(), action = what, "console: refused: a viewer cannot act");
        return Err(ConsoleError::Forbidden(format!(
            "refused: {} is a viewer; only an operator can {what}",
            u.login
        )));
    }
    Ok(u)
}

fn reason(fields: &BTreeMap<String, String>) -> Result<String, ConsoleError> {
    fields
        .get("reason")
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ConsoleError::BadRequest("a reason is required".into()))
}

fn local(gw: &Gateway, t: DateTime<Utc>) -> String {
    t.with_timezone(&gw.config.timezone)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

pub async fn home() -> Response {
    Redirect::to("/day").into_response()
}

pub async fn login_form(State(st): State<ConsoleState>, headers: HeaderMap) -> Page {
    login_page(&st, &headers, StatusCode::OK, json!({}))
}

/// The login form with its token (the browser's, or a new one in a
/// cookie), `ctx` its error and login.
fn login_page(st: &ConsoleState, headers: &HeaderMap, status: StatusCode, mut ctx: Value) -> Page {
    let secure = console(&st.gw())?.secure_cookies;
    let token = match session::login_token(headers) {
        Some(t) => t,
        None => session::random_token().map_err(|e| {
            ConsoleError::BadRequest(format!("no randomness for the form token: {e}"))
        })?,
    };
    ctx["csrf"] = Value::String(token.clone());
    let mut page = st.render("login.html", None, ctx)?;
    *page.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&session::set_login_cookie(Some(&token), secure)) {
        page.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(page)
}

pub async fn login(
    State(st): State<ConsoleState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let gw = st.gw();
    let c = console(&gw)?;
    let fields = form(&body);
    let login = fields.get("login").cloned().unwrap_or_default();
    let password = fields.get("password").cloned().unwrap_or_default();
    let shown = login.escape_debug().to_string();
    // The form's token must be the one its cookie holds: a form posted from
    // another site has neither, and logs nobody in.
    let carried = fields.get("csrf").map(String::as_str).unwrap_or_default();
    if !session::login_token(&headers).is_some_and(|t| session::same_token(&t, carried)) {
        tracing::warn!(login = %shown, addr = %addr, "console: refused: the login form did not carry its CSRF token");
        return login_page(
            &st,
            &headers,
            StatusCode::FORBIDDEN,
            json!({ "error": "The login form has expired: log in again.", "login": login }),
        );
    }
    let began = st
        .failed
        .lock()
        .map(|mut f| f.begin_check(addr.ip(), Instant::now()))
        .unwrap_or(Err(NotChecked::AtLimit));
    if let Err(why) = began {
        tracing::warn!(login = %shown, addr = %addr, reason = ?why, "console: refused: too many failed logins from this address");
        return login_page(
            &st,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "error": "Too many failed logins from this address: try again later." }),
        );
    }
    let operator = c.operator(&login).cloned();
    let ok = match &operator {
        Some(o) => o.password_hash.verify_blocking(password).await,
        None => {
            let _ = tokio::task::spawn_blocking(move || {
                crate::auth::verify_password(crate::auth::DECOY_HASH, &password)
            })
            .await;
            false
        }
    };
    let blocked = st
        .failed
        .lock()
        .map(|mut f| f.end_check(addr.ip(), Instant::now(), ok))
        .unwrap_or(false);
    let Some(op) = operator.filter(|_| ok) else {
        tracing::warn!(login = %shown, addr = %addr, "console: refused: login failed (unknown login or wrong password)");
        if blocked {
            tracing::warn!(addr = %addr, block_seconds = c.login_limit.block.as_secs(), "console: too many failed logins; address blocked");
        }
        return login_page(
            &st,
            &headers,
            StatusCode::UNAUTHORIZED,
            json!({ "error": "Wrong login or password.", "login": login }),
        );
    };
    let random = |what: &str| {
        session::random_token()
            .map_err(|e| ConsoleError::BadRequest(format!("no randomness for the {what}: {e}")))
    };
    let token = random("session")?;
    let csrf = random("form token")?;
    let now = gw.clock.now();
    let idle = chrono::Duration::from_std(c.idle).unwrap_or(chrono::Duration::minutes(30));
    let _ = gw.ledger.purge_sessions(now - idle).await;
    let address = addr.ip().to_string();
    gw.ledger
        .create_session(&NewSession {
            token_hash: &session::token_hash(&token),
            login: &op.login,
            role: op.role.as_str(),
            csrf_token: &csrf,
            address: Some(&address),
            at: now,
        })
        .await?;
    tracing::info!(login = %op.login, role = op.role.as_str(), addr = %addr, "console: logged in");
    let mut resp = Redirect::to("/day").into_response();
    for cookie in [
        session::set_cookie(Some(&token), c.secure_cookies),
        session::set_login_cookie(None, c.secure_cookies),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

pub async fn logout(State(st): State<ConsoleState>, headers: HeaderMap, body: Bytes) -> Page {
    let gw = st.gw();
    let secure = console(&gw)?.secure_cookies;
    let u = acting(&gw, &headers, &form(&body), "log out", true).await?;
    gw.ledger.end_session(&u.token_hash).await?;
    tracing::info!(login = %u.login, "console: logged out");
    let mut resp = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(None, secure)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
pub struct DayQuery {
    date: Option<String>,
}

pub async fn day(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<DayQuery>,
) -> Page {
    let gw = st.gw();
    let Some(u) = user(&gw, &headers).await? else {
        return Ok(to_login());
    };
    let tz = gw.config.timezone;
    let date = match q.date.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|e| ConsoleError::BadRequest(format!("date {d:?} is not YYYY-MM-DD ({e})")))?,
        None => gw.clock.now().with_timezone(&tz).date_naive(),
    };
    // The report's statuses; its totals come with the chart's (one row
    // per fed file instead of every entry of the date).
    let mut report = gw.day_report(date, false).await?;
    let dates = business_days(&gw, date);
    let from = dates.first().copied().unwrap_or(date).min(date);
    let totals = gw.ledger.fed_totals(from, date).await?;
    for row in &mut report.rows {
        row.total = totals
            .iter()
            .filter(|t| {
                t.business_date == date && t.partner == row.partner && t.format == row.format
            })
            .fold(Decimal::ZERO, |s, t| s.checked_add(t.total).unwrap_or(s));
    }
    let rows: Vec<Value> = report
        .rows
        .iter()
        .map(|r| {
            json!({
                "partner": r.partner,
                "format": r.format,
                "expected": r.expected,
                "received": r.received,
                "fed": r.fed,
                "refused": r.refused,
                "missing": r.missing,
                "deadline": r.deadline.map(|d| d.format("%Y-%m-%d %H:%M %:z").to_string()),
                "status": match r.status {
                    Status::Ok => "ok",
                    Status::Waiting => "waiting",
                    Status::Late => "late",
                    Status::Quarantined => "quarantined",
                },
                "total": amount(r.total),
                "quarantined": r.quarantined.iter().map(|w| json!({
                    "file_id": w.file_id,
                    "verdict": w.verdict.as_str(),
                    "name": w.name,
                    "reason": w.reason,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let grand = report
        .rows
        .iter()
        .fold(Decimal::ZERO, |s, r| s.checked_add(r.total).unwrap_or(s));

    let chart_ctx = (!dates.is_empty()).then(|| {
        let mut partners: BTreeMap<&str, Vec<Decimal>> = gw
            .config
            .partners
            .iter()
            .map(|p| (p.id.as_str(), vec![Decimal::ZERO; dates.len()]))
            .collect();
        for t in &totals {
            if let (Some(v), Ok(i)) = (
                partners.get_mut(t.partner.as_str()),
                dates.binary_search(&t.business_date),
            ) {
                v[i] = v[i].checked_add(t.total).unwrap_or(v[i]);
            }
        }
        let series: Vec<(String, Vec<Decimal>)> = partners
            .into_iter()
            .map(|(p, v)| (p.to_string(), v))
            .collect();
        chart(&dates, &series, 720, 220)
    });
    st.render(
        "day.html",
        Some(&u),
        json!({
            "page": "day",
            "date": date.to_string(),
            "prev": date.pred_opt().map(|d| d.to_string()),
            "next": date.succ_opt().map(|d| d.to_string()),
            "business_day": report.business_day,
            "ready": report.ready,
            "rows": rows,
            "grand_total": amount(grand),
            "chart": chart_ctx,
        }),
    )
}

/// The last 30 business days up to `date`, oldest first.
fn business_days(gw: &Gateway, date: NaiveDate) -> Vec<NaiveDate> {
    let mut dates = Vec::with_capacity(CHART_DAYS);
    let mut d = date;
    for _ in 0..CHART_DAYS * 3 {
        if gw.config.calendar.is_business_day(d) {
            dates.push(d);
            if dates.len() == CHART_DAYS {
                break;
            }
        }
        match d.pred_opt() {
            Some(p) => d = p,
            None => break,
        }
    }
    dates.reverse();
    dates
}

#[derive(Deserialize)]
pub struct PageQuery {
    before: Option<i64>,
}

fn quarantine_row(gw: &Gateway, f: &FileRow, now: DateTime<Utc>) -> Value {
    json!({
        "id": f.id,
        "partner": f.partner,
        "name": f.name,
        "verdict": f.state.as_str(),
        "reason": f.reason,
        "error": f.error.as_ref().map(|e| e.to_string()),
        "business_date": f.business_date.map(|d| d.to_string()),
        "received": local(gw, f.received_at),
        "age": age(f.received_at, now),
        "actions": actions_for(f.state),
    })
}

/// The overrides that apply to a file in this state.
fn actions_for(state: FileState) -> Vec<&'static str> {
    match state.verdict() {
        Some(Verdict::Drill) => vec!["release", "reject", "redeliver"],
        Some(Verdict::Conflict) => vec!["supersede", "reject", "redeliver"],
        Some(Verdict::Overlap | Verdict::Invalid) => vec!["reject", "redeliver"],
        Some(Verdict::Duplicate | Verdict::Fed) => vec!["redeliver"],
        _ => vec![],
    }
}

pub async fn quarantine(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Page {
    let gw = st.gw();
    let Some(u) = user(&gw, &headers).await? else {
        return Ok(to_login());
    };
    let files = gw.ledger.quarantine_page(q.before, PAGE).await?;
    let now = gw.clock.now();
    let next = (files.len() as i64 == PAGE)
        .then(|| files.last().map(|f| f.id))
        .flatten();
    let rows: Vec<Value> = files.iter().map(|f| quarantine_row(&gw, f, now)).collect();
    st.render(
        "quarantine.html",
        Some(&u),
        json!({
            "page": "quarantine",
            "files": rows,
            "next": next,
            "four_eyes": four_eyes(&gw),
        }),
    )
}

fn four_eyes(gw: &Gateway) -> Vec<&'static str> {
    gw.config
        .operators
        .four_eyes
        .iter()
        .map(|a| a.as_str())
        .collect()
}

pub async fn requests(State(st): State<ConsoleState>, headers: HeaderMap) -> Page {
    let gw = st.gw();
    let Some(u) = user(&gw, &headers).await? else {
        return Ok(to_login());
    };
    let now = gw.clock.now();
    let rows: Vec<Value> = gw
        .ledger
        .pending_requests(now)
        .await?
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "action": r.action.as_str(),
                "file_id": r.file_id,
                "delivery_id": r.delivery_id,
                "operator": r.operator,
                "own": r.operator == u.actor(),
                "reason": r.reason,
                "created": local(&gw, r.created_at),
                "expires": local(&gw, r.expires_at),
            })
        })
        .collect();
    st.render(
        "requests.html",
        Some(&u),
        json!({ "page": "requests", "requests": rows }),
    )
}

fn outcome_text(c: &Carried) -> (String, Option<i64>) {
    match c {
        Carried::File(o) => (
            format!("file {}: {}: {}", o.file_id, o.verdict, o.reason),
            Some(o.file_id),
        ),
        Carried::Rejected(id) => (format!("file {id} rejected"), Some(*id)),
        Carried::Delivery(d) => (
            format!(
                "delivery {} recorded as a resend; it goes out with the partner's next upload",
                d.id
            ),
            None,
        ),
    }
}

pub async fn approve(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Page {
    let gw = st.gw();
    let fields = form(&body);
    let u = acting(&gw, &headers, &fields, "approve a request", false).await?;
    let note = fields
        .get("reason")
        .map(|r| r.trim())
        .filter(|r| !r.is_empty());
    let (r, carried) = gw.approve(id, &u.actor(), note).await.inspect_err(|e| {
        tracing::warn!(login = %u.login, request_id = id, error = %e, "console: approval refused");
    })?;
    tracing::info!(login = %u.login, request_id = id, action = r.action.as_str(), "console: request approved and carried out");
    let (text, file) = outcome_text(&carried);
    st.render(
        "done.html",
        Some(&u),
        json!({
            "title": format!("Request {id} approved"),
            "message": text,
            "file_id": file,
        }),
    )
}

pub async fn deny(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Page {
    let gw = st.gw();
    let fields = form(&body);
    let u = acting(&gw, &headers, &fields, "deny a request", false).await?;
    let why = reason(&fields)?;
    let r = gw.deny(id, &u.actor(), &why).await?;
    tracing::info!(login = %u.login, request_id = id, "console: request denied");
    st.render(
        "done.html",
        Some(&u),
        json!({
            "title": format!("Request {id} denied"),
            "message": format!("{} of {} denied: {why}", r.action, r.file_id.map_or_else(|| format!("delivery {}", r.delivery_id.unwrap_or_default()), |f| format!("file {f}"))),
            "file_id": r.file_id,
        }),
    )
}

pub async fn act(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> Page {
    let gw = st.gw();
    let fields = form(&body);
    let u = acting(&gw, &headers, &fields, "act on a file", false).await?;
    let action = fields.get("action").map(String::as_str).unwrap_or_default();
    let action = OverrideAction::parse(action)
        .ok()
        .filter(|a| !a.on_delivery())
        .ok_or_else(|| {
            ConsoleError::BadRequest(format!(
                "action {action:?} is not one of release, supersede, reject, redeliver"
            ))
        })?;
    let why = reason(&fields)?;
    if action == OverrideAction::Release
        && fields.get("override").map(String::as_str) != Some("yes")
    {
        return Err(ConsoleError::BadRequest(
            "a release feeds a drill file: tick the override box to confirm".into(),
        ));
    }
    let actor = u.actor();
    if gw.config.operators.needs_second(action) {
        let r = gw.request_override(action, id, &why, &actor).await?;
        tracing::info!(login = %u.login, request_id = r.id, action = action.as_str(), file_id = id, "console: override requested; awaiting a second operator");
        return st.render(
            "done.html",
            Some(&u),
            json!({
                "title": format!("Request {} recorded", r.id),
                "message": format!("{action} of file {id} awaits a second operator's approval (Requests page)"),
                "file_id": id,
                "request_id": r.id,
            }),
        );
    }
    let carried = gw
        .carry_out(action, id, &why, &actor)
        .await
        .inspect_err(|e| {
            tracing::warn!(login = %u.login, action = action.as_str(), file_id = id, error = %e, "console: action refused");
        })?;
    tracing::info!(login = %u.login, action = action.as_str(), file_id = id, "console: action carried out");
    let (text, file) = outcome_text(&carried);
    st.render(
        "done.html",
        Some(&u),
        json!({ "title": format!("{action} of file {id}"), "message": text, "file_id": file }),
    )
}

pub async fn file(State(st): State<ConsoleState>, headers: HeaderMap, Path(id): Path<i64>) -> Page {
    let gw = st.gw();
    let Some(u) = user(&gw, &headers).await? else {
        return Ok(to_login());
    };
    let f = gw
        .ledger
        .file(id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no file {id} in the ledger")))?;
    let events: Vec<Value> = gw
        .ledger
        .events(id)
        .await?
        .iter()
        .map(|e| {
            json!({
                "at": local(&gw, e.at),
                "kind": e.kind,
                "actor": e.actor,
                "reason": e.reason,
                "details": e.details,
            })
        })
        .collect();
    let entries = gw.ledger.entry_count(id).await?;
    let related = match f.related_file_id {
        Some(r) => gw.ledger.file(r).await?,
        None => None,
    };
    // A conflict: what the re-send changes against the fed file.
    let mut diff_ctx = Value::Null;
    if f.state.is(Verdict::Conflict)
        && let Some(fed) = related.as_ref().filter(|r| r.state == FileState::FED)
    {
        let fed_entries = gw.ledger.file_entries(fed.id).await?;
        match gw.stored_records(id).await {
            Ok(new) => {
                let d = super::diff::diff(&fed_entries, &new.records);
                let side = |s: &super::diff::OneSide| json!({ "key": s.record_key, "no": s.record_no, "amount": amount(s.amount) });
                diff_ctx = json!({
                    "fed_id": fed.id,
                    "added": d.added.iter().map(side).collect::<Vec<_>>(),
                    "removed": d.removed.iter().map(side).collect::<Vec<_>>(),
                    "changed": d.changed.iter().map(|c| json!({
                        "key": c.record_key,
                        "fed_no": c.fed_no,
                        "new_no": c.new_no,
                        "fed": amount(c.fed_amount),
                        "new": amount(c.new_amount),
                        "delta": c.new_amount.checked_sub(c.fed_amount).map_or_else(|| OUT_OF_RANGE.to_string(), amount),
                    })).collect::<Vec<_>>(),
                    "same": d.same,
                    "net": d.net.map_or_else(|| OUT_OF_RANGE.to_string(), amount),
                    "truncated": new.truncated,
                });
            }
            Err(e) => diff_ctx = json!({ "error": e.to_string() }),
        }
    }
    let now = gw.clock.now();
    st.render(
        "file.html",
        Some(&u),
        json!({
            "page": "file",
            "f": {
                "id": f.id,
                "partner": f.partner,
                "channel": f.channel.as_str(),
                "endpoint": f.endpoint,
                "source_path": f.source_path,
                "name": f.name,
                "received": local(&gw, f.received_at),
                "age": age(f.received_at, now),
                "size": amount(Decimal::from(f.size)),
                "checksum": f.checksum,
                "sidecar_checksum": f.sidecar_checksum,
                "format": f.format,
                "fingerprint": f.fingerprint,
                "business_key": f.business_key,
                "business_date": f.business_date.map(|d| d.to_string()),
                "records": f.records,
                "totals": f.totals.as_ref().map(|t| t.iter().map(|(k, v)| json!({"name": k, "value": amount(*v)})).collect::<Vec<_>>()),
                "drill_signals": f.drill_signals.iter().map(|s| json!({"source": s.source.as_str(), "text": s.text})).collect::<Vec<_>>(),
                "verdict": f.state.as_str(),
                "reason": f.reason,
                "error": f.error.as_ref().map(|e| e.to_string()),
                "decided": f.decided_at.map(|t| local(&gw, t)),
                "entries": entries,
                "actions": actions_for(f.state),
            },
            "related": related.as_ref().map(|r| json!({"id": r.id, "name": r.name, "verdict": r.state.as_str()})),
            "events": events,
            "diff": diff_ctx,
            "four_eyes": four_eyes(&gw),
        }),
    )
}

/// A file name as an ASCII `Content-Disposition` value (the exact name in
/// `filename*`).
fn disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        encoded.replace('+', "%20")
    )
}

pub async fn file_bytes(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Page {
    let gw = st.gw();
    let Some(u) = user(&gw, &headers).await? else {
        return Ok(to_login());
    };
    let f = gw
        .ledger
        .file(id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no file {id} in the ledger")))?;
    // Through the store's reader, whichever store it is (a directory or
    // the database), with the bytes checked against the checksum as they
    // go: a damaged blob ends the download short instead of passing.
    let (store, sum) = (gw.store.clone(), f.checksum.clone());
    let mut blob = tokio::task::spawn_blocking(move || store.open_blob(&sum))
        .await
        .map_err(|e| ConsoleError::NotFound(format!("file {id}: {e}")))?
        .map_err(|e| {
            ConsoleError::NotFound(format!(
                "file {id}: its bytes ({}) cannot be read from the content store: {e}",
                f.checksum
            ))
        })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            let item = match blob.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Bytes::from(buf))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    tracing::info!(login = %u.login, file_id = id, "console: stored bytes downloaded");
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition(&f.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&f.size.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    Ok(resp)
}

pub async fn endpoints(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Page {
    let gw = st.gw();
    let Some(u) = user(&gw, &headers).await? else {
        return Ok(to_login());
    };
    let now = gw.clock.now();
    let mut endpoints = Vec::new();
    for p in &gw.config.partners {
        for ep in &p.endpoints {
            let labels = vec![("partner", p.id.clone()), ("endpoint", ep.name.clone())];
            // Read only: an endpoint this process has not tried stays out
            // of /metrics.
            let failures = gw
                .telemetry
                .endpoint_failures
                .get(&labels)
                .map(|c| c.get())
                .unwrap_or(0);
            let success = gw
                .telemetry
                .endpoint_last_success
                .get(&labels)
                .map(|g| g.get())
                .unwrap_or(0.0);
            let last_success = (success > 0.0)
                .then(|| DateTime::<Utc>::from_timestamp(success as i64, 0))
                .flatten();
            let last_arrival = gw.ledger.last_arrival(&p.id, &ep.name).await?;
            endpoints.push(json!({
                "partner": p.id,
                "endpoint": ep.name,
                "host": ep.host,
                "drill_site": p.drill_endpoints.contains(&ep.name),
                "last_success": last_success.map(|t| format!("{} ({} ago)", local(&gw, t), age(t, now))),
                "last_arrival": last_arrival.map(|t| format!("{} ({} ago)", local(&gw, t), age(t, now))),
                "failures": failures,
            }));
        }
    }
    let deliveries = gw.ledger.deliveries_page(q.before, PAGE).await?;
    let next = (deliveries.len() as i64 == PAGE)
        .then(|| deliveries.last().map(|d| d.id))
        .flatten();
    let rows: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "partner": d.partner,
                "endpoint": d.endpoint,
                "name": d.name,
                "state": d.state.as_str(),
                "attempts": d.attempts,
                "error": d.error,
                "created": local(&gw, d.created_at),
                "delivered": d.delivered_at.map(|t| local(&gw, t)),
                "size": amount(Decimal::from(d.size)),
            })
        })
        .collect();
    st.render(
        "endpoints.html",
        Some(&u),
        json!({
            "page": "endpoints",
            "endpoints": endpoints,
            "deliveries": rows,
            "next": next,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_are_ascii_with_the_exact_name_encoded() {
        let d = disposition("정산 \"a\".dat");
        assert!(d.starts_with("attachment; filename=\""), "{d}");
        assert!(d.is_ascii(), "{d}");
        assert!(!d[..d.find(';').unwrap_or(0) + 30].contains("\"a\""), "{d}");
        assert!(d.contains("%EC%A0%95%EC%82%B0%20"), "{d}");
    }

    #[test]
    fn actions_follow_the_verdict() {
        assert_eq!(
            actions_for(FileState::Judged(Verdict::Drill)),
            ["release", "reject", "redeliver"]
        );
        assert_eq!(
            actions_for(FileState::Judged(Verdict::Conflict)),
            ["supersede", "reject", "redeliver"]
        );
        assert!(actions_for(FileState::Rejected).is_empty());
    }
}
