//! Continuous batching of generations on [`LlamaCpu`]: many sequences decode together, one
//! token each per step, with every weight read once for all of them; a sequence joins at the
//! next step and leaves as soon as it is done, so nobody waits for a whole batch to finish.
//!
//! Each [`ContinuousBatch::step`] runs
//! 1. one **prefill chunk** (at most [`BatchLimits::prefill_chunk`] tokens) of the oldest
//!    sequence still reading its prompt, so that a long prompt is spread over several steps
//!    and never stalls the others for long; when its prompt is read, its first token is
//!    picked;
//! 2. one **decode step** for every sequence with a token to feed
//!    ([`LlamaCpu::forward_batch`]), and picks each one's next token with its own
//!    [`Sampler`] and [`StopCriteria`].
//!
//! A sequence gets, bit for bit, the logits it would get alone (the batched products sum
//! each row in a fixed order; prefill chunks are the same whoever else runs), so greedy
//! output is token-identical in a batch and alone.
//!
//! **Memory.** Each sequence reserves the cache of its whole context at admission (prompt
//! plus `max_new_tokens` positions, at most the model's context, times
//! [`LlamaCpu::kv_bytes_per_position`]) out of [`BatchLimits::kv_budget_bytes`]:
//! [`ContinuousBatch::admit`] answers [`Admission::Full`] when the budget or the batch is
//! full, and the caller waits or refuses. The caches' bytes never pass the budget.

use crate::error::{NlpError, Result};
use crate::generation::{Generation, GenerationConfig, Sampler, StopCriteria, StopReason};
use crate::models::{LlamaCpu, LlamaCpuCache};

/// How many sequences run at once, how prompts are split, how much cache they may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Sequences decoding together (at least 1).
    pub max_sequences: usize,
    /// Prompt tokens read per step (at least 1).
    pub prefill_chunk: usize,
    /// Bytes of keys and values all sequences may reserve.
    pub kv_budget_bytes: usize,
}

impl Default for BatchLimits {
    /// 16 sequences, 64-token prefill chunks, 512 MiB of cache.
    fn default() -> Self {
        Self {
            max_sequences: 16,
            prefill_chunk: 64,
            kv_budget_bytes: 512 << 20,
        }
    }
}

/// A sequence of a [`ContinuousBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SequenceId(u64);

/// The answer of [`ContinuousBatch::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The sequence runs from the next step.
    Started(SequenceId),
    /// No room now (sequences or cache budget): try again after a sequence has left.
    Full,
}

/// What a step did for a sequence.
#[derive(Debug)]
pub enum Event {
    /// A new token of `seq`.
    Token {
        /// The sequence.
        seq: SequenceId,
        /// The token.
        token: u32,
    },
    /// `seq` is done (after its last [`Event::Token`]) and has left the batch.
    Finished {
        /// The sequence.
        seq: SequenceId,
        /// Its new ids and why it stopped.
        generation: Generation,
    },
    /// `seq` failed and has left the batch.
    Failed {
        /// The sequence.
        seq: SequenceId,
        /// Why.
        error: NlpError,
    },
}

struct Sequence {
    id: SequenceId,
    /// The prompt, then the new ids.
    ids: Vec<u32>,
    prompt_len: usize,
    /// Prompt tokens in the cache.
    prefilled: usize,
    cache: LlamaCpuCache,
    sampler: Sampler,
    config: GenerationConfig,
    /// The last picked token, to feed at the next decode step.
    next: Option<u32>,
    /// Cache bytes reserved.
    reserved: usize,
    done: bool,
}

/// Ids to text, for stop strings.
type Decode<'m> = Box<dyn Fn(&[u32]) -> String + 'm>;

/// Sequences generating together on one model (see the module docs).
pub struct ContinuousBatch<'m> {
    model: &'m LlamaCpu,
    eos: Vec<u32>,
    decode: Decode<'m>,
    limits: BatchLimits,
    sequences: Vec<Sequence>,
    reserved: usize,
    next_id: u64,
}

impl std::fmt::Debug for ContinuousBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinuousBatch")
            .field("limits", &self.limits)
            .field("sequences", &self.sequences.len())
            .field("reserved_bytes", &self.reserved)
            .finish()
    }
}

