//! `runCmd`: a one-shot command run to the end, its exit code and output returned.

use std::process::Stdio;

use libshv::logsafe::shown;
use libshv::message::{code, RpcError};
use libshv::tunnel::LaunchParams;
use libshv::RpcValue;

use crate::LOGGED_COMMAND;
/// Output bytes as a String when they are UTF-8 (readable in Cpon), else a Blob.
fn text_or_blob(bytes: Vec<u8>) -> RpcValue {
    match String::from_utf8(bytes) {
        Ok(s) => RpcValue::from(s),
        Err(e) => RpcValue::from(e.into_bytes()),
    }
}

/// `runCmd`: runs `cmd` (String for `sh -c`, List, or Map `{cmd, cwd, env}`) to the end
/// and returns `[exitCode, stdout, stderr]` (exitCode 128+N when killed by signal N).
pub async fn run_cmd(param: Option<&RpcValue>, user: &str) -> Result<RpcValue, RpcError> {
    let p = LaunchParams::from_run_cmd(param)?;
    if p.cmd.is_empty() {
        return Err(RpcError::invalid_param("runCmd needs a command"));
    }
    tracing::info!(
        "runCmd for {}: {}",
        shown(user),
        shown(&p.describe(LOGGED_COMMAND))
    );
    let mut cmd = tokio::process::Command::new(&p.cmd[0]);
    cmd.args(&p.cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("SHV_PASSWORD")
        // A caller that gives up (agent disconnect) must not leave the job running.
        .kill_on_drop(true);
    if let Some(cwd) = &p.cwd {
        cmd.current_dir(cwd);
    }
    for (k, v) in &p.env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.map_err(|e| {
        RpcError::new(
            code::METHOD_CALL_EXCEPTION,
            format!("cannot run '{}': {e}", p.cmd[0]),
        )
    })?;
    use std::os::unix::process::ExitStatusExt;
    let status = out
        .status
        .code()
        .or_else(|| out.status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    Ok(RpcValue::from(vec![
        RpcValue::from(i64::from(status)),
        text_or_blob(out.stdout),
        text_or_blob(out.stderr),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_cmd_result_shape() {
        let p = RpcValue::from_cpon(r#"["sh","-c","echo out; echo err >&2; exit 3"]"#).unwrap();
        let r = run_cmd(Some(&p), "test").await.unwrap();
        assert_eq!(r.to_cpon(), r#"[3,"out\n","err\n"]"#);
        let r = run_cmd(Some(&RpcValue::from("kill -9 $$")), "test")
            .await
            .unwrap();
        assert_eq!(r.as_list()[0].as_int(), 137);
        let e = run_cmd(
            Some(&RpcValue::from_cpon(r#"["/nonexistent/x"]"#).unwrap()),
            "test",
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, code::METHOD_CALL_EXCEPTION);
        assert!(run_cmd(None, "test").await.is_err());
    }
}
