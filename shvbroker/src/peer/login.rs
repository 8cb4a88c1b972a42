//! The login phase: hello, the login request and its check, and the delay that spaces
//! out failed answers per source address so parallel connections guess no faster.

use std::time::Duration;

use libshv::login::{constant_time_eq, parse_login, sha1_hex, sha1_login, LoginRequest};
use libshv::logsafe::shown;
use libshv::message::{code, RpcError, RpcMessage};
use libshv::transport::FrameReader;
use libshv::{RpcFrame, RpcValue};
use rand::Rng;
use tokio::sync::oneshot;

use super::{Conn, Event, LoginInfo, Read, Registration, NOT_LOGGED_IN};
use crate::access::Grants;
use crate::settings::Settings;
/// Recent failed logins per source address. Failed answers to one address are spaced
/// out one after another, whatever the number of connections they come by: N parallel
/// connections guess no faster than one. Entries fade after [`FAILURE_MEMORY`].
#[derive(Default)]
pub struct LoginFailures(std::sync::Mutex<std::collections::HashMap<String, SourceFailures>>);

struct SourceFailures {
    count: u32,
    last: std::time::Instant,
    /// When the next failed answer to this address may go out.
    next_slot: std::time::Instant,
}

const FAILURE_MEMORY: Duration = Duration::from_secs(300);
/// The longest a failed login's answer is held back.
const MAX_PENALTY: Duration = Duration::from_secs(16);
/// Source addresses remembered at most (a fresh one beyond that gets only the
/// per-connection throttle).
const MAX_SOURCES: usize = 10_000;

impl LoginFailures {
    /// Records a failure from `addr` (the `conn_failures`-th on its connection) and
    /// returns how long to wait before answering it.
    fn penalty(&self, addr: &str, conn_failures: u32) -> Duration {
        let now = std::time::Instant::now();
        let delay = |level: u32| Duration::from_millis(250u64 << level.min(5));
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let source = source_of(addr);
        if !map.contains_key(source) && map.len() >= MAX_SOURCES {
            map.retain(|_, e| now.duration_since(e.last) < FAILURE_MEMORY);
            if map.len() >= MAX_SOURCES {
                return delay(conn_failures);
            }
        }
        let e = map.entry(source.to_string()).or_insert(SourceFailures {
            count: 0,
            last: now,
            next_slot: now,
        });
        if now.duration_since(e.last) >= FAILURE_MEMORY {
            e.count = 0;
        }
        e.count = e.count.saturating_add(1);
        e.last = now;
        // Each failure on this connection, and every fourth recent one from the same
        // address, doubles the delay, up to 8 s; answers queue up behind each other.
        let slot = e.next_slot.max(now) + delay(conn_failures.max(e.count / 4));
        // Queued answers wait at most this long, so that a flood from one address
        // (or from all local users: unix sockets are one source) cannot push every
        // later failed answer past the login timeout.
        let slot = slot.min(now + MAX_PENALTY);
        e.next_slot = slot;
        slot - now
    }
}

/// The address part of `ip:port` (unix sockets count as one source).
fn source_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(addr)
}

/// Why a login did not succeed.
enum Failed {
    /// Wrong credentials or a malformed login: counts toward the failed-login delay of
    /// the source address.
    Denied(RpcError),
    /// The password was right, but the broker refused the session (a mount point, the
    /// user's session limit): no delay.
    Refused(RpcError),
}

/// The answer to a request before login (pySHV's text, which peers match).
const LOGIN_REQUIRED_MSG: &str = "Use login method (login required)";

/// Requests before login are small (hello, workflows, login): a larger one is refused
/// unread, so that an unauthenticated socket cannot make the broker decode megabytes.
const MAX_LOGIN_FRAME: usize = 64 * 1024;