impl<'m> ContinuousBatch<'m> {
    /// An empty batch on `model`; `eos` ids end every sequence (besides each config's own),
    /// `decode` turns ids into text for stop strings.
    ///
    /// Zero sequences, a zero prefill chunk, or a budget below one position of cache is an
    /// [`NlpError::Input`].
    ///
    /// # Errors
    /// [`NlpError::Input`] for zero sequences, a zero prefill chunk, or a budget below one position
    /// of cache.
    pub fn new(
        model: &'m LlamaCpu,
        eos: &[u32],
        decode: impl Fn(&[u32]) -> String + 'm,
        limits: BatchLimits,
    ) -> Result<Self> {
        if limits.max_sequences == 0 || limits.prefill_chunk == 0 {
            return Err(NlpError::Input(format!(
                "continuous batch: max_sequences {} and prefill_chunk {} must be at least 1",
                limits.max_sequences, limits.prefill_chunk
            )));
        }
        if limits.kv_budget_bytes < model.kv_bytes_per_position() {
            return Err(NlpError::Input(format!(
                "continuous batch: a cache budget of {} bytes holds not one position ({} bytes)",
                limits.kv_budget_bytes,
                model.kv_bytes_per_position()
            )));
        }
        Ok(Self {
            model,
            eos: eos.to_vec(),
            decode: Box::new(decode),
            limits,
            sequences: Vec::new(),
            reserved: 0,
            next_id: 0,
        })
    }

