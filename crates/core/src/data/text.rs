//! Reading text data files whose encoding is not guaranteed: every line is UTF-8 when it is
//! valid UTF-8 and Latin-1 otherwise (older MovieLens and TREC files are Latin-1 in places),
//! so nothing is lost or replaced and line numbers stay exact for error messages.

use std::borrow::Cow;

/// UTF-8 when valid, else Latin-1 (every byte is the code point of the same value).
pub fn decode(line: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(line) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(line.iter().map(|&b| b as char).collect()),
    }
}

/// Non-blank lines with their 1-based numbers, `\r\n` or `\n` terminated, each decoded by
/// [`decode`].
pub fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, Cow<'_, str>)> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(n, line)| (n, decode(line)))
}

/// Every line, blank ones included, without line ends; a final newline does not make an
/// extra empty line.
pub fn all_lines(bytes: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = bytes
        .split(|&b| b == b'\n')
        .map(|l| decode(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect();
    if out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_latin1_and_numbering() {
        let bytes = b"caf\xc3\xa9\r\n\n  \nMis\xe9rables\n";
        let got: Vec<(usize, String)> = lines(bytes).map(|(n, l)| (n, l.into_owned())).collect();
        assert_eq!(got, vec![(1, "café".into()), (4, "Misérables".into())]);
        assert_eq!(all_lines(bytes), vec!["café", "", "  ", "Misérables"]);
        assert_eq!(all_lines(b"a\nb"), vec!["a", "b"]);
    }
}
