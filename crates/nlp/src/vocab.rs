//! Vocabularies built from a corpus: [`WordTokenizer`] (words and punctuation, with
//! lower-casing, minimum frequency and maximum size) and [`CharTokenizer`] (one token per
//! character). Both reserve the same special tokens ([`PAD`], [`UNK`], [`BOS`], [`EOS`] at ids
//! 0-3), implement [`Tokenizer`], and save to / load from JSON.
//!
//! ```
//! use kiln_nlp::vocab::{WordTokenizer, WordVocabConfig};
//! use kiln_nlp::Tokenizer;
//!
//! let texts = ["The cat sat.", "the dog sat!"];
//! let tok = WordTokenizer::build(texts, &WordVocabConfig::new().with_lowercase(true));
//! let ids = tok.encode("The dog sat.").unwrap().ids;
//! assert_eq!(tok.decode(&ids).unwrap(), "the dog sat .");
//! ```

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{NlpError, Result};
use crate::tokenizer::{Encoding, Tokenizer};

/// Padding, id 0.
pub const PAD: &str = "<pad>";
/// Unknown token, id 1.
pub const UNK: &str = "<unk>";
/// Beginning of sequence, id 2.
pub const BOS: &str = "<bos>";
/// End of sequence, id 3.
pub const EOS: &str = "<eos>";
/// The id of [`PAD`].
pub const PAD_ID: u32 = 0;
/// The id of [`UNK`].
pub const UNK_ID: u32 = 1;
/// The id of [`BOS`].
pub const BOS_ID: u32 = 2;
/// The id of [`EOS`].
pub const EOS_ID: u32 = 3;
const SPECIALS: [&str; 4] = [PAD, UNK, BOS, EOS];

/// How [`WordTokenizer::build`] chooses its vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordVocabConfig {
    /// Lower-case text before splitting (when building and when encoding).
    pub lowercase: bool,
    /// Words seen fewer times are left out (they encode to [`UNK`]).
    pub min_freq: usize,
    /// At most this many words (specials not counted), the most frequent first.
    pub max_size: Option<usize>,
    /// Wrap every encoding in [`BOS`] ... [`EOS`].
    pub add_bos_eos: bool,
}

impl Default for WordVocabConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl WordVocabConfig {
    /// Case kept, every word, no size limit, no [`BOS`]/[`EOS`].
    pub fn new() -> Self {
        Self {
            lowercase: false,
            min_freq: 1,
            max_size: None,
            add_bos_eos: false,
        }
    }

    /// Sets [`lowercase`](Self::lowercase).
    pub fn with_lowercase(mut self, on: bool) -> Self {
        self.lowercase = on;
        self
    }

    /// Sets [`min_freq`](Self::min_freq).
    pub fn with_min_freq(mut self, n: usize) -> Self {
        self.min_freq = n.max(1);
        self
    }

    /// Sets [`max_size`](Self::max_size).
    pub fn with_max_size(mut self, n: usize) -> Self {
        self.max_size = Some(n);
        self
    }

    /// Sets [`add_bos_eos`](Self::add_bos_eos).
    pub fn with_bos_eos(mut self, on: bool) -> Self {
        self.add_bos_eos = on;
        self
    }
}

