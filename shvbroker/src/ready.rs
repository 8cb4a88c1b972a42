//! `--ready-file`: tells whoever started the broker that it listens, and where. The
//! file appears only once every listener is bound (written beside, then renamed), so a
//! reader that sees it can connect at once, with no log line to scrape.

use std::io::Write;
use std::path::Path;

use libshv::url::Transport;

/// Writes one listening address per line (`tcp://127.0.0.1:40123`, …) to `path`.
pub fn write(path: &Path, addresses: &[Transport]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    for a in addresses {
        writeln!(f, "{a}")?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_lists_every_address_and_nothing_is_left_beside_it() {
        let dir = std::env::temp_dir().join(format!("shv-ready-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ready");
        let addrs: Vec<Transport> = ["tcp://127.0.0.1:4000", "ws://127.0.0.1:4001"]
            .iter()
            .map(|u| libshv::RpcUrl::parse(u).unwrap().transport.unwrap())
            .collect();
        write(&path, &addrs).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "tcp://127.0.0.1:4000\nws://127.0.0.1:4001\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
