//! The table of example checks run by `cargo xtask ci`: each row is one example run with
//! small settings (name, arguments) and what its JSON report must show (the thresholds; the
//! full-length targets are in docs/benchmarks.md). Rows run in order: a later row may use what
//! an earlier one wrote (`gguf_export`'s file, the exports kiln-serve loads).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// What a row needs besides the repository.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    Nothing,
    /// `KILN_DATA`.
    Data,
    /// `KILN_MODELS`.
    Models,
    /// Both.
    DataAndModels,
}

/// Where a row's inputs and outputs are.
pub(crate) struct Ctx {
    /// The CI output folder (reports, runs, exports).
    pub(crate) out: PathBuf,
    pub(crate) data: Option<PathBuf>,
    pub(crate) models: Option<PathBuf>,
}

impl Ctx {
    /// Whether the folders a row needs are set.
    pub(crate) fn has(&self, needs: Needs) -> bool {
        match needs {
            Needs::Nothing => true,
            Needs::Data => self.data.is_some(),
            Needs::Models => self.models.is_some(),
            Needs::DataAndModels => self.data.is_some() && self.models.is_some(),
        }
    }

    /// A path in the CI output folder, as an argument.
    pub(crate) fn out(&self, name: &str) -> String {
        self.out.join(name).to_string_lossy().into_owned()
    }

    /// A run folder under the output folder's `runs/`.
    fn run_dir(&self, name: &str) -> String {
        self.out(&format!("runs/{name}"))
    }

    /// A data set folder of `KILN_DATA`.
    fn data(&self, name: &str) -> String {
        let data = self.data.as_deref().unwrap_or(Path::new(""));
        data.join(name).to_string_lossy().into_owned()
    }

    /// A path under `KILN_MODELS`.
    fn model(&self, name: &str) -> String {
        let models = self.models.as_deref().unwrap_or(Path::new(""));
        models.join(name).to_string_lossy().into_owned()
    }
}

/// Writes a row's inputs.
type Prepare = fn(&Ctx) -> Result<(), String>;

/// One example run and its thresholds.
pub(crate) struct Check {
    /// What the row shows (for the log).
    pub(crate) what: &'static str,
    pub(crate) example: &'static str,
    pub(crate) needs: Needs,
    /// Writes the run's inputs first.
    pub(crate) prepare: Option<Prepare>,
    pub(crate) args: fn(&Ctx) -> Vec<String>,
    /// Checks the report; the error says what was wrong.
    pub(crate) pass: fn(&Ctx, &Value) -> Result<(), String>,
}

