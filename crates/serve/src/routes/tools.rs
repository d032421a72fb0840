//! Tool calls in `/v1/chat/completions`, as OpenAI's API carries them: `tools` (function
//! definitions, JSON schemas) are rendered by the model's chat template; the answer's calls
//! (Qwen2.5's `<tool_call>` blocks, Llama 3.1's JSON; [`kiln_nlp::tool_calls`]) come back as
//! the message's `tool_calls` with `finish_reason: "tool_calls"`. An assistant message's
//! `tool_calls` and a `tool` message's result go back into the template for the next turn.
//! With tools, a streamed answer is sent whole at its end (its calls cannot be told from text
//! before then).

use kiln_nlp::chat::ChatMessage;
use kiln_nlp::tool_calls::parse_tool_calls;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

/// The tool fields of a chat request.
#[derive(Debug, Default, Deserialize)]
pub struct ToolFields {
    /// `[{"type": "function", "function": {"name", "description"?, "parameters"?}}]`.
    #[serde(default)]
    tools: Option<Vec<Value>>,
    /// `"auto"` (the default) or `"none"` (the tools are not shown to the model).
    #[serde(default)]
    tool_choice: Option<Value>,
    /// Accepted; the model may call several tools in any case.
    #[serde(default)]
    #[allow(dead_code)]
    parallel_tool_calls: Option<bool>,
}

impl ToolFields {
    /// The definitions to render, if any; a malformed one or another `tool_choice` is a 400
    /// naming it.
    pub fn resolve(self) -> Result<Option<Vec<Value>>, ApiError> {
        match self.tool_choice.as_ref().and_then(Value::as_str) {
            None if self.tool_choice.is_some() => {
                return Err(ApiError::bad_request(format!(
                    "tool_choice is {}: \"auto\" and \"none\" are supported",
                    self.tool_choice.unwrap_or_default()
                )));
            }
            Some("none") => return Ok(None),
            Some("auto") | None => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "tool_choice is \"{other}\": \"auto\" and \"none\" are supported"
                )));
            }
        }
        let Some(tools) = self.tools else {
            return Ok(None);
        };
        if tools.len() > 128 {
            return Err(ApiError::too_large(format!(
                "{} tools, at most 128 are allowed",
                tools.len()
            )));
        }
        for (i, t) in tools.iter().enumerate() {
            let named = t["function"]["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            if t["type"] != "function" || !named {
                return Err(ApiError::bad_request(format!(
                    "tools[{i}] is not {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                )));
            }
        }
        Ok((!tools.is_empty()).then_some(tools))
    }
}

/// OpenAI's assistant `tool_calls` carry their arguments as a JSON string; chat templates
/// (as transformers passes them) expect an object: parsed here where it is one.
pub fn arguments_as_objects(messages: &mut [ChatMessage]) {
    for m in messages {
        let Some(Value::Array(calls)) = m.extra.get_mut("tool_calls") else {
            continue;
        };
        for call in calls {
            let arguments = &mut call["function"]["arguments"];
            if let Some(object) = arguments
                .as_str()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .filter(Value::is_object)
            {
                *arguments = object;
            }
        }
    }
}

/// The assistant message of `text` and its finish reason: with tool calls, the message's
/// `tool_calls` (ids `call_{request}_{i}`) and `"tool_calls"`; else the text and `finish`.
pub fn answer(text: &str, finish: &'static str, request: &str) -> (Value, &'static str) {
    let parsed = parse_tool_calls(text);
    if parsed.calls.is_empty() {
        return (json!({"role": "assistant", "content": text}), finish);
    }
    let calls: Vec<Value> = parsed
        .calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": format!("call_{request}_{i}"), "type": "function",
                   "function": {"name": c.name, "arguments": Value::Object(c.arguments.clone()).to_string()}})
        })
        .collect();
    let content = (!parsed.content.is_empty()).then_some(parsed.content);
    (
        json!({"role": "assistant", "content": content, "tool_calls": calls}),
        "tool_calls",
    )
}

/// The streamed form of [`answer`]'s message: the delta after the role chunk (the content,
/// or the calls each with its `index`).
pub fn delta(message: &Value) -> Value {
    match message["tool_calls"].as_array() {
        Some(calls) => {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.clone();
                    c["index"] = json!(i);
                    c
                })
                .collect();
            json!({"content": message["content"], "tool_calls": calls})
        }
        None => json!({"content": message["content"]}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_become_openai_tool_calls() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let (message, finish) = answer(text, "stop", "7");
        assert_eq!(finish, "tool_calls");
        assert_eq!(message["content"], Value::Null);
        let call = &message["tool_calls"][0];
        assert_eq!(call["id"], "call_7_0");
        assert_eq!(call["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"city": "Paris"}));
        assert_eq!(delta(&message)["tool_calls"][0]["index"], 0);
        let (plain, finish) = answer("Sunny.", "length", "7");
        assert_eq!(
            (plain["content"].as_str(), finish),
            (Some("Sunny."), "length")
        );
    }

    #[test]
    fn bad_tools_and_choices_are_refused_naming_them() {
        let fields = |v: Value| serde_json::from_value::<ToolFields>(v).unwrap().resolve();
        let tool = json!({"type": "function", "function": {"name": "now"}});
        assert_eq!(fields(json!({"tools": [tool]})).unwrap().unwrap().len(), 1);
        assert!(
            fields(json!({"tools": [tool], "tool_choice": "none"}))
                .unwrap()
                .is_none()
        );
        for (body, named) in [
            (json!({"tools": [{"type": "function"}]}), "tools[0]"),
            (
                json!({"tools": [tool], "tool_choice": "required"}),
                "required",
            ),
            (
                json!({"tools": [tool], "tool_choice": {"type": "function"}}),
                "tool_choice",
            ),
        ] {
            let e = fields(body).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.contains(named), "{}", e.message);
        }
        let mut messages = vec![ChatMessage::new("assistant", "").with(
            "tool_calls",
            json!([{"type": "function", "function": {"name": "now", "arguments": "{\"tz\": \"UTC\"}"}}]),
        )];
        arguments_as_objects(&mut messages);
        assert_eq!(
            messages[0].extra["tool_calls"][0]["function"]["arguments"],
            json!({"tz": "UTC"})
        );
    }
}
