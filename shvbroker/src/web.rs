//! The web root: a `ws://`/`wss://` listener also answers plain HTTP GET and HEAD with
//! static files (the browser terminal), so that the page and its WebSocket share one
//! origin and no other server is needed.
//!
//! Deliberately small: one request per connection, files only (no directory listing),
//! nothing outside the root (dot segments refused, symlinks resolved and checked), a
//! bounded request head and file size.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use libshv::connection::BoxStream;
use libshv::logsafe::shown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Largest request head (request line and headers) we read.
const MAX_HEAD: usize = 8 * 1024;
/// Largest file we serve (the page's scripts are far smaller).
const MAX_FILE: u64 = 16 * 1024 * 1024;
const MAX_HEADERS: usize = 64;

/// Reads the HTTP request head. A WebSocket upgrade gets the stream back, with the
/// head still to be read (by the WebSocket handshake); anything else is answered from
/// `root` and the connection ends (`Ok(None)`).
pub async fn serve_or_upgrade(mut stream: BoxStream, root: &Path) -> io::Result<Option<BoxStream>> {
    let mut head = Vec::with_capacity(1024);
    let end = loop {
        if let Some(i) = find_head_end(&head) {
            break i;
        }
        if head.len() >= MAX_HEAD {
            respond(
                &mut stream,
                431,
                "text/plain",
                b"request head too large\n",
                false,
            )
            .await?;
            return Ok(None);
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::other("connection closed before an HTTP request"));
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(&head[..end]);
    if !matches!(parsed, Ok(httparse::Status::Complete(_))) {
        respond(&mut stream, 400, "text/plain", b"bad request\n", false).await?;
        return Ok(None);
    }
    let upgrade = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("websocket")
    });
    if upgrade {
        return Ok(Some(Box::new(Prefixed {
            prefix: head,
            pos: 0,
            inner: stream,
        })));
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        respond(
            &mut stream,
            405,
            "text/plain",
            b"only GET and HEAD\n",
            false,
        )
        .await?;
        return Ok(None);
    }
    match resolve(root, target).await {
        Some(file) => match read_file(&file).await {
            Ok(body) => {
                let ct = content_type(&file);
                tracing::debug!("GET {} 200", shown(target));
                respond(&mut stream, 200, ct, &body, head_only).await?;
            }
            Err(e) => {
                tracing::warn!("GET {}: {}", shown(target), shown(&e.to_string()));
                respond(
                    &mut stream,
                    500,
                    "text/plain",
                    b"cannot read the file\n",
                    head_only,
                )
                .await?;
            }
        },
        None => {
            tracing::debug!("GET {} 404", shown(target));
            respond(&mut stream, 404, "text/plain", b"not found\n", head_only).await?;
        }
    }
    Ok(None)
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The file a request target names under `root`, if it is a regular file inside it.
pub async fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let path = path.strip_prefix('/')?;
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    let mut file = root.to_path_buf();
    for seg in decoded.split('/') {
        // Dot segments, empty segments (`//`), backslashes and NULs never name a file
        // of the root; refusing them keeps the mapping one-to-one.
        if seg == "." || seg == ".." || seg.contains(['\\', '\0']) {
            return None;
        }
        if !seg.is_empty() {
            file.push(seg);
        }
    }
    if decoded.is_empty() || decoded.ends_with('/') {
        file.push("index.html");
    }
    // Symlinks inside the root may point anywhere: check where the file really is.
    let real = tokio::fs::canonicalize(&file).await.ok()?;
    let real_root = tokio::fs::canonicalize(root).await.ok()?;
    if !real.starts_with(&real_root) {
        return None;
    }
    let meta = tokio::fs::metadata(&real).await.ok()?;
    meta.is_file().then_some(real)
}

async fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let f = tokio::fs::File::open(path).await?;
    if f.metadata().await?.len() > MAX_FILE {
        return Err(io::Error::other("file too large to serve"));
    }
    let mut body = Vec::new();
    f.take(MAX_FILE).read_to_end(&mut body).await?;
    Ok(body)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

async fn respond(
    stream: &mut BoxStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    // The page runs a terminal with the user's rights: it may not be framed by another
    // site, nor load scripts from elsewhere; it connects only back to its own origin.
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n\
         X-Frame-Options: DENY\r\n\
         Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; \
         style-src 'self' 'unsafe-inline'; frame-ancestors 'none'\r\n\
         Connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

/// A stream whose first bytes were already read: they are read again first.
struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    inner: BoxStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_files_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("shv-web-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("index.html"), "i").unwrap();
        std::fs::write(root.join("sub/a.js"), "a").unwrap();
        std::fs::write(dir.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), root.join("link")).unwrap();
        let ok = |p: &str| {
            let root = root.clone();
            let p = p.to_string();
            async move { resolve(&root, &p).await.is_some() }
        };
        assert!(ok("/").await);
        assert!(ok("/index.html?x=1").await);
        assert!(ok("/sub/a.js").await);
        assert!(ok("/sub/%61.js").await);
        for bad in [
            "/../secret",
            "/sub/../../secret",
            "/%2e%2e/secret",
            "/sub",
            "/link",
            "/nope",
            "relative",
            "/sub\\a.js",
            "/%00",
        ] {
            assert!(!ok(bad).await, "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