impl Conn {
    /// hello / workflows / login. Returns the idle timeout to use once logged in, or
    /// None when the connection must close. The whole phase, not just each read, is
    /// bounded by `login_timeout`: a client that floods `hello` and never reads its
    /// answers blocks on its full queue, and is cut off all the same.
    pub(super) async fn login_phase(
        &mut self,
        reader: &mut FrameReader,
    ) -> Option<Option<Duration>> {
        let limit = self.ctx.settings.limits.login_timeout;
        // Before login frames are small: larger ones are drained, never buffered.
        reader.decoder_mut().set_max_frame(MAX_LOGIN_FRAME);
        // The pool of connections not logged in may evict this one to make room.
        let evicted = self
            .ticket
            .as_ref()
            .map(|t| t.eviction())
            .unwrap_or_default();
        let outcome = tokio::select! {
            o = tokio::time::timeout(limit, self.login_steps(reader)) => Some(o),
            _ = evicted.cancelled() => None,
        };
        reader
            .decoder_mut()
            .set_max_frame(self.ctx.settings.limits.max_frame_size);
        match outcome {
            Some(Ok(r)) => r,
            Some(Err(_)) => {
                tracing::info!(peer = self.id, addr = %shown(&self.addr), "no login within {limit:?}, disconnecting");
                None
            }
            None => {
                // Logged once per burst by the pool's owner, not per connection.
                tracing::debug!(addr = %shown(&self.addr), "evicted before login to make room");
                None
            }
        }
    }

    async fn login_steps(&mut self, reader: &mut FrameReader) -> Option<Option<Duration>> {
        let settings = self.ctx.settings.clone();
        let nonce: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        let mut failures = 0u32;
        loop {
            let frame = match self.next(reader, None).await {
                Read::Frame(f) => f,
                Read::Reset | Read::Skip => continue,
                Read::Closed => return None,
            };
            if !frame.is_request() {
                continue;
            }
            if frame.body.len() > MAX_LOGIN_FRAME {
                let e = RpcError::invalid_param(format!(
                    "a request before login may have at most {MAX_LOGIN_FRAME} bytes"
                ));
                self.respond(&frame, Err(e)).await;
                continue;
            }
            if !frame.shv_path().is_empty() {
                self.respond(
                    &frame,
                    Err(RpcError::new(code::LOGIN_REQUIRED, LOGIN_REQUIRED_MSG)),
                )
                .await;
                continue;
            }
            match frame.method().unwrap_or("") {
                "hello" => {
                    let mut m = shvproto::Map::new();
                    m.insert("nonce".into(), nonce.as_str().into());
                    self.respond(&frame, Ok(m.into())).await;
                }
                "workflows" => {
                    let l = vec![RpcValue::from("PLAIN"), RpcValue::from("SHA1")];
                    self.respond(&frame, Ok(l.into())).await;
                }
                "login" => {
                    let param = RpcMessage::from_frame(&frame)
                        .ok()
                        .and_then(|m| m.param().cloned());
                    let parsed = param
                        .as_ref()
                        .map(|p| parse_login(p))
                        .unwrap_or(Err("missing login parameter"));
                    let outcome = match parsed {
                        Err(why) => Err(Failed::Denied(RpcError::invalid_param(format!(
                            "invalid login: {why}"
                        )))),
                        Ok(req) => self.try_login(&settings, &nonce, req, &frame).await,
                    };
                    match outcome {
                        Ok(idle) => {
                            // Answered by the broker task on registration.
                            return Some(idle);
                        }
                        Err(failed) => {
                            failures += 1;
                            let err = match failed {
                                Failed::Denied(err) => {
                                    let delay =
                                        self.ctx.login_failures.penalty(&self.addr, failures);
                                    tokio::time::sleep(delay).await;
                                    err
                                }
                                // The password was right: no reason to slow down the
                                // other logins from this address.
                                Failed::Refused(err) => err,
                            };
                            self.respond(&frame, Err(err)).await;
                            if failures >= settings.limits.login_attempts {
                                tracing::info!(peer = self.id, addr = %shown(&self.addr), "too many failed logins, disconnecting");
                                return None;
                            }
                        }
                    }
                }
                _ => {
                    self.respond(
                        &frame,
                        Err(RpcError::new(code::LOGIN_REQUIRED, LOGIN_REQUIRED_MSG)),
                    )
                    .await;
                }
            }
        }
    }