/// Splits text into words and punctuation: runs of letters, digits, apostrophes and
/// in-word hyphens are words, every other non-space character is a token of its own.
///
/// ```
/// assert_eq!(kiln_nlp::vocab::split_words("It's 5 o'clock, OK?"),
///            vec!["It's", "5", "o'clock", ",", "OK", "?"]);
/// ```
pub fn split_words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let is_word = |c: char| c.is_alphanumeric() || c == '\'' || c == '-' || c == '_';
    for (i, c) in text.char_indices() {
        if is_word(c) {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            out.push(&text[s..i]);
        }
        if !c.is_whitespace() {
            out.push(&text[i..i + c.len_utf8()]);
        }
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

/// Token ↔ id table shared by the word and character tokenizers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Table {
    tokens: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

impl Table {
    pub(crate) fn new(words: impl IntoIterator<Item = String>) -> Self {
        let mut t = Self {
            tokens: SPECIALS.iter().map(|s| s.to_string()).collect(),
            index: HashMap::new(),
        };
        t.tokens.extend(words);
        t.reindex();
        t
    }

    fn reindex(&mut self) {
        self.index = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
    }

    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    pub(crate) fn id(&self, token: &str) -> u32 {
        self.index.get(token).copied().unwrap_or(UNK_ID)
    }

    pub(crate) fn token(&self, id: u32) -> Result<&str> {
        self.tokens
            .get(id as usize)
            .map(String::as_str)
            .ok_or_else(|| {
                NlpError::Input(format!(
                    "token id {id} is outside the vocabulary of {} tokens",
                    self.tokens.len()
                ))
            })
    }

    fn check(&self, path: &Path) -> Result<()> {
        let specials_ok = self.tokens.iter().take(4).eq(SPECIALS.iter());
        if !specials_ok || self.index.len() != self.tokens.len() {
            return Err(NlpError::Config {
                path: path.to_owned(),
                reason: "a vocabulary must start with <pad>, <unk>, <bos>, <eos> and hold each \
                         token once"
                    .into(),
            });
        }
        Ok(())
    }
}

/// Token counts that remember first appearances, so that a vocabulary built from them is the
/// same on every run.
#[derive(Default)]
pub(crate) struct TokenCounter(HashMap<String, (usize, usize)>);

impl TokenCounter {
    /// Counts one occurrence of `token`.
    pub(crate) fn add(&mut self, token: String) {
        let next = self.0.len();
        self.0.entry(token).or_insert((0, next)).0 += 1;
    }

    /// The tokens seen at least `min` times, the specials left out, most frequent first (ties
    /// by first appearance), at most `max`.
    pub(crate) fn keep(self, min: usize, max: Option<usize>) -> Vec<String> {
        let mut v: Vec<(String, (usize, usize))> = self
            .0
            .into_iter()
            .filter(|(t, (n, _))| *n >= min && !SPECIALS.contains(&t.as_str()))
            .collect();
        v.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
        v.truncate(max.unwrap_or(usize::MAX));
        v.into_iter().map(|(t, _)| t).collect()
    }
}

pub(crate) fn save_json(value: &impl Serialize, path: &Path) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| NlpError::Config {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    kiln_core::train::checkpoint::write_atomic(path, |w| std::io::Write::write_all(w, &bytes))?;
    Ok(())
}

/// Reads a vocabulary file and rebuilds and checks its token index.
pub(crate) fn load_vocab<T: for<'de> Deserialize<'de>>(
    path: &Path,
    table: impl Fn(&mut T) -> &mut Table,
) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| NlpError::io(path, e))?;
    let mut vocab: T = serde_json::from_slice(&bytes).map_err(|e| NlpError::Config {
        path: path.to_owned(),
        reason: format!("not a vocabulary file: {e}"),
    })?;
    let t = table(&mut vocab);
    t.reindex();
    t.check(path)?;
    Ok(vocab)
}

/// A word-level vocabulary: [`split_words`] tokens, most frequent first (ties by first
/// appearance), after the four specials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordTokenizer {
    config: WordVocabConfig,
    table: Table,
}

impl WordTokenizer {
    /// Builds the vocabulary of `texts`.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>, config: &WordVocabConfig) -> Self {
        let mut counts = TokenCounter::default();
        for text in texts {
            let text = Self::prepare(config, text);
            for w in split_words(&text) {
                counts.add(w.to_owned());
            }
        }
        let words = counts.keep(config.min_freq, config.max_size);
        Self {
            config: config.clone(),
            table: Table::new(words),
        }
    }

    fn prepare<'t>(config: &WordVocabConfig, text: &'t str) -> std::borrow::Cow<'t, str> {
        if config.lowercase {
            std::borrow::Cow::Owned(text.to_lowercase())
        } else {
            std::borrow::Cow::Borrowed(text)
        }
    }

    /// How the vocabulary was built.
    pub fn config(&self) -> &WordVocabConfig {
        &self.config
    }

    /// The id of `token` ([`UNK_ID`] when absent).
    pub fn token_to_id(&self, token: &str) -> u32 {
        self.table.id(token)
    }

    /// The token of `id`.
    ///
    /// # Errors
    /// [`NlpError::Input`] for an id past the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Result<&str> {
        self.table.token(id)
    }

    /// Writes the vocabulary as JSON, atomically.
    ///
    /// # Errors
    /// [`NlpError::Io`] when the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save_json(self, path.as_ref())
    }

    /// Reads a vocabulary written by [`save`](Self::save).
    ///
    /// # Errors
    /// [`NlpError::Io`] when the file cannot be read; [`NlpError::Config`] when it is not a
    /// vocabulary.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        load_vocab(path.as_ref(), |t: &mut Self| &mut t.table)
    }
}

