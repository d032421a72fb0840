//! Tool calls in a model's answer, read back into OpenAI's shape: the formats the chat
//! templates Kiln renders ask models to use.
//!
//! - **Qwen2.5 / Hermes**: one or more `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
//!   blocks (Qwen2.5's template asks for exactly this); text around them is the content.
//! - **Llama 3.1 / 3.2**: the whole answer a JSON object `{"name": ..., "parameters": {...}}`
//!   (`arguments` also taken), optionally after `<|python_tag|>`; several such objects
//!   separated by `;` are several calls.
//!
//! A block whose JSON does not parse, or lacks a string `name` or an object of arguments,
//! is not a call: it stays in the content as the model wrote it.

use serde_json::{Map, Value};

/// One call of a tool by the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The function's name.
    pub name: String,
    /// Its arguments (a JSON object).
    pub arguments: Map<String, Value>,
}

/// An answer split into its text and its tool calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedAnswer {
    /// The text outside the calls, trimmed.
    pub content: String,
    /// The calls, in order.
    pub calls: Vec<ToolCall>,
}

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";
/// How a bare JSON call (Llama 3.1's) starts.
const JSON_OBJECT: char = '{';

/// Reads the tool calls of `answer` (see the module docs).
pub fn parse_tool_calls(answer: &str) -> ParsedAnswer {
    if answer.contains(OPEN) {
        return tagged(answer);
    }
    let body = answer.trim();
    let body = body.strip_prefix(PYTHON_TAG).unwrap_or(body).trim();
    if let Some(call) = call_of(body) {
        return ParsedAnswer {
            content: String::new(),
            calls: vec![call],
        };
    }
    if body.starts_with(JSON_OBJECT) {
        let calls: Option<Vec<ToolCall>> =
            body.split(';').map(|part| call_of(part.trim())).collect();
        if let Some(calls) = calls.filter(|c| !c.is_empty()) {
            return ParsedAnswer {
                content: String::new(),
                calls,
            };
        }
    }
    ParsedAnswer {
        content: answer.trim().to_owned(),
        calls: Vec::new(),
    }
}

/// `<tool_call>` blocks; an unclosed last block runs to the end (the answer was cut).
fn tagged(answer: &str) -> ParsedAnswer {
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = answer;
    while let Some(start) = rest.find(OPEN) {
        content.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let (inner, next) = match after.find(CLOSE) {
            Some(end) => (&after[..end], &after[end + CLOSE.len()..]),
            None => (after, ""),
        };
        match call_of(inner.trim()) {
            Some(call) => calls.push(call),
            None => {
                content.push_str(&rest[start..rest.len() - next.len()]);
            }
        }
        rest = next;
    }
    content.push_str(rest);
    ParsedAnswer {
        content: content.trim().to_owned(),
        calls,
    }
}

/// `{"name": "...", "arguments" | "parameters": {...}}` as a call.
fn call_of(json: &str) -> Option<ToolCall> {
    let Value::Object(mut object) = serde_json::from_str::<Value>(json).ok()? else {
        return None;
    };
    let Value::String(name) = object.remove("name")? else {
        return None;
    };
    let arguments = match object
        .remove("arguments")
        .or_else(|| object.remove("parameters"))
    {
        Some(Value::Object(a)) => a,
        // Some models write the arguments as a JSON string, as OpenAI's API carries them.
        Some(Value::String(s)) => match serde_json::from_str(&s).ok()? {
            Value::Object(a) => a,
            _ => return None,
        },
        None => Map::new(),
        Some(_) => return None,
    };
    Some(ToolCall { name, arguments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("an object")
    }

    #[test]
    fn qwen_blocks_become_calls_and_the_rest_content() {
        let answer = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \
                      {\"city\": \"Zürich\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \
                      \"arguments\": {}}\n</tool_call>";
        let parsed = parse_tool_calls(answer);
        assert_eq!(parsed.content, "Let me check.");
        assert_eq!(
            parsed.calls,
            vec![
                ToolCall {
                    name: "get_weather".into(),
                    arguments: args(json!({"city": "Zürich"}))
                },
                ToolCall {
                    name: "now".into(),
                    arguments: Map::new()
                },
            ]
        );
    }

    #[test]
    fn llama_json_answers_become_calls() {
        let parsed = parse_tool_calls(
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        );
        assert_eq!(parsed.content, "");
        assert_eq!(parsed.calls.len(), 1);
        assert_eq!(parsed.calls[0].arguments, args(json!({"city": "Paris"})));
        let two = parse_tool_calls(
            "{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}",
        );
        assert_eq!(
            two.calls
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(two.calls[1].arguments, args(json!({"x": 1})));
    }

    #[test]
    fn text_and_broken_calls_stay_content() {
        for answer in [
            "The weather is fine.",
            "{not json at all}",
            "{\"city\": \"Paris\"}",
            "{\"name\": 3, \"arguments\": {}}",
            "{\"name\": \"f\", \"arguments\": [1, 2]}",
        ] {
            let parsed = parse_tool_calls(answer);
            assert!(parsed.calls.is_empty(), "{answer}");
            assert_eq!(parsed.content, answer);
        }
        let broken = parse_tool_calls("Hi <tool_call>{\"name\": oops}</tool_call> there");
        assert!(broken.calls.is_empty());
        assert_eq!(
            broken.content,
            "Hi <tool_call>{\"name\": oops}</tool_call> there"
        );
        // Cut off before its closing tag: the call still parses.
        let cut = parse_tool_calls("<tool_call>{\"name\": \"now\", \"arguments\": {}}");
        assert_eq!(cut.calls.len(), 1);
    }
}
