//! Checksum list parsing: coreutils `sha256sum` output and the BSD-style
//! lines Fedora publishes in its `CHECKSUM` files.

/// Parse a checksum list into `(name, lowercase hex)` pairs, SHA-256 only.
///
/// Understands both `sha256sum` output (`hex  name`, `hex *name`) and the
/// BSD tag format Fedora uses (`SHA256 (name) = hex`). Fedora signs those
/// files as clearsigned OpenPGP messages; the armor lines and the signature
/// block are skipped here (checking the signature is a separate step), and
/// dash-escaped lines are unescaped as RFC 4880 describes. Lines of other
/// digests (SHA512, MD5 ...) and comments are ignored rather than rejected,
/// because real files mix them.
pub fn parse_checksums(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_signature = false;
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.starts_with("-----BEGIN PGP SIGNATURE") {
            in_signature = true;
            continue;
        }
        if line.starts_with("-----END PGP SIGNATURE") {
            in_signature = false;
            continue;
        }
        if in_signature || line.starts_with("-----BEGIN PGP") || line.starts_with("Hash:") {
            continue;
        }
        // Clearsigned text escapes lines starting with '-' as "- -...".
        let line = line.strip_prefix("- ").unwrap_or(line);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(pair) = parse_bsd(trimmed).or_else(|| parse_gnu(trimmed)) {
            out.push(pair);
        }
    }
    out
}

/// `SHA256 (name) = hex`. The name may itself contain ") = ", so split at
/// the last occurrence.
fn parse_bsd(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("SHA256")?.trim_start();
    let rest = rest.strip_prefix('(')?;
    let (name, hex) = rest.rsplit_once(") = ")?;
    let hex = hex.trim();
    is_sha256_hex(hex).then(|| (name.to_string(), hex.to_ascii_lowercase()))
}

/// `hex  name` (text mode) or `hex *name` (binary mode). coreutils prefixes
/// the line with a backslash when it had to escape `\\` or `\n` in the name.
fn parse_gnu(line: &str) -> Option<(String, String)> {
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let hex = line.get(..64)?;
    if !is_sha256_hex(hex) {
        return None;
    }
    let rest = &line[64..];
    let name = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))
        .or_else(|| rest.strip_prefix(' '))?;
    if name.is_empty() {
        return None;
    }
    let name = if escaped {
        unescape(name)
    } else {
        name.to_string()
    };
    Some((name, hex.to_ascii_lowercase()))
}

fn unescape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3a2d1f0e9c8b7a6958473625140f1e2d3c4b5a69788796a5b4c3d2e1f0a1b2c3";
    const B: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn gnu_text_and_binary_modes() {
        let text = format!(
            "{A}  debian-12-rootfs.tar.xz\n{} *Fedora Base.tar\n# comment\n\n",
            B.to_uppercase()
        );
        let got = parse_checksums(&text);
        assert_eq!(
            got,
            vec![
                ("debian-12-rootfs.tar.xz".to_string(), A.to_string()),
                ("Fedora Base.tar".to_string(), B.to_string()),
            ]
        );
    }

    #[test]
    fn gnu_escaped_name() {
        let text = format!("\\{A}  odd\\\\name\\nline\n");
        assert_eq!(
            parse_checksums(&text),
            vec![("odd\\name\nline".to_string(), A.to_string())]
        );
    }

    #[test]
    fn ignores_other_digests_and_garbage() {
        let sha512 = "ab".repeat(64);
        let text = format!(
            "{sha512}  big.iso\nSHA512 (x.iso) = {sha512}\nMD5 (x.iso) = 0123\nnot a checksum line\n{A}\n"
        );
        assert!(parse_checksums(&text).is_empty());
    }

    #[test]
    fn fedora_clearsigned_checksum_file() {
        // Shaped like Fedora's Container CHECKSUM: clearsigned, comments with
        // sizes, BSD-style lines, then an armored signature.
        let text = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\n\
             Hash: SHA256\n\
             \n\
             # Fedora-Container-Base-Generic-41-1.4.x86_64.oci.tar.xz: 49412444 bytes\n\
             SHA256 (Fedora-Container-Base-Generic-41-1.4.x86_64.oci.tar.xz) = {A}\n\
             # Fedora-Container-Minimal-Base-41-1.4.x86_64.tar.xz: 38211308 bytes\n\
             SHA256 (Fedora-Container-Minimal-Base-41-1.4.x86_64.tar.xz) = {}\n\
             -----BEGIN PGP SIGNATURE-----\n\
             \n\
             iQIzBAEBCAAdFiEEpa6lVPp1fLMkVuyHmHNjdABLYvgFAmcUGnkACgkQmHNjdABL\n\
             Yvhp6g/+Kx1b1d5cdca3fb14e6f3d2a3d3c8f02c7d8fd0d5e8a4c2d0b4a1e2f3\n\
             =Qk3a\n\
             -----END PGP SIGNATURE-----\n",
            B.to_uppercase()
        );
        let got = parse_checksums(&text);
        assert_eq!(
            got,
            vec![
                (
                    "Fedora-Container-Base-Generic-41-1.4.x86_64.oci.tar.xz".to_string(),
                    A.to_string()
                ),
                (
                    "Fedora-Container-Minimal-Base-41-1.4.x86_64.tar.xz".to_string(),
                    B.to_string()
                ),
            ]
        );
    }

    #[test]
    fn crlf_and_dash_escaped_lines() {
        let text = format!("- SHA256 (-weird.tar) = {A}\r\n{B}  win.tar\r\n");
        assert_eq!(
            parse_checksums(&text),
            vec![
                ("-weird.tar".to_string(), A.to_string()),
                ("win.tar".to_string(), B.to_string()),
            ]
        );
    }

    #[test]
    fn signature_block_is_never_parsed() {
        // A base64 line that happens to look like a checksum line must not
        // count when it sits inside the signature block.
        let text =
            format!("-----BEGIN PGP SIGNATURE-----\n{A}  evil.tar\n-----END PGP SIGNATURE-----\n");
        assert!(parse_checksums(&text).is_empty());
    }
}