impl Tokenizer for WordTokenizer {
    fn encode(&self, text: &str) -> Result<Encoding> {
        let text = Self::prepare(&self.config, text);
        let words = split_words(&text);
        let mut enc = Encoding {
            ids: Vec::with_capacity(words.len() + 2),
            tokens: Vec::with_capacity(words.len() + 2),
        };
        let mut push = |id: u32, token: &str| {
            enc.ids.push(id);
            enc.tokens.push(token.to_owned());
        };
        if self.config.add_bos_eos {
            push(BOS_ID, BOS);
        }
        for w in words {
            push(self.table.id(w), w);
        }
        if self.config.add_bos_eos {
            push(EOS_ID, EOS);
        }
        Ok(enc)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut words = Vec::with_capacity(ids.len());
        for &id in ids {
            if id == EOS_ID {
                break;
            }
            if id != PAD_ID && id != BOS_ID {
                words.push(self.table.token(id)?);
            }
        }
        Ok(words.join(" "))
    }

    fn vocab_size(&self) -> usize {
        self.table.tokens.len()
    }

    fn pad_id(&self) -> u32 {
        PAD_ID
    }
}

/// A character-level vocabulary: every distinct character of the corpus, sorted, after the
/// four specials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharTokenizer {
    table: Table,
}

impl CharTokenizer {
    /// Builds the vocabulary of `text`.
    pub fn build(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self {
            table: Table::new(chars.into_iter().map(String::from)),
        }
    }

    /// Encodes without building [`Encoding::tokens`] (fast path for long texts).
    pub fn encode_ids(&self, text: &str) -> Vec<u32> {
        let mut buf = [0u8; 4];
        text.chars()
            .map(|c| self.table.id(c.encode_utf8(&mut buf)))
            .collect()
    }

    /// Writes the vocabulary as JSON, atomically.
    ///
    /// # Errors
    /// [`NlpError::Io`] when the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save_json(self, path.as_ref())
    }

    /// Reads a vocabulary written by [`save`](Self::save).
    ///
    /// # Errors
    /// [`NlpError::Io`] when the file cannot be read; [`NlpError::Config`] when it is not a
    /// vocabulary.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        load_vocab(path.as_ref(), |t: &mut Self| &mut t.table)
    }
}

impl Tokenizer for CharTokenizer {
    fn encode(&self, text: &str) -> Result<Encoding> {
        let ids = self.encode_ids(text);
        let tokens = text.chars().map(String::from).collect();
        Ok(Encoding { ids, tokens })
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut out = String::with_capacity(ids.len());
        for &id in ids {
            if id == EOS_ID {
                break;
            }
            match id {
                PAD_ID | BOS_ID => {}
                UNK_ID => out.push('\u{FFFD}'),
                _ => out.push_str(self.table.token(id)?),
            }
        }
        Ok(out)
    }

    fn vocab_size(&self) -> usize {
        self.table.tokens.len()
    }

    fn pad_id(&self) -> u32 {
        PAD_ID
    }
}

/// What to do with bytes that are not UTF-8 when reading a text file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidUtf8 {
    /// Replace each invalid sequence by U+FFFD and count the replacements.
    Replace,
    /// Fail, naming the file and the byte offset.
    Error,
}

/// Reads a whole text file as bytes and decodes it as UTF-8 under `policy`; returns the text
/// and the number of replaced sequences (always 0 under [`InvalidUtf8::Error`]).
///
/// # Errors
/// [`NlpError::Io`] when the file cannot be read; [`NlpError::Input`] naming the offset of the
/// first invalid byte under [`InvalidUtf8::Error`].
pub fn read_text(path: impl AsRef<Path>, policy: InvalidUtf8) -> Result<(String, usize)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| NlpError::io(path, e))?;
    decode_utf8(&bytes, policy).map_err(|offset| {
        NlpError::Input(format!(
            "{}: invalid UTF-8 at byte {offset}",
            path.display()
        ))
    })
}

