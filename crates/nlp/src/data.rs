//! Labelled text data sets in their original formats: TREC question classification (Li and
//! Roth, 2002; `LABEL:fine question`, the coarse label before the colon) and the SMS Spam
//! Collection (`ham|spam<TAB>text`). Files are read as bytes, each line UTF-8 or else
//! Latin-1 (TREC's training file has one Latin-1 byte); a malformed line is an error naming
//! the file and line.

use std::path::Path;

use crate::error::{NlpError, Result};

/// A text and its class index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledText {
    /// The text.
    pub text: String,
    /// Index into the data set's class list.
    pub label: usize,
}

/// TREC's six coarse classes.
pub const TREC_CLASSES: [&str; 6] = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"];

/// The SMS Spam Collection's classes.
pub const SMS_CLASSES: [&str; 2] = ["ham", "spam"];

fn lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let bytes = std::fs::read(path).map_err(|e| NlpError::io(path, e))?;
    Ok(kiln_core::data::text::lines(&bytes)
        .map(|(n, l)| (n, l.into_owned()))
        .collect())
}

fn parse_error(path: &Path, line: usize, reason: String) -> NlpError {
    NlpError::Input(format!("{}:{line}: {reason}", path.display()))
}

/// Reads a TREC file (`train_5500.label`, `TREC_10.label`) with coarse labels.
pub fn read_trec(path: impl AsRef<Path>) -> Result<Vec<LabeledText>> {
    let path = path.as_ref();
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let (label, text) = line
            .split_once(' ')
            .ok_or_else(|| parse_error(path, n, "expected 'LABEL:fine question'".into()))?;
        let coarse = label.split(':').next().unwrap_or_default();
        let label = TREC_CLASSES
            .iter()
            .position(|c| *c == coarse)
            .ok_or_else(|| parse_error(path, n, format!("unknown TREC class '{coarse}'")))?;
        out.push(LabeledText {
            text: text.trim().to_owned(),
            label,
        });
    }
    if out.is_empty() {
        return Err(parse_error(path, 0, "empty file".into()));
    }
    Ok(out)
}

/// Reads the SMS Spam Collection (`SMSSpamCollection`).
pub fn read_sms_spam(path: impl AsRef<Path>) -> Result<Vec<LabeledText>> {
    let path = path.as_ref();
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let (label, text) = line
            .split_once('\t')
            .ok_or_else(|| parse_error(path, n, "expected 'ham|spam<TAB>text'".into()))?;
        let label = SMS_CLASSES
            .iter()
            .position(|c| *c == label)
            .ok_or_else(|| parse_error(path, n, format!("unknown label '{label}'")))?;
        out.push(LabeledText {
            text: text.to_owned(),
            label,
        });
    }
    if out.is_empty() {
        return Err(parse_error(path, 0, "empty file".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.label");
        std::fs::write(&p, b"NUM:dist How far ?\nLOC:city Caf\xe9 where ?\n").unwrap();
        let t = read_trec(&p).unwrap();
        assert_eq!((t[0].label, t[1].label), (5, 4));
        assert_eq!(t[1].text, "Café where ?");
        std::fs::write(&p, b"NUM:dist How far ?\nXYZ:a b\n").unwrap();
        let e = read_trec(&p).unwrap_err().to_string();
        assert!(e.contains("t.label:2: unknown TREC class 'XYZ'"), "{e}");
        std::fs::write(&p, b"ham\thi\nspam no tab\n").unwrap();
        let e = read_sms_spam(&p).unwrap_err().to_string();
        assert!(e.contains(":2: expected"), "{e}");
        std::fs::write(&p, b"").unwrap();
        assert!(read_sms_spam(&p).is_err());
    }
}
