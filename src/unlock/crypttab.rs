//! Minimal crypttab reader: the volume names and sources an initramfs was
//! built to unlock (`/etc/crypttab` in a systemd initrd, `/cryptroot/crypttab`
//! in Debian's). Only names and sources are used; options are kept verbatim.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub source: String,
    pub key: String,
    pub options: String,
}

pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_ascii_whitespace();
            let name = w.next()?.to_string();
            let source = w.next()?.to_string();
            let key = w.next().unwrap_or("none").to_string();
            let options = w.next().unwrap_or("").to_string();
            Some(Entry {
                name,
                source,
                key,
                options,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let e = parse("# c\nroot UUID=abc none luks,discard\n\ndata /dev/vdb\nbad\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "root");
        assert_eq!(e[0].options, "luks,discard");
        assert_eq!(e[1].key, "none");
    }
}
