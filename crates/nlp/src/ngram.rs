//! Character and character-bigram vocabularies for text written without spaces between words
//! (Chinese, Japanese): [`CharNgramTokenizer`] builds them from a corpus after Unicode NFKC
//! normalisation (full-width letters, digits and punctuation become their ASCII forms, through
//! the `tokenizers` crate's normaliser) and optional lower-casing, and encodes a text either as
//! its characters or, with bigrams, as characters interleaved with the bigrams between them:
//! `c1 c1c2 c2 c2c3 c3`, so that a recurrent or convolutional model sees each character and
//! the pair it forms with the next. Whitespace separates but is not a token (no bigram spans
//! it). Rare characters and bigrams map to [`UNK`](crate::vocab::UNK).
//!
//! ```
//! use kiln_nlp::ngram::{CharNgramConfig, CharNgramTokenizer};
//! use kiln_nlp::Tokenizer;
//!
//! let tok = CharNgramTokenizer::build(["很好很好", "不好"], &CharNgramConfig::new());
//! let enc = tok.encode("很好！").unwrap();
//! assert_eq!(enc.tokens, ["很", "很好", "好", "好!", "!"]);
//! assert_eq!(tok.decode(&enc.ids).unwrap(), "很好<unk><unk>");
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::tokenizer::{Encoding, Tokenizer};
use crate::vocab::{BOS_ID, EOS_ID, PAD_ID, Table, TokenCounter, UNK_ID, load_vocab, save_json};

/// How [`CharNgramTokenizer::build`] chooses its vocabulary and encodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharNgramConfig {
    /// Interleave character bigrams with the characters.
    pub bigrams: bool,
    /// Characters seen fewer times are left out (they encode to `<unk>`).
    pub min_char_freq: usize,
    /// Bigrams seen fewer times are left out.
    pub min_bigram_freq: usize,
    /// At most this many bigrams, the most frequent first.
    pub max_bigrams: Option<usize>,
    /// Unicode NFKC normalisation before anything else.
    pub nfkc: bool,
    /// Lower-case after normalisation.
    pub lowercase: bool,
}

impl Default for CharNgramConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl CharNgramConfig {
    /// Bigrams on, every character and bigram seen at least once, NFKC, lower case.
    pub fn new() -> Self {
        Self {
            bigrams: true,
            min_char_freq: 1,
            min_bigram_freq: 1,
            max_bigrams: None,
            nfkc: true,
            lowercase: true,
        }
    }

    /// Sets [`bigrams`](Self::bigrams).
    pub fn with_bigrams(mut self, on: bool) -> Self {
        self.bigrams = on;
        self
    }

    /// Sets [`min_char_freq`](Self::min_char_freq).
    pub fn with_min_char_freq(mut self, n: usize) -> Self {
        self.min_char_freq = n.max(1);
        self
    }

    /// Sets [`min_bigram_freq`](Self::min_bigram_freq).
    pub fn with_min_bigram_freq(mut self, n: usize) -> Self {
        self.min_bigram_freq = n.max(1);
        self
    }

    /// Sets [`max_bigrams`](Self::max_bigrams).
    pub fn with_max_bigrams(mut self, n: usize) -> Self {
        self.max_bigrams = Some(n);
        self
    }

    /// Sets [`nfkc`](Self::nfkc).
    pub fn with_nfkc(mut self, on: bool) -> Self {
        self.nfkc = on;
        self
    }

    /// Sets [`lowercase`](Self::lowercase).
    pub fn with_lowercase(mut self, on: bool) -> Self {
        self.lowercase = on;
        self
    }
}

/// Characters (and bigrams) of a corpus, most frequent first (ties by first appearance), after
/// the four specials; the characters come before the bigrams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharNgramTokenizer {
    config: CharNgramConfig,
    table: Table,
}