    async fn try_login(
        &mut self,
        settings: &Settings,
        nonce: &str,
        req: LoginRequest,
        request: &RpcFrame,
    ) -> Result<Option<Duration>, Failed> {
        // A client may lengthen its watchdog, within limits.max_idle_timeout, but not
        // switch off the broker's own: asking for none (0) gets the longest.
        let longest = settings.limits.max_idle_timeout;
        let asked = req
            .idle_timeout
            .map_or(settings.limits.idle_timeout, Duration::from_secs);
        let idle = Some(if asked.is_zero() {
            longest
        } else {
            asked.min(longest)
        });
        // A tunnel secret is checked by the broker task: a wrong one is a failed login
        // like a wrong password (it is what an unauthenticated sender guesses at).
        let is_tunnel = req.tunnel_secret.is_some();
        self.budget = Some(match is_tunnel {
            true => self.ctx.read_budgets.for_tunnel_end(&self.addr),
            false => self.ctx.read_budgets.for_user(&req.user),
        });
        let login = if let Some(secret) = req.tunnel_secret {
            LoginInfo::Tunnel { secret }
        } else {
            // One message for a wrong password and an unknown user: never reveal which.
            let denied = || {
                RpcError::new(
                    code::METHOD_CALL_EXCEPTION,
                    "Invalid login: wrong user name or password",
                )
            };
            let stored = settings.account(&req.user).map(|a| &a.sha1pass);
            let ok = match (&stored, req.kind.as_str()) {
                (Some(h), "PLAIN") => constant_time_eq(&sha1_hex(req.password.as_bytes()), h),
                (Some(h), "SHA1") => {
                    constant_time_eq(&sha1_login(nonce, h), &req.password.to_ascii_lowercase())
                }
                (_, "PLAIN" | "SHA1") => false,
                (_, other) => {
                    return Err(Failed::Denied(RpcError::invalid_param(format!(
                        "unsupported login type '{}'",
                        shown(other)
                    ))))
                }
            };
            if !ok {
                tracing::info!(peer = self.id, addr = %shown(&self.addr), user = %shown(&req.user), "login failed");
                return Err(Failed::Denied(denied()));
            }
            // Verified: lift the pre-login byte cap now, before the login answer goes
            // out, or a bridge could still be capped when the client (rightly) sends a
            // large first request as soon as it has that answer.
            self.logged_in();
            LoginInfo::User {
                grants: Grants::for_user(settings, &req.user),
                user: req.user,
                device_id: req.device_id,
                mount_point: req.mount_point,
                user_agent: req.user_agent,
            }
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let id = self
            .ctx
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Known before the broker task hears of it: whatever happens to this login
        // (even a timeout while registering), the connection says Gone with this id.
        self.id = id;
        let reg = Registration {
            id,
            login,
            idle_timeout: idle,
            tx: self.tx.clone(),
            cancel: self.cancel.clone(),
            addr: self.addr.clone(),
            login_request: Some(request.meta.clone()),
        };
        let shutting_down = || {
            Failed::Refused(RpcError::new(
                code::TRY_AGAIN_LATER,
                "broker is shutting down",
            ))
        };
        self.ctx
            .events
            .send(Event::Register(Box::new(reg), reply_tx))
            .await
            .map_err(|_| shutting_down())?;
        reply_rx
            .await
            .map_err(|_| shutting_down())?
            .inspect_err(|_| self.id = NOT_LOGGED_IN)
            .map_err(|e| match is_tunnel {
                true => Failed::Denied(e),
                false => Failed::Refused(e),
            })?;
        Ok(idle)
    }
}
