//! Chat templates: the Jinja template a model folder ships (`chat_template.jinja`, or the
//! `chat_template` of `tokenizer_config.json`) rendered as transformers'
//! `apply_chat_template` does, with minijinja: `trim_blocks` and `lstrip_blocks`, loop
//! controls, Python's string methods (`.strip()`, `.startswith()`, ...) through
//! minijinja-contrib, `raise_exception`, and a `tojson` that writes JSON as Python's
//! `json.dumps(..., ensure_ascii=False)` does (`", "` and `": "` separators, `indent=`, keys in
//! the order written). The context holds `messages` (with any further fields of a message,
//! such as an assistant's `tool_calls` or a tool's `tool_call_id`, as given),
//! `add_generation_prompt`, `tools` (the tool definitions of
//! [`ChatTemplate::render_with_tools`], JSON schemas as transformers passes them, or none) and
//! the special tokens of `tokenizer_config.json` (`bos_token`, `eos_token`, `pad_token`,
//! `unk_token`).
//!
//! A template that fails to compile or raises (as Mistral's does when roles do not alternate)
//! is an [`NlpError::Template`](crate::error::NlpError) naming the file and the message.

use std::path::{Path, PathBuf};

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{NlpError, Result};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool` (or whatever roles the template knows).
    pub role: String,
    /// The text (`null` in JSON reads as empty: OpenAI's assistant messages that only call
    /// tools).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    /// Further fields, given to the template as they are: an assistant's `tool_calls`, a
    /// tool result's `tool_call_id` or `name`.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

impl ChatMessage {
    /// A message of `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            extra: serde_json::Map::new(),
        }
    }

    /// The message with a further field (`tool_calls`, `tool_call_id`, ...).
    pub fn with(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }
}

/// A folder's chat template and the special tokens it may use.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    path: PathBuf,
    tokens: serde_json::Map<String, serde_json::Value>,
}

/// A special token of `tokenizer_config.json`: a string, or an object with `content`.
fn token_text(v: &serde_json::Value) -> Option<String> {
    v.as_str()
        .map(str::to_owned)
        .or_else(|| v["content"].as_str().map(str::to_owned))
}