    /// The limits.
    pub fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// Sequences in the batch.
    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    /// Whether no sequence runs.
    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }

    /// Cache bytes reserved by the running sequences (at most the budget).
    pub fn reserved_bytes(&self) -> usize {
        self.reserved
    }

    /// Cache bytes that `prompt_len` prompt tokens and `max_new_tokens` new ones reserve.
    pub fn reservation(&self, prompt_len: usize, max_new_tokens: usize) -> usize {
        prompt_len
            .saturating_add(max_new_tokens)
            .min(self.model.max_positions())
            .saturating_mul(self.model.kv_bytes_per_position())
    }

    /// Adds a sequence continuing `prompt` under `config` (the batch's end ids added), if
    /// there is room (see the module docs).
    ///
    /// A bad `config`, an empty prompt, a prompt past the model's context, or a sequence
    /// whose cache alone is past the budget (it could never run) is an [`NlpError::Input`].
    ///
    /// # Errors
    /// [`NlpError::Input`] for a bad `config`, an empty prompt, a prompt past the model's context,
    /// or a sequence whose cache alone is past the budget.
    pub fn admit(&mut self, prompt: &[u32], config: &GenerationConfig) -> Result<Admission> {
        let mut config = config.clone();
        for &id in &self.eos {
            if !config.eos_token_ids.contains(&id) {
                config.eos_token_ids.push(id);
            }
        }
        let sampler = Sampler::new(&config)?;
        if prompt.is_empty() {
            return Err(NlpError::Input(
                "generation: the prompt is empty (give at least one token)".into(),
            ));
        }
        let context = self.model.max_positions();
        if prompt.len() >= context {
            return Err(NlpError::Input(format!(
                "generation: the prompt has {} tokens, the model's context {context} leaves \
                 no room for a new one",
                prompt.len()
            )));
        }
        if let Some(&bad) = prompt
            .iter()
            .find(|&&t| t as usize >= self.model.vocab_size())
        {
            return Err(NlpError::Input(format!(
                "generation: token id {bad} past the vocabulary of {}",
                self.model.vocab_size()
            )));
        }
        let need = self.reservation(prompt.len(), config.max_new_tokens);
        if need > self.limits.kv_budget_bytes {
            return Err(NlpError::Input(format!(
                "generation: {} prompt and {} new tokens need {need} bytes of cache, past the \
                 budget of {}",
                prompt.len(),
                config.max_new_tokens,
                self.limits.kv_budget_bytes
            )));
        }
        if self.sequences.len() >= self.limits.max_sequences
            || self.reserved + need > self.limits.kv_budget_bytes
        {
            return Ok(Admission::Full);
        }
        let id = SequenceId(self.next_id);
        self.next_id += 1;
        self.reserved += need;
        self.sequences.push(Sequence {
            id,
            ids: prompt.to_vec(),
            prompt_len: prompt.len(),
            prefilled: 0,
            cache: LlamaCpuCache::new(),
            sampler,
            config,
            next: None,
            reserved: need,
            done: false,
        });
        Ok(Admission::Started(id))
    }

    /// Removes `seq` (its client has gone); `false` if it is not in the batch.
    pub fn cancel(&mut self, seq: SequenceId) -> bool {
        let Some(i) = self.sequences.iter().position(|s| s.id == seq) else {
            return false;
        };
        let s = self.sequences.remove(i);
        self.reserved -= s.reserved;
        true
    }

    /// Removes every sequence (after a failure of the shared step); their ids.
    pub fn clear(&mut self) -> Vec<SequenceId> {
        self.reserved = 0;
        self.sequences.drain(..).map(|s| s.id).collect()
    }

    /// One prefill chunk and one decode step (see the module docs); what happened, in order.
    /// Finished and failed sequences have left the batch when it returns.
    pub fn step(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let chunk = self.limits.prefill_chunk;
        if let Some(s) = self
            .sequences
            .iter_mut()
            .find(|s| s.prefilled < s.prompt_len)
        {
            let end = (s.prefilled + chunk).min(s.prompt_len);
            match self
                .model
                .forward(&mut s.cache, &s.ids[s.prefilled..end], false)
            {
                Ok(mut logits) => {
                    s.prefilled = end;
                    if end == s.prompt_len {
                        pick(s, &mut logits, self.model, &*self.decode, &mut events);
                    }
                }
                Err(error) => fail(s, error, &mut events),
            }
        }
        let mut feeding: Vec<&mut Sequence> = self
            .sequences
            .iter_mut()
            .filter(|s| !s.done && s.next.is_some())
            .collect();
        if !feeding.is_empty() {
            let tokens: Vec<u32> = feeding.iter().filter_map(|s| s.next).collect();
            let result = {
                let mut caches: Vec<&mut LlamaCpuCache> =
                    feeding.iter_mut().map(|s| &mut s.cache).collect();
                self.model.forward_batch(&mut caches, &tokens)
            };
            match result {
                Ok(mut logits) => {
                    let vocab = self.model.vocab_size();
                    for (s, row) in feeding.into_iter().zip(logits.chunks_exact_mut(vocab)) {
                        pick(s, row, self.model, &*self.decode, &mut events);
                    }
                }
                Err(error) => {
                    for s in feeding {
                        fail(s, NlpError::Input(error.to_string()), &mut events);
                    }
                }
            }
        }
        let reserved = &mut self.reserved;
        self.sequences.retain(|s| {
            if s.done {
                *reserved -= s.reserved;
            }
            !s.done
        });
        events
    }
}

/// Picks `s`'s next token from `logits`, as [`LlamaCpu::generate`] does, and ends the
/// sequence on its stop criteria or at the model's context.
fn pick(
    s: &mut Sequence,
    logits: &mut [f32],
    model: &LlamaCpu,
    decode: &dyn Fn(&[u32]) -> String,
    events: &mut Vec<Event>,
) {
    let next = s.sampler.next(logits, &s.ids);
    s.ids.push(next);
    events.push(Event::Token {
        seq: s.id,
        token: next,
    });
    let generated = &s.ids[s.prompt_len..];
    let stop = StopCriteria::new(&s.config)
        .check(generated, decode)
        .or_else(|| {
            (s.cache.len() + 1 >= model.max_positions()).then_some(StopReason::MaxNewTokens)
        });
    match stop {
        Some(stop) => {
            events.push(Event::Finished {
                seq: s.id,
                generation: Generation {
                    ids: generated.to_vec(),
                    stop,
                },
            });
            s.done = true;
            s.next = None;
        }
        None => s.next = Some(next),
    }
}

fn fail(s: &mut Sequence, error: NlpError, events: &mut Vec<Event>) {
    events.push(Event::Failed { seq: s.id, error });
    s.done = true;
    s.next = None;
}
