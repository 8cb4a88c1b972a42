//! A link to a parent broker: we connect out, log in as a device, and from then on the
//! parent is just another peer whose requests are routed into our tree (CallerIds
//! intact) and to whom responses and subscribed signals flow back.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use libshv::client::{login, ClientConfig};
use libshv::message::RpcMessage;
use libshv::RpcUrl;
use tokio::sync::oneshot;

use crate::events::LinkStatus;
use crate::peer::{write_loop, Conn, Event, LoginInfo, PeerContext, Registration};
use crate::settings::Parent;

pub async fn run(index: usize, conf: Parent, ctx: Arc<PeerContext>) {
    let url = &conf.url;
    let shown = url.to_string();
    let mut backoff = libshv::backoff::Backoff::new(conf.reconnect_max);
    loop {
        let result = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = session(index, &conf, url, &ctx) => r,
        };
        let error = match result {
            // It was up: the parent was alive a moment ago (a restart is the common
            // case), so the back-off retries quickly for a while.
            Ok(held) => {
                backoff.connected_for(held);
                "connection closed".to_string()
            }
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        tracing::warn!(parent = %shown, "parent link down: {}; retrying in {delay:?}", libshv::logsafe::shown(&error));
        let _ = ctx
            .events
            .send(Event::Link(index, LinkStatus::Disconnected { error }))
            .await;
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One connected period of the link. Ok (how long it was up) when it was up and then
/// closed.
async fn session(
    index: usize,
    conf: &Parent,
    url: &RpcUrl,
    ctx: &Arc<PeerContext>,
) -> Result<std::time::Duration, String> {
    let mut cc = ClientConfig::from_url(url.clone());
    if conf.mount_point.is_some() {
        cc.login.mount_point = conf.mount_point.clone();
    }
    if conf.device_id.is_some() {
        cc.login.device_id = conf.device_id.clone();
    }
    // The parent may drop us after three missed heartbeats, not sooner.
    cc.login.idle_timeout = Some(conf.heartbeat.as_secs() * 3);
    cc.login.user_agent = Some(format!("shvbroker/{}", env!("CARGO_PKG_VERSION")));
    cc.login.broker = true;
    let (mut reader, mut writer) =
        libshv::transport::dial(url.transport(), ctx.settings.limits.max_frame_size)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
    login(&mut reader, &mut writer, &cc.login, cc.timeout)
        .await
        .map_err(|e| e.to_string())?;

    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let heartbeat = conf.heartbeat;
    let (tx, rx) = ctx.queue();
    let cancel = ctx.shutdown.child_token();
    // Login is done: from now on the link writes what the broker queues.
    let writer = libshv::writer::outgoing_writer(writer);
    let writer_task = tokio::spawn(write_loop(
        writer,
        rx,
        cancel.clone(),
        url.transport().to_string(),
    ));
    let (reply_tx, reply_rx) = oneshot::channel();
    let reg = Registration {
        id,
        login: LoginInfo::Parent {
            link: index,
            url: url.to_string(),
        },
        tx: tx.clone(),
        cancel: cancel.clone(),
        addr: url.transport().to_string(),
        idle_timeout: Some(heartbeat * 3),
        login_request: None,
    };
    ctx.events
        .send(Event::Register(Box::new(reg), reply_tx))
        .await
        .map_err(|_| "broker stopped".to_string())?;
    reply_rx
        .await
        .map_err(|_| "broker stopped".to_string())?
        .map_err(|e| e.message)?;
    tracing::info!(parent = %url, peer = id, "parent link up");
    let up = tokio::time::Instant::now();
    let _ = ctx
        .events
        .send(Event::Link(index, LinkStatus::Connected { peer: id }))
        .await;

    let hb_tx = tx.clone();
    let hb_cancel = cancel.clone();
    let hb = tokio::spawn(async move {
        let mut rid = 1_000_000_000i64;
        loop {
            tokio::select! {
                _ = hb_cancel.cancelled() => return,
                _ = tokio::time::sleep(heartbeat) => {}
            }
            rid += 1;
            let ping = RpcMessage::new_request(rid, ".app", "ping", None).into_frame();
            if hb_tx.send(ping).await.is_err() {
                return;
            }
        }
    });
    let conn = Conn {
        id,
        tx,
        cancel: cancel.clone(),
        addr: url.transport().to_string(),
        ctx: ctx.clone(),
        bad_frames: Default::default(),
        ticket: None,
        readmission: None,
        // The parent is trusted with its frames' memory, as with everything else.
        budget: None,
    };
    // The parent's silence for three heartbeats means the link is dead.
    let _ = conn.serve(&mut reader, Some(heartbeat * 3)).await;
    let _ = ctx.events.send(Event::Gone(id)).await;
    cancel.cancel();
    drop(conn);
    hb.abort();
    let _ = writer_task.await;
    Ok(up.elapsed())
}
