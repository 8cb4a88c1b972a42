//! hello and login on a fresh connection, before the background tasks start.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use shvproto::Value;

use super::ClientError;
use crate::codec::Incoming;
use crate::frame::RpcFrame;
use crate::login::LoginParams;
use crate::message::RpcMessage;
use crate::transport::{FrameReader, FrameWriter};
/// hello + login on a fresh connection.
pub async fn login(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    params: &LoginParams,
    timeout: Duration,
) -> Result<(), ClientError> {
    let hello = RpcMessage::new_request(1, "", "hello", None).into_frame();
    let resp = exchange(reader, writer, hello, timeout).await?;
    let nonce = match resp.result() {
        Ok(v) => match v.get("nonce").map(|n| &n.value) {
            Some(Value::String(s)) => s.to_string(),
            _ => String::new(),
        },
        Err(e) => return Err(ClientError::Login(format!("hello: {e}"))),
    };
    let login = RpcMessage::new_request(2, "", "login", Some(params.to_value(&nonce))).into_frame();
    let resp = exchange(reader, writer, login, timeout).await?;
    resp.result().map_err(|e| ClientError::Login(e.message))?;
    Ok(())
}

async fn exchange(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    frame: RpcFrame,
    timeout: Duration,
) -> Result<RpcMessage, ClientError> {
    let id = frame.request_id();
    writer
        .send(frame)
        .await
        .map_err(|_| ClientError::Disconnected)?;
    let wait = async {
        loop {
            match reader.next().await {
                Some(Ok(Incoming::Frame(f))) if f.is_response() && f.request_id() == id => {
                    return RpcMessage::from_frame(&f)
                        .map_err(|e| ClientError::Protocol(e.to_string()));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ClientError::Protocol(e.to_string())),
                None => return Err(ClientError::Disconnected),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}
