//! resolv.conf parsing for the `resolvConf` option, as upstream's `dns.go`.

use libcni::types::Dns;

/// Upstream's rules: trimmed lines; `#`/`;` comments and lines with fewer than two fields
/// are skipped; `search` and `options` lines accumulate; the last `domain` wins.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let rest = fields[1..].iter().map(|s| s.to_string());
        match fields[0] {
            "nameserver" => dns.nameservers.push(fields[1].to_string()),
            "domain" => dns.domain = fields[1].to_string(),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_a_simple_file() {
        let dns = parse_resolv_conf("\n\t\tnameserver 192.0.2.0\n\t\tnameserver 192.0.2.1\n\t\t");
        assert_eq!(dns, Dns { nameservers: strings(&["192.0.2.0", "192.0.2.1"]), ..Dns::default() });
    }

    #[test]
    fn ignores_comments() {
        let dns = parse_resolv_conf("\nnameserver 192.0.2.0\n;nameserver 192.0.2.1\n");
        assert_eq!(dns, Dns { nameservers: strings(&["192.0.2.0"]), ..Dns::default() });
    }

    #[test]
    fn parses_all_fields() {
        let text = "nameserver 192.0.2.0\nnameserver 192.0.2.2\ndomain example.com\n;nameserver comment\n#nameserver comment\nsearch example.net example.org\nsearch example.gov\noptions one two three\noptions four\n";
        assert_eq!(
            parse_resolv_conf(text),
            Dns {
                nameservers: strings(&["192.0.2.0", "192.0.2.2"]),
                domain: "example.com".into(),
                search: strings(&["example.net", "example.org", "example.gov"]),
                options: strings(&["one", "two", "three", "four"]),
            }
        );
    }
}