/// The options of Python's `json.dumps` that transformers' `tojson` passes on.
#[derive(Debug, Clone)]
struct JsonStyle {
    indent: Option<usize>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl Default for JsonStyle {
    fn default() -> Self {
        Self {
            indent: None,
            item_sep: ", ".into(),
            key_sep: ": ".into(),
            sort_keys: false,
            ensure_ascii: false,
        }
    }
}

/// A JSON string literal as Python writes it (`\uXXXX` for non-ASCII when `ensure_ascii`).
fn python_string(s: &str, ensure_ascii: bool) -> String {
    let json = serde_json::Value::String(s.to_owned()).to_string();
    if !ensure_ascii {
        return json;
    }
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Python's `json.dumps(value, ...)` in `style`.
fn python_json(value: &serde_json::Value, style: &JsonStyle, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = style.indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    match value {
        serde_json::Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, depth + 1);
                python_json(item, style, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        serde_json::Value::Object(map) if !map.is_empty() => {
            out.push('{');
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&python_string(k, style.ensure_ascii));
                out.push_str(&style.key_sep);
                python_json(v, style, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        serde_json::Value::String(s) => out.push_str(&python_string(s, style.ensure_ascii)),
        other => out.push_str(&other.to_string()),
    }
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`: `json.dumps` with those options (with an indent, Python's item
/// separator is `","`).
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let mut style = JsonStyle {
        indent: kwargs.get("indent")?,
        sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
        ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
        ..JsonStyle::default()
    };
    if style.indent.is_some() {
        style.item_sep = ",".into();
    }
    if let Some(seps) = kwargs.get::<Option<Vec<String>>>("separators")? {
        let [item, key]: [String; 2] = seps.try_into().map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair (item, key)",
            )
        })?;
        style.item_sep = item;
        style.key_sep = key;
    }
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    python_json(&json, &style, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn raise_exception(message: String) -> std::result::Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    /// The template of a model folder: `chat_template.jinja` when present (newer folders),
    /// else the `chat_template` of `tokenizer_config.json` (a string, or a list of named
    /// templates of which `default` is taken); `None` when the folder has neither.
    ///
    /// # Errors
    /// [`NlpError::Io`] for an unreadable file; [`NlpError::Config`] for a `tokenizer_config.json`
    /// that does not parse; [`NlpError::Template`] for a template that does not compile.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Option<Self>> {
        let dir = dir.as_ref();
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = if config_path.is_file() {
            let text =
                std::fs::read_to_string(&config_path).map_err(|e| NlpError::io(&config_path, e))?;
            serde_json::from_str(&text).map_err(|e| NlpError::Config {
                path: config_path.clone(),
                reason: format!("not JSON: {e}"),
            })?
        } else {
            serde_json::Value::Null
        };
        let mut tokens = serde_json::Map::new();
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            if let Some(t) = token_text(&config[key]) {
                tokens.insert(key.into(), t.into());
            }
        }
        let file = dir.join("chat_template.jinja");
        let (source, path) = if file.is_file() {
            (
                std::fs::read_to_string(&file).map_err(|e| NlpError::io(&file, e))?,
                file,
            )
        } else {
            let source = match &config["chat_template"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(named) => named
                    .iter()
                    .find(|t| t["name"] == "default")
                    .and_then(|t| t["template"].as_str())
                    .ok_or_else(|| NlpError::Config {
                        path: config_path.clone(),
                        reason: "chat_template lists no template named 'default'".into(),
                    })?
                    .to_owned(),
                serde_json::Value::Null => return Ok(None),
                other => {
                    return Err(NlpError::Config {
                        path: config_path,
                        reason: format!("chat_template is neither text nor a list: {other}"),
                    });
                }
            };
            (source, config_path)
        };
        let template = Self {
            source,
            path,
            tokens,
        };
        // Compile once now, so that a broken template is reported when the folder is read.
        template.environment().map_err(|e| template.error(&e))?;
        Ok(Some(template))
    }

    /// A template given as text (a GGUF file's `tokenizer.chat_template`), with the special
    /// tokens it may name (`bos_token`, `eos_token`, ...); `origin` names it in errors.
    ///
    /// # Errors
    /// [`NlpError::Template`] when the template does not compile.
    pub fn from_source(
        source: impl Into<String>,
        origin: impl Into<PathBuf>,
        tokens: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        let template = Self {
            source: source.into(),
            path: origin.into(),
            tokens,
        };
        template.environment().map_err(|e| template.error(&e))?;
        Ok(template)
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn environment(&self) -> std::result::Result<Environment<'_>, Error> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_template("chat", &self.source)?;
        Ok(env)
    }

    fn error(&self, e: &Error) -> NlpError {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            reason.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        NlpError::Template {
            path: self.path.clone(),
            reason,
        }
    }

    /// Renders `messages`, ending with the opening of the assistant's turn when
    /// `add_generation_prompt`; `tools` is none.
    ///
    /// # Errors
    /// [`NlpError::Template`] when the template raises or cannot render `messages`.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`ChatTemplate::render`] with tool definitions: each a JSON schema as transformers
    /// passes `apply_chat_template(..., tools=[...])` (`{"type": "function", "function":
    /// {"name", "description", "parameters"}}`), printed by the template in the order its
    /// keys were written.
    ///
    /// # Errors
    /// As [`ChatTemplate::render`].
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let env = self.environment().map_err(|e| self.error(&e))?;
        let template = env.get_template("chat").map_err(|e| self.error(&e))?;
        let mut ctx = self.tokens.clone();
        ctx.insert(
            "messages".into(),
            serde_json::to_value(messages).unwrap_or_default(),
        );
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        ctx.insert(
            "tools".into(),
            tools.map_or(serde_json::Value::Null, |t| {
                serde_json::Value::Array(t.to_vec())
            }),
        );
        template
            .render(Value::from(minijinja::value::Serde(&ctx)))
            .map_err(|e| self.error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tojson_writes_json_as_python_does() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"a": [1, "é", {"b": null}], "c": {}}"#).unwrap();
        let plain = JsonStyle::default();
        let mut out = String::new();
        python_json(&v, &plain, 0, &mut out);
        assert_eq!(out, r#"{"a": [1, "é", {"b": null}], "c": {}}"#);
        // Keys stay in the order written, as Python's dicts keep them.
        let u: serde_json::Value = serde_json::from_str(r#"{"z": 1, "a": 2}"#).unwrap();
        let mut out = String::new();
        python_json(&u, &plain, 0, &mut out);
        assert_eq!(out, r#"{"z": 1, "a": 2}"#);
        let sorted = JsonStyle {
            sort_keys: true,
            ensure_ascii: true,
            item_sep: ",".into(),
            key_sep: ":".into(),
            ..JsonStyle::default()
        };
        let w: serde_json::Value = serde_json::from_str(r#"{"z": "é😀", "a": 2}"#).unwrap();
        let mut out = String::new();
        python_json(&w, &sorted, 0, &mut out);
        assert_eq!(out, r#"{"a":2,"z":"\u00e9\ud83d\ude00"}"#);
        let mut out = String::new();
        let indented = JsonStyle {
            indent: Some(2),
            item_sep: ",".into(),
            ..JsonStyle::default()
        };
        python_json(&v, &indented, 0, &mut out);
        assert_eq!(
            out,
            "{\n  \"a\": [\n    1,\n    \"é\",\n    {\n      \"b\": null\n    }\n  ],\n  \"c\": {}\n}"
        );
    }

    #[test]
    fn a_broken_template_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"chat_template": "{% for m in messages %}{{ m.content }"}"#,
        )
        .unwrap();
        let e = ChatTemplate::from_folder(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer_config.json: chat template:"), "{e}");
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"bos_token": "<s>"}"#,
        )
        .unwrap();
        assert!(ChatTemplate::from_folder(dir.path()).unwrap().is_none());
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"chat_template": [{"name": "tool_use", "template": "x"}]}"#,
        )
        .unwrap();
        let e = ChatTemplate::from_folder(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no template named 'default'"), "{e}");
    }
}