/// Decodes `bytes` as UTF-8 under `policy`: the text and the number of replacements, or the
/// offset of the first invalid byte under [`InvalidUtf8::Error`].
///
/// # Errors
/// The offset of the first invalid byte, under [`InvalidUtf8::Error`].
pub fn decode_utf8(
    bytes: &[u8],
    policy: InvalidUtf8,
) -> std::result::Result<(String, usize), usize> {
    let mut out = String::with_capacity(bytes.len());
    let mut replaced = 0;
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            if policy == InvalidUtf8::Error {
                return Err(out.len());
            }
            out.push('\u{FFFD}');
            replaced += 1;
        }
    }
    Ok((out, replaced))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::PaddedBatch;
    use proptest::prelude::*;

    #[test]
    fn word_vocab_orders_by_frequency_and_applies_limits() {
        let texts = ["b a b c", "b a d"];
        let tok = WordTokenizer::build(texts, &WordVocabConfig::new());
        assert_eq!(tok.id_to_token(4).unwrap(), "b");
        assert_eq!(tok.id_to_token(5).unwrap(), "a");
        assert_eq!(tok.vocab_size(), 4 + 4);
        let small = WordTokenizer::build(texts, &WordVocabConfig::new().with_min_freq(2));
        assert_eq!(small.vocab_size(), 6);
        assert_eq!(small.encode("c a").unwrap().ids, vec![UNK_ID, 5]);
        let capped = WordTokenizer::build(texts, &WordVocabConfig::new().with_max_size(1));
        assert_eq!(capped.vocab_size(), 5);
        let wrapped = WordTokenizer::build(texts, &WordVocabConfig::new().with_bos_eos(true));
        assert_eq!(wrapped.encode("a").unwrap().ids, vec![BOS_ID, 5, EOS_ID]);
        assert!(tok.decode(&[99]).is_err());
    }

    #[test]
    fn lowercasing_and_punctuation() {
        let tok = WordTokenizer::build(
            ["Hello, World!"],
            &WordVocabConfig::new().with_lowercase(true),
        );
        let e = tok.encode("HELLO world!").unwrap();
        assert_eq!(e.tokens, vec!["hello", "world", "!"]);
        assert!(!e.ids.contains(&UNK_ID));
    }

    #[test]
    fn vocabularies_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vocab.json");
        let tok = WordTokenizer::build(["x y z y"], &WordVocabConfig::new().with_bos_eos(true));
        tok.save(&p).unwrap();
        let back = WordTokenizer::load(&p).unwrap();
        assert_eq!(back.encode("z y q").unwrap(), tok.encode("z y q").unwrap());
        let chars = CharTokenizer::build("hello");
        chars.save(&p).unwrap();
        assert_eq!(CharTokenizer::load(&p).unwrap(), chars);
        std::fs::write(&p, br#"{"table":{"tokens":["a","b"]}}"#).unwrap();
        let e = CharTokenizer::load(&p).unwrap_err().to_string();
        assert!(e.contains("must start with <pad>"), "{e}");
        std::fs::write(&p, b"garbage").unwrap();
        assert!(CharTokenizer::load(&p).is_err());
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted_or_an_error() {
        let bytes = b"ok \xff\xfe then \xc3";
        let (text, n) = decode_utf8(bytes, InvalidUtf8::Replace).unwrap();
        assert_eq!(n, 3);
        assert!(text.starts_with("ok \u{FFFD}"));
        assert_eq!(decode_utf8(bytes, InvalidUtf8::Error), Err(3));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, bytes).unwrap();
        let e = read_text(&p, InvalidUtf8::Error).unwrap_err().to_string();
        assert!(e.contains("t.txt: invalid UTF-8 at byte 3"), "{e}");
        assert_eq!(read_text(&p, InvalidUtf8::Replace).unwrap().1, 3);
    }

    fn word() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "the", "cat", "sat", "on", "mat", ".", "!", "o'clock", "héllo",
        ])
        .prop_map(str::to_owned)
    }

    proptest! {
        #[test]
        fn decode_inverts_encode_for_in_vocabulary_text(
            words in prop::collection::vec(word(), 0..12),
            bos in any::<bool>(),
        ) {
            let corpus = "the cat sat on the mat . ! o'clock héllo";
            let tok = WordTokenizer::build([corpus], &WordVocabConfig::new().with_bos_eos(bos));
            let text = words.join(" ");
            let enc = tok.encode(&text).unwrap();
            prop_assert!(!enc.ids.contains(&UNK_ID));
            prop_assert_eq!(tok.decode(&enc.ids).unwrap(), text);
        }

        #[test]
        fn char_round_trip(text in "[a-z ,.!?é]{0,40}") {
            let tok = CharTokenizer::build("abcdefghijklmnopqrstuvwxyz ,.!?é");
            let enc = tok.encode(&text).unwrap();
            prop_assert_eq!(enc.ids.len(), text.chars().count());
            prop_assert_eq!(tok.decode(&enc.ids).unwrap(), text);
        }

        #[test]
        fn padding_and_masks_agree(lens in prop::collection::vec(0usize..9, 1..6), max in 1usize..8) {
            let seqs: Vec<Vec<u32>> = lens.iter().map(|&n| (0..n as u32).map(|i| i + 4).collect()).collect();
            let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            let b = PaddedBatch::new(&refs, PAD_ID, Some(max));
            prop_assert_eq!(b.len, lens.iter().map(|&n| n.min(max)).max().unwrap().max(1));
            for (row, seq) in seqs.iter().enumerate() {
                let real = seq.len().min(b.len);
                for t in 0..b.len {
                    let m = b.mask[row * b.len + t];
                    prop_assert_eq!(m, t < real);
                    prop_assert_eq!(b.ids[row * b.len + t] == PAD_ID, !m);
                }
            }
        }
    }
}