impl CharNgramTokenizer {
    /// Builds the vocabulary of `texts`.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>, config: &CharNgramConfig) -> Self {
        let (mut chars, mut bigrams) = (TokenCounter::default(), TokenCounter::default());
        for text in texts {
            for run in Self::runs(config, text) {
                for (i, c) in run.iter().enumerate() {
                    chars.add(c.to_string());
                    if config.bigrams && i + 1 < run.len() {
                        bigrams.add(format!("{c}{}", run[i + 1]));
                    }
                }
            }
        }
        let mut tokens = chars.keep(config.min_char_freq, None);
        tokens.extend(bigrams.keep(config.min_bigram_freq, config.max_bigrams));
        Self {
            config: config.clone(),
            table: Table::new(tokens),
        }
    }

    /// The normalised text's runs of non-space characters.
    fn runs(config: &CharNgramConfig, text: &str) -> Vec<Vec<char>> {
        let mut normalized = tokenizers::NormalizedString::from(text);
        if config.nfkc {
            normalized.nfkc();
        }
        if config.lowercase {
            normalized.lowercase();
        }
        normalized
            .get()
            .split(char::is_whitespace)
            .filter(|r| !r.is_empty())
            .map(|r| r.chars().collect())
            .collect()
    }

    /// How the vocabulary was built.
    pub fn config(&self) -> &CharNgramConfig {
        &self.config
    }

    /// The id of `token` (`<unk>`'s when absent).
    pub fn token_to_id(&self, token: &str) -> u32 {
        self.table.id(token)
    }

    /// Writes the vocabulary as JSON, atomically.
    ///
    /// # Errors
    /// [`NlpError::Io`](crate::NlpError::Io) when the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save_json(self, path.as_ref())
    }

    /// Reads a vocabulary written by [`save`](Self::save).
    ///
    /// # Errors
    /// [`NlpError::Io`](crate::NlpError::Io) when the file cannot be read;
    /// [`NlpError::Config`](crate::NlpError::Config) when it is not a vocabulary.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        load_vocab(path.as_ref(), |t: &mut Self| &mut t.table)
    }
}

impl Tokenizer for CharNgramTokenizer {
    fn encode(&self, text: &str) -> Result<Encoding> {
        let mut enc = Encoding {
            ids: Vec::new(),
            tokens: Vec::new(),
        };
        let mut push = |token: String| {
            enc.ids.push(self.table.id(&token));
            enc.tokens.push(token);
        };
        for run in Self::runs(&self.config, text) {
            for (i, c) in run.iter().enumerate() {
                push(c.to_string());
                if self.config.bigrams && i + 1 < run.len() {
                    push(format!("{c}{}", run[i + 1]));
                }
            }
        }
        Ok(enc)
    }

    /// The characters of `ids`: bigrams, padding and `<bos>` skipped, each unknown token
    /// (character or bigram) spelled `<unk>`, stopping at `<eos>`; whitespace is not restored.
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut out = String::new();
        for &id in ids {
            if id == EOS_ID {
                break;
            }
            if id == PAD_ID || id == BOS_ID {
                continue;
            }
            let token = self.table.token(id)?;
            if id == UNK_ID || token.chars().nth(1).is_none() {
                out.push_str(token);
            }
        }
        Ok(out)
    }

    fn vocab_size(&self) -> usize {
        self.table.len()
    }

    fn pad_id(&self) -> u32 {
        PAD_ID
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_characters_and_bigrams_after_nfkc() {
        let texts = ["很好很好，ＡＢ", "不好 很好"];
        let tok = CharNgramTokenizer::build(texts, &CharNgramConfig::new());
        // Full-width comma and letters are ASCII after NFKC and lower-casing; no bigram spans a
        // space.
        let enc = tok.encode("不好 ＡＢ").unwrap();
        assert_eq!(enc.tokens, ["不", "不好", "好", "a", "ab", "b"]);
        assert!(enc.ids.iter().all(|&id| id != UNK_ID));
        // Most frequent first: 好 (4) before 很 (3); characters before bigrams.
        assert_eq!(tok.token_to_id("好"), 4);
        assert_eq!(tok.token_to_id("很"), 5);
        assert!(tok.token_to_id("很好") > tok.token_to_id("b"));
        assert_eq!(tok.decode(&enc.ids).unwrap(), "不好ab");
        let chars_only =
            CharNgramTokenizer::build(texts, &CharNgramConfig::new().with_bigrams(false));
        assert_eq!(chars_only.encode("很好").unwrap().tokens, ["很", "好"]);
        assert!(chars_only.vocab_size() < tok.vocab_size());
    }

    #[test]
    fn rare_tokens_are_unknown_and_the_vocabulary_round_trips() {
        let config = CharNgramConfig::new()
            .with_min_char_freq(2)
            .with_min_bigram_freq(2)
            .with_max_bigrams(1);
        let tok = CharNgramTokenizer::build(["甲乙甲乙丙", "甲乙"], &config);
        let enc = tok.encode("甲乙丙").unwrap();
        // 丙 once, 乙丙 once: unknown; 甲乙 three times is the one bigram kept.
        assert_eq!(enc.ids[4], UNK_ID);
        assert_eq!(enc.ids[3], UNK_ID);
        assert_ne!(enc.ids[1], UNK_ID);
        assert_eq!(tok.vocab_size(), 4 + 2 + 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.json");
        tok.save(&path).unwrap();
        assert_eq!(CharNgramTokenizer::load(&path).unwrap(), tok);
        assert!(tok.decode(&[99]).is_err());
    }
}