/// `Ok` when `ok`, else the error `what`.
fn require(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A `gen_images` smoke run: 12 s of training on 2,000 images, 7 images a class measured
/// against 300 test images by a judge trained for 2 epochs.
fn gen_args(c: &Ctx, run_dir: &str, model: &[&str]) -> Vec<String> {
    let mut args = vec!["--data".into(), c.data("mnist")];
    args.extend(strings(model));
    args.extend(strings(&[
        "--minutes",
        "0.2",
        "--limit",
        "2000",
        "--test-limit",
        "300",
        "--per-class",
        "7",
        "--judge-epochs",
        "2",
    ]));
    args.extend(["--run-dir".into(), c.run_dir(run_dir)]);
    args
}

/// The measures every `gen_images` report carries, and the judge's sanity: real training
/// images much closer to the test images than noise is.
fn gen_report(r: &Value) -> Result<(), String> {
    let fidelity = num(&r["class_fidelity"]);
    let fake = num(&r["frechet_distance"]);
    let real = num(&r["real_frechet_distance"]);
    let noise = num(&r["noise_frechet_distance"]);
    require(
        (0.0..=1.0).contains(&fidelity) && fake.is_finite() && real * 5.0 < noise,
        || {
            format!(
                "class fidelity {fidelity}, Fréchet: generated {fake}, real {real}, noise {noise}"
            )
        },
    )
}

/// The rows, in the order they run.
pub(crate) const CHECKS: &[Check] = &[
    // The seed's single neuron: gradient descent equals the hand-written loop; Adam stops at
    // its target loss.
    Check {
        what: "seed_mlp: gradient descent as the hand-written loop",
        example: "seed_mlp",
        needs: Needs::Nothing,
        prepare: None,
        args: |_| Vec::new(),
        pass: |_, r| {
            let gd = &r["gd"];
            for (got, want) in [
                (&gd["w"][0], &gd["reference_w"][0]),
                (&gd["w"][1], &gd["reference_w"][1]),
                (&gd["b"], &gd["reference_b"]),
            ] {
                let (g, w) = (num(got), num(want));
                require((g - w).abs() < 1e-4, || {
                    format!("gradient descent gave {g}, the hand-written loop {w}")
                })?;
            }
            let rule = &r["adam"]["stop_reason"]["rule"];
            require(rule == "target_loss", || {
                format!("Adam run stopped by {rule}")
            })
        },
    },
    Check {
        what: "quickstart: one model per domain, run folders written",
        example: "quickstart",
        needs: Needs::Nothing,
        prepare: None,
        args: |c| vec!["--run-dir".into(), c.run_dir("quickstart")],
        pass: |c, r| {
            let metric = |domain: &str, key: &str| num(&r[domain][key]);
            let vision = metric("vision", "valid_accuracy");
            require(vision > 0.9, || format!("vision accuracy {vision}"))?;
            let nlp = metric("nlp", "valid_accuracy");
            require(nlp > 0.8, || format!("nlp accuracy {nlp}"))?;
            let (rmse, mean) = (
                metric("recsys", "valid_rmse"),
                metric("recsys", "global_mean_rmse"),
            );
            require(rmse < 0.8 * mean, || {
                format!("recsys RMSE {rmse} vs global mean {mean}")
            })?;
            for domain in ["vision", "nlp", "recsys"] {
                for file in [
                    "metrics.jsonl",
                    "curves.svg",
                    "checkpoints/last.ckpt",
                    "checkpoints/best.ckpt",
                ] {
                    let path = Path::new(&c.run_dir("quickstart")).join(domain).join(file);
                    require(path.is_file(), || format!("{} not written", path.display()))?;
                }
            }
            Ok(())
        },
    },
    // Pretrained decoders from Hugging Face folders (the test fixtures: a random GPT-2 and a
    // random Llama, each with its tokenizer.json): 24 greedy tokens equal transformers' and
    // decode to its text, the Llama on the packed CPU path (the default on a CPU backend)
    // and through Burn.
    Check {
        what: "generate on the gpt2-tiny fixture as transformers",
        example: "generate",
        needs: Needs::Nothing,
        prepare: None,
        args: |_| fixture_args("gpt2-tiny", "auto"),
        pass: |_, r| fixture_check("gpt2-tiny", "burn", r),
    },
    Check {
        what: "generate on the llama-tiny fixture (packed) as transformers",
        example: "generate",
        needs: Needs::Nothing,
        prepare: None,
        args: |_| fixture_args("llama-tiny", "auto"),
        pass: |_, r| fixture_check("llama-tiny", "packed (f32)", r),
    },
    Check {
        what: "generate on the llama-tiny fixture (Burn) as transformers",
        example: "generate",
        needs: Needs::Nothing,
        prepare: None,
        args: |_| fixture_args("llama-tiny", "burn"),
        pass: |_, r| fixture_check("llama-tiny", "burn", r),
    },
    // Recommenders at scale, small: synthetic data of MovieLens 20M's shape, ALS timed per
    // iteration, held-out ranking in GEMM blocks and HNSW recall against exact top-10.
    Check {
        what: "recsys_scale: ALS on 200,000 synthetic interactions, HNSW recall",
        example: "recsys_scale",
        needs: Needs::Nothing,
        prepare: None,
        // A cheaper graph than the default 64 / 64 (recall 0.94 here, 16 s to build in the
        // test profile): 0.71 in 4 s; a broken index scores near 0.1.
        args: |_| {
            strings(&[
                "--model",
                "als",
                "--interactions",
                "200000",
                "--iterations",
                "3",
                "--eval-users",
                "500",
                "--ef-construction",
                "32",
                "--ef-search",
                "64",
            ])
        },
        pass: |_, r| {
            let recall = num(&r["eval"]["hnsw_recall_at_10"]);
            require(
                r["interactions"] == 200_000
                    && r["eval"]["users"] == 500
                    && r["iteration_seconds"]
                        .as_array()
                        .is_some_and(|a| a.len() == 3)
                    && num(&r["peak_rss_mib"]) > 0.0
                    && recall >= 0.6,
                || format!("report {r}"),
            )
        },
    },
    // The same example on an ml-20m-style ratings.csv (streamed): ratings >= 4 are positives.
    Check {
        what: "recsys_scale: BPR on an ml-20m-style ratings.csv",
        example: "recsys_scale",
        needs: Needs::Nothing,
        prepare: Some(|c| {
            let dir = c.out.join("ml-20m-mini");
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            std::fs::write(dir.join("ratings.csv"), ml20m_mini().0)
                .map_err(|e| format!("ratings.csv: {e}"))
        }),
        args: |c| {
            let mut args = vec!["--data".into(), c.out("ml-20m-mini")];
            args.extend(strings(&[
                "--model",
                "bpr",
                "--iterations",
                "1",
                "--eval-users",
                "50",
            ]));
            args
        },
        pass: |_, r| {
            let positives = ml20m_mini().1;
            require(
                r["interactions"] == positives && r["eval"]["users"].as_u64().is_some(),
                || format!("{positives} positives expected: {r}"),
            )
        },
    },
    // Real data: MovieLens 100K rating prediction and ranking.
    Check {
        what: "movielens mf: 5-fold RMSE <= 0.925",
        example: "movielens",
        needs: Needs::Data,
        prepare: None,
        args: |c| {
            vec![
                "--data".into(),
                c.data("ml-100k"),
                "--model".into(),
                "mf".into(),
            ]
        },
        pass: |_, r| {
            let rmse = num(&r["rmse"]);
            require(
                rmse <= 0.925 && r["per_fold"].as_array().is_some_and(|f| f.len() == 5),
                || format!("5-fold RMSE {rmse}"),
            )
        },
    },
    Check {
        what: "movielens bpr: precision@10 >= 0.11, bundle exported",
        example: "movielens",
        needs: Needs::Data,
        prepare: None,
        args: |c| {
            let model = ["--model".into(), "bpr".into()];
            let export = ["--export".into(), c.out("ml100k-bpr.json")];
            [
                vec!["--data".into(), c.data("ml-100k")],
                model.into(),
                export.into(),
            ]
            .concat()
        },
        pass: |_, r| {
            let p10 = num(&r["precision_at_10"]);
            require(p10 >= 0.11, || format!("precision@10 {p10}"))
        },
    },
    // Seed 0 of the ranking benchmark's peers (docs/benchmarks.md): implicit 0.7's ALS gives
    // 0.134, LightFM 1.17's WARP 0.152; Kiln 0.135 and 0.156.
    Check {
        what: "movielens als: precision@10 >= 0.13",
        example: "movielens",
        needs: Needs::Data,
        prepare: None,
        args: |c| {
            vec![
                "--data".into(),
                c.data("ml-100k"),
                "--model".into(),
                "als".into(),
            ]
        },
        pass: |_, r| {
            let p10 = num(&r["precision_at_10"]);
            require(p10 >= 0.13, || format!("precision@10 {p10}"))
        },
    },
    Check {
        what: "movielens lightfm: precision@10 >= 0.148",
        example: "movielens",
        needs: Needs::Data,
        prepare: None,
        args: |c| {
            let data = ["--data".into(), c.data("ml-100k")];
            [data.into(), strings(&["--model", "lightfm"])].concat()
        },
        pass: |_, r| {
            let p10 = num(&r["precision_at_10"]);
            require(p10 >= 0.148, || format!("precision@10 {p10}"))
        },
    },
    // Data-parallel: a short LeNet-5 run on MNIST with two replicas (its export is served
    // below).
    Check {
        what: "mnist --replicas 2: one epoch on 2,750 images",
        example: "mnist",
        needs: Needs::Data,
        prepare: None,
        args: |c| {
            let mut args = vec!["--data".into(), c.data("mnist")];
            args.extend(strings(&[
                "--model",
                "lenet",
                "--epochs",
                "1",
                "--limit",
                "3000",
                "--replicas",
                "2",
            ]));
            args.extend(["--run-dir".into(), c.run_dir("mnist_replicas")]);
            args.extend(["--export".into(), c.out("mnist-lenet")]);
            args
        },
        pass: |_, r| {
            let acc = num(&r["test_accuracy"]);
            require(acc > 0.6 && r["replicas"] == 2, || {
                format!("test accuracy {acc}, replicas {}", r["replicas"])
            })
        },
    },
    // Robust recognition: the same LeNet-5 with and without the robustness augmentations,
    // measured on the corruption suite. Release build, 5 epochs on 7,333 images: plain
    // clean 0.98, mean corrupted 0.80-0.82; augmented 0.87-0.88 (seeds 1, 2).
    Check {
        what: "robust mnist, 5 short epochs: the augmented model ahead under corruption",
        example: "robust",
        needs: Needs::Data,
        prepare: None,
        args: |c| {
            let mut args = vec!["--data".into(), c.data("mnist")];
            args.extend(strings(&[
                "--limit",
                "8000",
                "--epochs",
                "5",
                "--test-limit",
                "500",
            ]));
            args.extend(["--run-dir".into(), c.run_dir("robust")]);
            args
        },
        pass: |_, r| {
            let clean = num(&r["plain_clean_accuracy"]);
            let plain = num(&r["plain_mean_corrupted_accuracy"]);
            let augmented = num(&r["augmented_mean_corrupted_accuracy"]);
            require(clean > 0.95 && augmented > plain + 0.03, || {
                format!("plain clean {clean}, mean corrupted: plain {plain}, augmented {augmented}")
            })
        },
    },
    // Image generation, smoke runs of both models on 2,000 images: the report's measures
    // exist and the judge tells real images from noise (real-vs-real distance far below the
    // noise baseline's). The acceptance runs are in docs/benchmarks.md.
    Check {
        what: "gen_images vae, 12 s on 2,000 images: measures reported, real far from noise",
        example: "gen_images",
        needs: Needs::Data,
        prepare: None,
        args: |c| gen_args(c, "gen_vae", &["--model", "vae"]),
        pass: |_, r| gen_report(r),
    },
    Check {
        what: "gen_images ddpm, a tiny U-Net for 12 s, DDIM in 5 steps with guidance",
        example: "gen_images",
        needs: Needs::Data,
        prepare: None,
        args: |c| {
            let ddpm = [
                "--model",
                "ddpm",
                "--widths",
                "8,8,8",
                "--sample-steps",
                "5",
            ];
            gen_args(c, "gen_ddpm", &ddpm)
        },
        pass: |_, r| gen_report(r),
    },
    // NLP from scratch: short runs, reports checked.
    Check {
        what: "text_classify sms-spam, 3 short epochs: accuracy > 0.9 (majority 0.866)",
        example: "text_classify",
        needs: Needs::Data,
        prepare: None,
        args: |c| {
            let mut args = vec!["--data".into(), c.data("sms-spam")];
            args.extend(strings(&[
                "--dataset",
                "sms-spam",
                "--epochs",
                "3",
                "--limit",
                "2000",
                "--hidden",
                "32",
                "--embed-dim",
                "32",
                "--dropout",
                "0.1",
                "--lr",
                "5e-3",
            ]));
            args.extend(["--run-dir".into(), c.run_dir("text_classify")]);
            args
        },
        pass: |_, r| {
            let acc = num(&r["test_accuracy"]);
            require(acc > 0.9 && r["macro_f1"].as_f64().is_some(), || {
                format!("test accuracy {acc}")
            })
        },
    },
    Check {
        what: "text_classify chinese-sentiment (char bigrams, CNN), 6,000 reviews, 3 epochs: \
               accuracy > 0.8 (majority 0.52; 0.825 here), confusion map and misclassified texts",
        example: "text_classify",
        needs: Needs::Data,
        prepare: None,
        args: |c| {
            let mut args = vec!["--data".into(), c.data("chinese-sentiment")];
            args.extend(strings(&[
                "--dataset",
                "chinese-sentiment",
                "--epochs",
                "3",
                "--limit",
                "6000",
                "--max-len",
                "256",
            ]));
            args.extend(["--run-dir".into(), c.run_dir("text_classify_zh")]);
            args
        },
        pass: |_, r| {
            let acc = num(&r["test_accuracy"]);
            let written = |key: &str| {
                r[key]
                    .as_str()
                    .is_some_and(|p| std::path::Path::new(p).is_file())
            };
            require(
                acc > 0.8
                    && r["test_size"].as_u64() == Some(1736)
                    && r["tokens"] == "charbigrams"
                    && written("confusion_png")
                    && written("misclassified_tsv"),
                || format!("test accuracy {acc}, report {r}"),
            )
        },
    },
    Check {
        what: "translate eng-fra, one short epoch: BLEU and the attention heat map",
        example: "translate",
        needs: Needs::Data,
        prepare: None,
        args: |c| {
            let mut args = vec!["--data".into(), c.data("eng-fra")];
            args.extend(strings(&[
                "--epochs", "1", "--limit", "800", "--hidden", "32", "--beam", "2",
            ]));
            args.extend(["--run-dir".into(), c.run_dir("translate")]);
            args
        },
        pass: |_, r| {
            let heatmap = PathBuf::from(r["heatmap"].as_str().unwrap_or_default());
            require(
                r["bleu_greedy"].as_f64().is_some_and(f64::is_finite)
                    && r["test_pairs"].as_u64().is_some_and(|n| n > 1000)
                    && heatmap.is_file(),
                || format!("report {r}"),
            )
        },
    },
    Check {
        what: "char_lm lstm, 15 s: validation loss below uniform guessing",
        example: "char_lm",
        needs: Needs::Data,
        prepare: None,
        args: |c| {
            let mut args = vec!["--data".into(), c.data("tinyshakespeare")];
            args.extend(strings(&[
                "--model",
                "lstm",
                "--minutes",
                "0.25",
                "--epochs",
                "1",
                "--block",
                "32",
                "--width",
                "64",
                "--layers",
                "1",
                "--sample-len",
                "40",
            ]));
            args.extend(["--run-dir".into(), c.run_dir("char_lm")]);
            args
        },
        pass: |_, r| {
            let loss = num(&r["valid_loss"]);
            require(loss < 65f64.ln(), || format!("validation loss {loss}"))
        },
    },
    // Pretrained MiniLM: the benchmark sentences, one JSON line each.
    Check {
        what: "embed: 1,000 sentences, 384 values each",
        example: "embed",
        needs: Needs::Models,
        prepare: None,
        args: |c| {
            [
                embed_args(c),
                vec!["--output".into(), c.out("embeddings.jsonl")],
            ]
            .concat()
        },
        pass: |c, r| {
            let output = c.out.join("embeddings.jsonl");
            let lines = std::fs::read_to_string(&output)
                .map_err(|e| format!("{}: {e}", output.display()))?
                .lines()
                .count();
            require(
                r["sentences"] == 1000 && lines == 1000 && r["dim"] == 384,
                || {
                    format!(
                        "{} sentences reported, {lines} lines written",
                        r["sentences"]
                    )
                },
            )
        },
    },
    // The same with 8-bit dense layers (their quality is the minilm test's).
    Check {
        what: "embed --precision int8",
        example: "embed",
        needs: Needs::Models,
        prepare: None,
        args: |c| [embed_args(c), strings(&["--precision", "int8"])].concat(),
        pass: |_, r| {
            require(r["sentences"] == 1000 && r["precision"] == "int8", || {
                format!("report {r}")
            })
        },
    },
    // A real model as llama.cpp ships it: the shared SmolLM2 Q4_1 GGUF file answers a chat
    // prompt with its own tokenizer and template, weights read where the file is mapped
    // (resident memory under the f32 model's 540 MB).
    Check {
        what: "generate on the SmolLM2 Q4_1 GGUF file: the capital of France",
        example: "generate",
        needs: Needs::Models,
        prepare: None,
        args: |c| capital_args(&c.model(SMOLLM2_Q4_1)),
        pass: |_, r| {
            require(
                says_paris(r)
                    && r["engine"] == "gguf (Q4_1, Q8_0)"
                    && num(&r["weights_bytes"]) > 9e7
                    && num(&r["peak_rss_mib"]) < 400.0,
                || format!("report {r}"),
            )
        },
    },
    // The same model read into Burn and written back as Q8_0 GGUF (what a fine-tuned model
    // goes through on its way to llama.cpp) answers alike.
    Check {
        what: "gguf_export of the SmolLM2 file to Q8_0",
        example: "gguf_export",
        needs: Needs::Models,
        prepare: None,
        args: |c| {
            vec![
                "--model".into(),
                c.model(SMOLLM2_Q4_1),
                "--type".into(),
                "q8_0".into(),
                "--out".into(),
                c.out(SMOLLM2_Q8_0),
            ]
        },
        pass: |_, r| {
            require(
                r["tensors"]["Q8_0"] == 211 && r["tensors"]["F32"] == 61,
                || format!("report {r}"),
            )
        },
    },
    Check {
        what: "generate on the Q8_0 file gguf_export wrote: the capital of France",
        example: "generate",
        needs: Needs::Models,
        prepare: None,
        args: |c| capital_args(&c.out(SMOLLM2_Q8_0)),
        pass: |_, r| {
            require(says_paris(r) && r["engine"] == "gguf (Q8_0)", || {
                format!("report {r}")
            })
        },
    },
    // Retrieval-augmented generation: MiniLM finds the passage, the random Llama fixture
    // writes four tokens; the second passage does not fit its 64-token context.
    Check {
        what: "rag: MiniLM retrieval into the llama-tiny fixture's context",
        example: "rag",
        needs: Needs::Models,
        prepare: Some(|c| {
            let corpus = c.out.join("rag-passages.txt");
            std::fs::write(
                &corpus,
                "The Eiffel tower is in Paris.\nBananas are yellow fruit.\n\
                 The Rhine flows through Basel.\nRust is a programming language.\n",
            )
            .map_err(|e| format!("{}: {e}", corpus.display()))
        }),
        args: |c| {
            let mut args = vec!["--embedder".into(), c.model(MINILM)];
            args.extend(strings(&[
                "--generator",
                "crates/nlp/tests/fixtures/decoders/llama-tiny",
            ]));
            args.extend(["--corpus".into(), c.out("rag-passages.txt")]);
            args.extend(strings(&[
                "--k",
                "2",
                "--max-new-tokens",
                "4",
                "--instruction",
                "",
                "Where is the Eiffel tower?",
            ]));
            args
        },
        pass: |_, r| {
            let passages = r["passages"].as_array().cloned().unwrap_or_default();
            require(
                passages.len() == 2
                    && passages[0]["index"] == 0
                    && passages[0]["used"] == true
                    && passages[1]["used"] == false
                    && r["answer_ids"].as_array().is_some_and(|a| a.len() == 4)
                    && r["engine"] == "packed (f32)",
                || format!("report {r}"),
            )
        },
    },
    // LoRA on TREC, short: 128 questions, one epoch; the adapters are under 2% of the
    // parameters, the merged model classifies as the adapted one, the file is written.
    Check {
        what: "finetune --lora-rank 4 on 128 TREC questions",
        example: "finetune",
        needs: Needs::DataAndModels,
        prepare: None,
        args: |c| {
            let mut args = vec!["--model".into(), c.model(MINILM)];
            args.extend(["--data".into(), c.data("trec")]);
            args.extend(strings(&[
                "--lora-rank",
                "4",
                "--limit",
                "128",
                "--epochs",
                "1",
                "--batch-size",
                "16",
            ]));
            args.extend(["--save-adapters".into(), c.out("trec-lora.safetensors")]);
            args.extend(["--run-dir".into(), c.run_dir("finetune-lora")]);
            args
        },
        pass: |c, r| {
            let fraction = r["trainable_fraction"].as_f64().unwrap_or(1.0);
            let (acc, merged) = (num(&r["test_accuracy"]), num(&r["merged_test_accuracy"]));
            require(
                fraction < 0.02
                    && (acc - merged).abs() <= 0.004
                    && c.out.join("trec-lora.safetensors").is_file(),
                || format!("report {r}"),
            )
        },
    },
];

const MINILM: &str = "all-MiniLM-L6-v2";
const SMOLLM2_Q4_1: &str = "smollm2-135m-instruct-gguf/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Written by the `gguf_export` row into the output folder.
const SMOLLM2_Q8_0: &str = "SmolLM2-135M-Instruct.Q8_0.gguf";

/// `generate` on a decoder fixture: 24 greedy tokens of "The quick brown".
fn fixture_args(name: &str, engine: &str) -> Vec<String> {
    let folder = Path::new("crates/nlp/tests/fixtures/decoders").join(name);
    vec![
        "--model".into(),
        folder.to_string_lossy().into_owned(),
        "--prompt".into(),
        "The quick brown".into(),
        "--max-new-tokens".into(),
        "24".into(),
        "--engine".into(),
        engine.into(),
    ]
}

/// The fixture's tokens and text equal transformers' (its `reference.json`), on `engine`.
fn fixture_check(name: &str, engine: &str, report: &Value) -> Result<(), String> {
    let path = Path::new("crates/nlp/tests/fixtures/decoders")
        .join(name)
        .join("reference.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reference: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    require(
        report["generated_ids"] == reference["text"]["generated_ids"]
            && report["generated_text"] == reference["text"]["generated_text"]
            && report["engine"] == engine
            && num(&report["decode_tokens_per_second"]) > 0.0,
        || format!("report {report}"),
    )
}

/// `embed` of the 1,000 benchmark sentences with MiniLM.
fn embed_args(c: &Ctx) -> Vec<String> {
    let models = c.models.as_deref().unwrap_or(Path::new(""));
    let input = models.join("../reference/bench-sentences-1000.txt");
    vec![
        "--model".into(),
        c.model(MINILM),
        "--input".into(),
        input.to_string_lossy().into_owned(),
    ]
}

/// `generate --chat` asking `model` for the capital of France.
fn capital_args(model: &str) -> Vec<String> {
    let mut args = vec!["--model".into(), model.to_string()];
    args.extend(strings(&[
        "--chat",
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "24",
        "--threads",
        "2",
    ]));
    args
}

fn says_paris(report: &Value) -> bool {
    report["generated_text"]
        .as_str()
        .is_some_and(|t| t.contains("Paris"))
}

/// A small ratings.csv in MovieLens 20M's format (CRLF lines), and its number of ratings
/// of at least 4.
fn ml20m_mini() -> (String, usize) {
    let mut csv = String::from("userId,movieId,rating,timestamp\r\n");
    let mut positives = 0;
    for u in 1..=300u32 {
        for k in 0..12u32 {
            let item = (u * 7 + k * 13) % 400 + 1;
            let rating = 0.5 * f64::from((u + k * 3) % 10 + 1);
            positives += usize::from(rating >= 4.0);
            csv.push_str(&format!(
                "{u},{item},{rating:.1},{}\r\n",
                1_000_000 + u * 12 + k
            ));
        }
    }
    (csv, positives)
}
